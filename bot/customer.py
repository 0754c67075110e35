"""Customers on Telegram: the same conversation core as every other channel.

Text, photos and button taps become `InboundMessage`s stored by `core.conversation.ingest` (the
engine, or the offline responder when no LLM is configured, answers through the outbox, and the
TelegramSender renders its quick replies as inline buttons). So the button-driven booking flow is the
offline responder's payload flow and needs no LLM. `/mybookings` talks to the booking service
directly, always with the customer's own client id. `/start <token>` from the signed link the assistant
offers on Instagram/Messenger (bot/links.py) attaches this chat to that customer's record, so
reminders reach them here outside Meta's 24-hour window.
"""

from __future__ import annotations

import logging
from datetime import datetime

from aiogram import Bot, F
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from bot import cards, links, views
from bot.callbacks import MyBooking
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from bot.sender import TelegramSender
from core import customers
from core.booking.api import BookingError, BookingService, NotFoundError
from core.conversation.ingest import ingest
from core.outbox import queue_outbound
from core.settings import Settings
from core.types import (
    AppointmentStatus,
    Attachment,
    Author,
    Booking,
    Channel,
    InboundMessage,
    OutboundMessage,
    QuickReply,
)

log = logging.getLogger(__name__)

CUSTOMER_COMMANDS = {
    "start": "Main menu",
    "mybookings": "My bookings: cancel or move one",
}
MENU = (
    QuickReply("📅 Book a groom", "BOOK"),
    QuickReply("💲 Prices", "PRICES"),
    QuickReply("🕘 Opening hours", "HOURS"),
    QuickReply("🗂 My bookings", "MY_BOOKINGS"),
    QuickReply("🙋 Talk to Kimmie", "HUMAN"),
)

router = RouterSpec("customer")
router.filter("message", F.chat.type == ChatType.PRIVATE)


def _display_name(message: Message | CallbackQuery) -> str | None:
    user = message.from_user
    return user.full_name if user else None


async def _ingest(scope: UpdateScope, inbound: InboundMessage) -> bool:
    """Store the message once; True when the assistant will now work on it (show "typing…")."""
    async with scope.transaction() as session:
        result = await ingest(session, inbound)
        # While Kimmie holds the chat the assistant stays silent: no "typing…" that leads nowhere.
        return result.stored and not await views.taken_over(session, result.conversation_id)


@router.message(CommandStart())
async def start(
    message: Message, scope: UpdateScope, settings: Settings, command: CommandObject | None = None
) -> None:
    name = _display_name(message)
    chat = str(message.chat.id)
    # A bad or expired link just greets: nothing to explain to someone who may not have sent it.
    client_id = links.client_from_token(settings, command.args) if command and command.args else None
    async with scope.transaction() as session:
        linked = None
        if client_id is not None:
            linked = await customers.link_identity(
                session,
                client_id=client_id,
                channel=Channel.TELEGRAM.value,
                external_id=chat,
                display_name=name,
            )
        identity = linked or await customers.get_or_create_identity(
            session, Channel.TELEGRAM.value, chat, display_name=name
        )
        conversation = await customers.get_or_create_conversation(session, identity)
        customers.touch_inbound(identity, conversation, message.date)  # reachable again after a block
        greeting = (
            f"Hi{' ' + name.split()[0] if name else ''}! I'm Cheshire, the assistant of "
            f"{settings.business_name}. I can book a groom, tell you prices and opening hours, "
            "or get Kimmie for you. Just write, or tap a button."
        )
        if linked is not None:
            log.info("telegram chat linked by a signed link", extra={"client_id": linked.client_id})
            greeting = (
                "✅ Your Telegram is now linked to your profile with us, so booking reminders and "
                f"updates reach you here too.\n\n{greeting}"
            )
        await queue_outbound(
            session,
            conversation_id=conversation.id,
            channel=Channel.TELEGRAM.value,
            message=OutboundMessage(text=greeting, quick_replies=MENU),
            author=Author.SYSTEM,
        )


@router.message(Command("mybookings"))
async def my_bookings(
    message: Message, scope: UpdateScope, booking: BookingService, settings: Settings
) -> None:
    async with scope.transaction() as session:
        client_id = await views.telegram_client_id(session, message.chat.id)
        items = await booking.my_appointments(session, client_id=client_id) if client_id else []
    upcoming = [b for b in items if b.status in (AppointmentStatus.REQUESTED, AppointmentStatus.CONFIRMED)]
    if not upcoming:
        await message.answer(
            "You have no upcoming bookings here. Booked with us before (by phone or on another app)? "
            "Share your phone number and I'll find them.",
            reply_markup=ReplyKeyboardMarkup(
                keyboard=[[KeyboardButton(text="📱 Share my phone number", request_contact=True)]],
                resize_keyboard=True,
                one_time_keyboard=True,
            ),
        )
        return
    for b in upcoming:
        await message.answer(_booking_line(b, settings), reply_markup=_booking_buttons(b))


def _booking_line(b: Booking, settings: Settings) -> str:
    status = "waiting for Kimmie's confirmation" if b.status == AppointmentStatus.REQUESTED else "confirmed"
    pets = ", ".join(b.pet_names)
    return f"{b.service_name} for {pets}\n{cards.fmt_slot(b.start, b.end, settings.tz)} ({status})"


def _booking_buttons(b: Booking) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="🔁 Reschedule",
                    callback_data=MyBooking(action="resched", appointment_id=b.id).pack(),
                ),
                InlineKeyboardButton(
                    text="🚫 Cancel", callback_data=MyBooking(action="cancel", appointment_id=b.id).pack()
                ),
            ]
        ]
    )


@router.callback_query(MyBooking.filter())
async def my_booking_action(
    query: CallbackQuery,
    callback_data: MyBooking,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    message = query.message if isinstance(query.message, Message) else None
    appointment_id = callback_data.appointment_id
    action = callback_data.action
    reply: str | None = None
    markup: InlineKeyboardMarkup | None = None
    try:
        async with scope.transaction() as session:
            client_id = await views.telegram_client_id(session, query.from_user.id)
            if client_id is None:
                raise NotFoundError("I can't find that booking.")
            current = await booking.get_booking(session, appointment_id)
            if current.client_id != client_id:
                raise NotFoundError("I can't find that booking.")
            if action == "cancel":
                reply = f"Cancel this booking?\n{_booking_line(current, settings)}"
                markup = InlineKeyboardMarkup(
                    inline_keyboard=[
                        [
                            InlineKeyboardButton(
                                text="Yes, cancel it",
                                callback_data=MyBooking(
                                    action="cancel_yes", appointment_id=appointment_id
                                ).pack(),
                            ),
                            InlineKeyboardButton(
                                text="Keep it",
                                callback_data=MyBooking(action="keep", appointment_id=appointment_id).pack(),
                            ),
                        ]
                    ]
                )
            elif action == "cancel_yes":
                await booking.cancel(session, appointment_id=appointment_id, client_id=client_id)
                when = cards.fmt_slot(current.start, current.end, settings.tz)
                reply = f"Cancelled: {current.service_name} on {when}."
            elif action == "keep":
                reply = _booking_line(current, settings)
                markup = _booking_buttons(current)
            elif action == "resched":
                slots = await booking.find_slots(
                    session,
                    service_code=current.service_code,
                    pet_ids=current.pet_ids,
                    client_id=client_id,
                    date_from=datetime.now(settings.tz).date(),
                    limit=7,
                )
                slots = [s for s in slots if s.start != current.start][:6]
                if not slots:
                    reply = "I can't see another free time soon. Write to me and Kimmie will help."
                else:
                    reply = "Pick a new time:"
                    markup = InlineKeyboardMarkup(
                        inline_keyboard=[
                            [
                                InlineKeyboardButton(
                                    text=cards.fmt_slot(
                                        s.start, s.start + (current.end - current.start), settings.tz
                                    ),
                                    callback_data=MyBooking(
                                        action="slot",
                                        appointment_id=appointment_id,
                                        ts=int(s.start.timestamp()),
                                    ).pack(),
                                )
                            ]
                            for s in slots
                        ]
                    )
            elif action == "slot":
                moved = await booking.reschedule(
                    session,
                    appointment_id=appointment_id,
                    new_start=datetime.fromtimestamp(callback_data.ts, tz=settings.tz),
                    client_id=client_id,
                )
                reply = f"Moved to {cards.fmt_slot(moved.start, moved.end, settings.tz)}. " + (
                    "Kimmie will confirm the new time." if moved.status == AppointmentStatus.REQUESTED else ""
                )
    except BookingError as exc:
        await query.answer(str(exc)[:190] or "That didn't work.", show_alert=True)
        return
    await query.answer()
    if message is not None and reply is not None:
        await message.edit_text(reply.strip(), reply_markup=markup)


@router.message(F.contact)
async def shared_contact(message: Message, scope: UpdateScope, sender: TelegramSender) -> None:
    contact = message.contact
    assert contact is not None
    if message.from_user is None or contact.user_id != message.from_user.id:
        # Someone else's card: linking it would let anyone claim another client's bookings.
        await message.answer("Please share your own number with the button below.")
        return
    stored = await _ingest(
        scope,
        InboundMessage(
            channel=Channel.TELEGRAM,
            external_user_id=str(message.chat.id),
            platform_message_id=f"{message.chat.id}:{message.message_id}",
            text="(shared my phone number)",
            phone=contact.phone_number,
            sent_at=message.date,
            display_name=_display_name(message),
        ),
    )
    await message.answer("Thanks, your number is linked. ✅", reply_markup=ReplyKeyboardRemove())
    if stored:
        await sender.send_typing(message.chat.id)


@router.message()
async def customer_message(message: Message, scope: UpdateScope, sender: TelegramSender) -> None:
    attachments: list[Attachment] = []
    if message.photo:
        attachments.append(
            Attachment(kind="image", file_id=message.photo[-1].file_id, mime_type="image/jpeg")
        )
    elif message.document:
        kind = "image" if (message.document.mime_type or "").startswith("image/") else "file"
        attachments.append(
            Attachment(kind=kind, file_id=message.document.file_id, mime_type=message.document.mime_type)
        )
    elif message.video:
        attachments.append(
            Attachment(kind="video", file_id=message.video.file_id, mime_type=message.video.mime_type)
        )
    elif message.voice:
        attachments.append(
            Attachment(kind="audio", file_id=message.voice.file_id, mime_type=message.voice.mime_type)
        )
    text = message.text or message.caption or ""
    if not text and not attachments:
        return  # stickers, service messages: nothing to answer
    stored = await _ingest(
        scope,
        InboundMessage(
            channel=Channel.TELEGRAM,
            external_user_id=str(message.chat.id),
            platform_message_id=f"{message.chat.id}:{message.message_id}",
            text=text,
            attachments=tuple(attachments),
            sent_at=message.date,
            display_name=_display_name(message),
        ),
    )
    if stored:
        await sender.send_typing(message.chat.id)


@router.callback_query()
async def customer_tap(query: CallbackQuery, bot: Bot, scope: UpdateScope, sender: TelegramSender) -> None:
    payload = query.data or ""
    message = query.message if isinstance(query.message, Message) else None
    chat_id = message.chat.id if message else query.from_user.id
    title = _button_title(message, payload) or payload
    stored = await _ingest(
        scope,
        InboundMessage(
            channel=Channel.TELEGRAM,
            external_user_id=str(chat_id),
            platform_message_id=f"cb:{query.id}",
            text=title,
            payload=payload,
            display_name=_display_name(query),
        ),
    )
    await query.answer()
    if stored:
        await sender.send_typing(chat_id)


def _button_title(message: Message | None, payload: str) -> str | None:
    markup = message.reply_markup if message else None
    if markup is None:
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.callback_data == payload:
                return button.text
    return None
