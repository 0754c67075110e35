"""Kimmie's control room: approval cards, agenda, client look-up, takeover, photos.

Every handler here sits behind `IsAdmin` (router-level filters on messages and callbacks), checked on
every update against `settings.admin_chat_ids`. A non-admin pressing one of these buttons reaches
`guard_router` instead, which refuses it with an alert and logs the attempt.

Handlers are three steps: parse the update, call one core use case in the update's unit of work
(`scope.transaction()`), render. Telegram calls happen after the transaction closed.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

from aiogram import Bot, F
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import BaseFilter, Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
)

from bot import cards, views
from bot.callbacks import ADMIN_PREFIX, ApptAction, ChatAction, PhotoAction
from bot.notifier import edit_card
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core import customers
from core.booking.api import (
    BookingError,
    BookingService,
    InvalidTransitionError,
    NotFoundError,
    SlotUnavailableError,
)
from core.conversation import takeover
from core.settings import Settings
from core.storage import (
    PHOTO_KINDS,
    ObjectStorage,
    PhotoTargetError,
    StorageError,
    StorageNotConfiguredError,
    extension_for,
    link_pet_photo,
    pet_photo_key,
    resolve_photo_target,
)
from core.types import AppointmentStatus, Slot

log = logging.getLogger(__name__)

ADMIN_COMMANDS = {
    "today": "Today's appointments",
    "tomorrow": "Tomorrow's appointments",
    "week": "The next 7 days",
    "pending": "Requests waiting for you",
    "client": "Find a client: /client <name or phone>",
    "done": "Hand the open chat back to the assistant",
    "calendar": "Connect Google Calendar (a link valid 30 minutes)",
    "help": "What I can do",
}


class IsAdmin(BaseFilter):
    async def __call__(self, event: TelegramObject, settings: Settings) -> bool:
        user = getattr(event, "from_user", None)
        return user is not None and user.id in settings.admin_chat_ids


class TakeoverStates(StatesGroup):
    replying = State()


class PhotoStates(StatesGroup):
    choosing = State()


router = RouterSpec("admin")
router.filter("message", IsAdmin())
router.filter("callback_query", IsAdmin())

guard_router = RouterSpec("admin-guard")


@guard_router.callback_query(F.data.startswith(ADMIN_PREFIX))
async def refuse_forged_callback(query: CallbackQuery) -> None:
    log.warning(
        "admin button pressed by a non-admin: refused",
        extra={"telegram_user_id": query.from_user.id, "callback_prefix": (query.data or "")[:8]},
    )
    await query.answer("This button is only for the salon staff.", show_alert=True)


# --- Booking cards ------------------------------------------------------------------------------


async def _load(scope: UpdateScope, booking: BookingService, appointment_id: int) -> views.CardData:
    async with scope.transaction() as session:
        return await views.load_card(session, booking, appointment_id)


async def _show_card(
    bot: Bot, query: CallbackQuery, card: views.CardData, settings: Settings, **kw: Any
) -> None:
    message = query.message
    if not isinstance(message, Message):
        return
    try:
        await edit_card(bot, message.chat.id, message.message_id, card, settings, **kw)
    except TelegramBadRequest as exc:  # the card is gone or too old: send it afresh
        log.info("card not editable, sending a new one: %s", exc.message[:120])
        await message.answer(
            cards.booking_card_text(card, settings.tz, note=kw.get("note")),
            parse_mode=ParseMode.HTML,
            reply_markup=kw.get("markup") or cards.booking_card_keyboard(card),
        )


def _stale_note(exc: BookingError, card: views.CardData) -> str:
    if isinstance(exc, SlotUnavailableError):
        return "That time is no longer free: decline or offer another time."
    status = cards.STATUS_LABEL.get(card.booking.status, card.booking.status)
    return f"Already decided earlier: {status}. Nothing was changed."


@router.callback_query(ApptAction.filter(F.action.in_({"approve", "decline", "alt"})))
async def decide(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    appointment_id = callback_data.appointment_id
    offered: Slot | None = None
    try:
        async with scope.transaction() as session:
            if callback_data.action == "approve":
                await booking.approve(session, appointment_id=appointment_id)
            elif callback_data.action == "decline":
                await booking.decline(session, appointment_id=appointment_id)
            else:
                current = await booking.get_booking(session, appointment_id)
                start = datetime.fromtimestamp(callback_data.ts, UTC)
                offered = Slot(start=start, end=start + (current.end - current.start))
                await booking.decline(session, appointment_id=appointment_id, alternatives=[offered])
            card = await views.load_card(session, booking, appointment_id)
    except (InvalidTransitionError, SlotUnavailableError) as exc:
        card = await _load(scope, booking, appointment_id)
        note = _stale_note(exc, card)
        await _show_card(bot, query, card, settings, note=note)
        await query.answer(note, show_alert=True)
        return
    except NotFoundError:
        await query.answer("This booking no longer exists.", show_alert=True)
        return
    except BookingError as exc:
        await query.answer(str(exc)[:190], show_alert=True)
        return
    if offered is not None:
        outcome = f"Declined; {cards.fmt_slot(offered.start, offered.end, settings.tz)} offered instead."
    elif callback_data.action == "approve":
        outcome = "Approved: the customer is being told."
    else:
        outcome = "Declined: the customer is being told."
    await _show_card(bot, query, card, settings, note=outcome)
    await query.answer(outcome[:190])


@router.callback_query(ApptAction.filter(F.action == "offer"))
async def offer_alternatives(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    appointment_id = callback_data.appointment_id
    async with scope.transaction() as session:
        card = await views.load_card(session, booking, appointment_id)
        slots: list[Slot] = []
        if card.booking.status == AppointmentStatus.REQUESTED:
            found = await booking.find_slots(
                session,
                service_code=card.booking.service_code,
                pet_ids=card.booking.pet_ids,
                client_id=card.booking.client_id,
                date_from=datetime.now(settings.tz).date(),
                limit=7,
            )
            slots = [s for s in found if s.start != card.booking.start][:6]
    if card.booking.status != AppointmentStatus.REQUESTED:
        note = _stale_note(InvalidTransitionError(""), card)
        await _show_card(bot, query, card, settings, note=note)
        await query.answer(note, show_alert=True)
        return
    if not slots:
        await query.answer("No other free times in the booking horizon.", show_alert=True)
        return
    duration = card.booking.end - card.booking.start
    slots = [Slot(start=s.start, end=s.start + duration, verified=s.verified) for s in slots]
    await _show_card(
        bot,
        query,
        card,
        settings,
        note="Pick the time to offer (this declines the request):",
        markup=cards.alternatives_keyboard(appointment_id, slots, settings.tz),
    )
    await query.answer()


@router.callback_query(ApptAction.filter(F.action == "back"))
async def back_to_card(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    card = await _load(scope, booking, callback_data.appointment_id)
    await _show_card(bot, query, card, settings)
    await query.answer()


# --- Agenda, pending, client ---------------------------------------------------------------------


@router.message(Command("today", "tomorrow", "week"))
async def agenda(
    message: Message,
    command: CommandObject,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    tz = settings.tz
    day_from, day_to, title = cards.day_range(command.command, tz)
    async with scope.transaction() as session:
        items = await booking.agenda(session, day_from=day_from, day_to=day_to)
        pets = await views.pet_views(session, sorted({p for b in items for p in b.pet_ids}))
        clients = {
            cid: (await views.client_view(session, cid)).name or f"client #{cid}"
            for cid in {b.client_id for b in items}
        }
    for part in _chunks(cards.agenda_text(title, items, pets, clients, tz)):
        await message.answer(part, parse_mode=ParseMode.HTML)


@router.message(Command("pending"))
async def pending(
    message: Message, bot: Bot, scope: UpdateScope, booking: BookingService, settings: Settings
) -> None:
    async with scope.transaction() as session:
        items = await booking.pending(session)
        loaded = [await views.load_card(session, booking, b.id) for b in items[:15]]
    if not loaded:
        await message.answer("No requests waiting. 🎉")
        return
    await message.answer(f"{len(items)} request(s) waiting:")
    for card in loaded:
        await message.answer(
            cards.booking_card_text(card, settings.tz),
            parse_mode=ParseMode.HTML,
            reply_markup=cards.booking_card_keyboard(card),
        )


@router.message(Command("client"))
async def client_lookup(
    message: Message, command: CommandObject, scope: UpdateScope, booking: BookingService, settings: Settings
) -> None:
    query = (command.args or "").strip()
    if not query:
        await message.answer("Usage: /client <name or phone>")
        return
    async with scope.transaction() as session:
        found = await customers.search_clients(session, query, limit=5)
        found_cards = [await views.client_card(session, booking, c.id) for c in found]
        conversations = {c.id: await views.conversation_for_client(session, c.id, None) for c in found}
    if not found_cards:
        await message.answer(f"No client matches “{query[:50]}”.")
        return
    for card in found_cards:
        conversation_id = conversations.get(card.client.id)
        markup = (
            InlineKeyboardMarkup(inline_keyboard=[[cards.open_chat_button(conversation_id)]])
            if conversation_id is not None
            else None
        )
        for part in _chunks(cards.client_card_text(card, settings.tz)):
            await message.answer(part, parse_mode=ParseMode.HTML, reply_markup=markup)


@router.message(Command("calendar"))
async def calendar_link(message: Message, settings: Settings) -> None:
    """The signed /oauth/start link: the only way to connect Kimmie's Google Calendar."""
    from core.calendar import is_configured
    from core.calendar.oauth import start_link

    if not is_configured(settings):
        await message.answer(
            "Google Calendar is not configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET "
            "(or a service account), restart, then send /calendar again."
        )
        return
    await message.answer(
        f"Open this link within 30 minutes to connect Google Calendar:\n{start_link(settings)}",
        disable_web_page_preview=True,
    )


@router.message(Command("help", "start"), StateFilter(None))
async def admin_help(message: Message) -> None:
    lines = [f"/{name} — {text}" for name, text in ADMIN_COMMANDS.items()]
    lines.append(
        "Send a photo with the caption “pet 12” or “appt 34” (optionally followed by "
        "photo / before / after / style_reference) to store it; without a caption I'll ask."
    )
    await message.answer("\n".join(lines))


# --- Takeover ---------------------------------------------------------------------------------------


@router.callback_query(ChatAction.filter(F.action == "open"))
async def open_chat(
    query: CallbackQuery,
    callback_data: ChatAction,
    scope: UpdateScope,
    state: FSMContext,
    settings: Settings,
) -> None:
    conversation_id = callback_data.conversation_id
    try:
        async with scope.transaction() as session:
            await takeover.take_over(session, conversation_id)
            view = await views.conversation_view(session, conversation_id)
            recent = [
                (m.author, m.text or (f"[{m.payload}]" if m.payload else "[attachment]"), m.created_at)
                for m in await takeover.recent_messages(session, conversation_id, limit=15)
            ]
    except takeover.ConversationNotFoundError:
        await query.answer("That chat no longer exists.", show_alert=True)
        return
    assert view is not None
    await state.set_state(TakeoverStates.replying)
    await state.update_data(conversation_id=conversation_id)
    done = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="✅ Done — hand back to the assistant",
                    callback_data=ChatAction(action="done", conversation_id=conversation_id).pack(),
                )
            ]
        ]
    )
    if isinstance(query.message, Message):
        for part in _chunks(cards.conversation_text(view, recent, settings.tz)):
            await query.message.answer(part, parse_mode=ParseMode.HTML)
        await query.message.answer(
            "You have this chat now; the assistant stays quiet. Type your replies here. /done hands it back.",
            reply_markup=done,
        )
    await query.answer("You're in the chat")


@router.callback_query(ChatAction.filter(F.action == "done"))
async def done_button(
    query: CallbackQuery, callback_data: ChatAction, scope: UpdateScope, state: FSMContext
) -> None:
    await _hand_back(scope, state, callback_data.conversation_id)
    if isinstance(query.message, Message):
        await query.message.answer("Handed back: the assistant answers again.")
    await query.answer("Handed back")


@router.message(Command("done"))
async def done_command(message: Message, scope: UpdateScope, state: FSMContext) -> None:
    data = await state.get_data()
    conversation_id = data.get("conversation_id")
    if conversation_id is None:
        await message.answer("No chat is open.")
        return
    await _hand_back(scope, state, int(conversation_id))
    await message.answer("Handed back: the assistant answers again.")


async def _hand_back(scope: UpdateScope, state: FSMContext, conversation_id: int) -> None:
    try:
        async with scope.transaction() as session:
            await takeover.hand_back(session, conversation_id)
    except takeover.ConversationNotFoundError:
        pass
    await state.clear()


@router.message(TakeoverStates.replying, F.text, ~F.text.startswith("/"))
async def staff_reply(message: Message, scope: UpdateScope, state: FSMContext) -> None:
    conversation_id = int((await state.get_data())["conversation_id"])
    try:
        async with scope.transaction() as session:
            await takeover.staff_reply(session, conversation_id, message.text or "")
    except takeover.ConversationNotFoundError:
        await state.clear()
        await message.answer("That chat no longer exists; reply mode closed.")
        return
    await message.answer("✓ sent")


# --- Photos ----------------------------------------------------------------------------------------

_CAPTION = re.compile(
    r"^\s*(?P<what>pet|appt|appointment)\s*#?(?P<id>\d+)(?:\s+(?P<kind>photo|before|after|style_reference|style))?",
    re.IGNORECASE,
)


def _photo_file(message: Message) -> tuple[str, str, str] | None:
    """(file_id, file_unique_id, content type) of a photo or an image sent as a file."""
    if message.photo:
        biggest = message.photo[-1]
        return biggest.file_id, biggest.file_unique_id, "image/jpeg"
    document = message.document
    if document and (document.mime_type or "").startswith("image/"):
        return document.file_id, document.file_unique_id, document.mime_type or "image/jpeg"
    return None


def _kind_keyboard(target: str, target_id: int) -> InlineKeyboardMarkup:
    del target
    titles = {
        "photo": "Pet photo",
        "before": "Before",
        "after": "After",
        "style_reference": "Style reference",
    }
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=titles[k],
                    callback_data=PhotoAction(action="kind", target_id=target_id, kind=k).pack(),
                )
                for k in PHOTO_KINDS[:2]
            ],
            [
                InlineKeyboardButton(
                    text=titles[k],
                    callback_data=PhotoAction(action="kind", target_id=target_id, kind=k).pack(),
                )
                for k in PHOTO_KINDS[2:]
            ],
            [InlineKeyboardButton(text="Cancel", callback_data=PhotoAction(action="cancel").pack())],
        ]
    )


@router.message(StateFilter(None, TakeoverStates.replying, PhotoStates.choosing), F.photo | F.document)
async def photo_received(
    message: Message,
    bot: Bot,
    scope: UpdateScope,
    state: FSMContext,
    photos: ObjectStorage | None,
    booking: BookingService,
    settings: Settings,
) -> None:
    found = _photo_file(message)
    if found is None:
        await message.answer("Only images can be stored (a photo, or an image sent as a file).")
        return
    if photos is None or not photos.configured:
        await message.answer(
            "I can't store photos: photo storage (S3_BUCKET and AWS credentials) is not set up."
        )
        return
    file_id, unique_id, content_type = found
    match = _CAPTION.match(message.caption or "")
    if match:
        target_id = int(match["id"])
        is_appt = match["what"].lower().startswith("appt")
        kind = (match["kind"] or "").lower()
        kind = "style_reference" if kind == "style" else kind
        if not kind and not is_appt:
            kind = "photo"
        if kind:
            reply = await _store_photo(
                bot,
                scope,
                photos,
                settings,
                file_id=file_id,
                unique_id=unique_id,
                content_type=content_type,
                pet_id=None if is_appt else target_id,
                appointment_id=target_id if is_appt else None,
                kind=kind,
            )
            await message.answer(reply)
            return
        await _remember_photo(state, file_id, unique_id, content_type, appointment_id=target_id)
        await message.answer("What is this photo?", reply_markup=_kind_keyboard("appt", target_id))
        return
    # No caption: offer today's appointments.
    day = datetime.now(settings.tz).date()
    async with scope.transaction() as session:
        items = await booking.agenda(session, day_from=day - timedelta(days=1), day_to=day)
    if not items:
        await message.answer(
            "Which pet is it? Send it again with the caption “pet <id>” or “appt <id>” "
            "(find ids with /client)."
        )
        return
    await _remember_photo(state, file_id, unique_id, content_type)
    rows = [
        [
            InlineKeyboardButton(
                text=f"{b.start.astimezone(settings.tz):%a %H:%M} {', '.join(b.pet_names)}"[:60],
                callback_data=PhotoAction(action="appt", target_id=b.id).pack(),
            )
        ]
        for b in items[:10]
    ]
    rows.append([InlineKeyboardButton(text="Cancel", callback_data=PhotoAction(action="cancel").pack())])
    await message.answer(
        "Which appointment is this photo for?", reply_markup=InlineKeyboardMarkup(inline_keyboard=rows)
    )


async def _remember_photo(
    state: FSMContext, file_id: str, unique_id: str, content_type: str, appointment_id: int | None = None
) -> None:
    previous = await state.get_state()
    if previous == PhotoStates.choosing.state:  # a new photo replaces the one still waiting
        previous = ((await state.get_data()).get("photo") or {}).get("return_state")
    await state.update_data(
        photo={
            "file_id": file_id,
            "unique_id": unique_id,
            "content_type": content_type,
            "appointment_id": appointment_id,
            "return_state": previous,
        }
    )
    await state.set_state(PhotoStates.choosing)


async def _restore_state(state: FSMContext, photo: dict[str, Any]) -> None:
    await state.update_data(photo=None)
    await state.set_state(photo.get("return_state"))


@router.callback_query(PhotoAction.filter())
async def photo_choice(
    query: CallbackQuery,
    callback_data: PhotoAction,
    bot: Bot,
    scope: UpdateScope,
    state: FSMContext,
    photos: ObjectStorage | None,
    settings: Settings,
) -> None:
    photo = (await state.get_data()).get("photo")
    if not photo:
        await query.answer("That photo is no longer waiting; send it again.", show_alert=True)
        return
    message = query.message if isinstance(query.message, Message) else None
    if callback_data.action == "cancel":
        await _restore_state(state, photo)
        await query.answer("Cancelled")
        if message:
            await message.edit_text("Photo not stored.")
        return
    if callback_data.action == "appt":
        await state.update_data(photo={**photo, "appointment_id": callback_data.target_id})
        await query.answer()
        if message:
            await message.edit_text(
                "What is this photo?", reply_markup=_kind_keyboard("appt", callback_data.target_id)
            )
        return
    if photos is None:
        await query.answer("Photo storage is not set up.", show_alert=True)
        return
    reply = await _store_photo(
        bot,
        scope,
        photos,
        settings,
        file_id=photo["file_id"],
        unique_id=photo["unique_id"],
        content_type=photo["content_type"],
        pet_id=None,
        appointment_id=photo.get("appointment_id") or callback_data.target_id,
        kind=callback_data.kind,
    )
    await _restore_state(state, photo)
    await query.answer()
    if message:
        await message.edit_text(reply)


async def _store_photo(
    bot: Bot,
    scope: UpdateScope,
    storage: ObjectStorage,
    settings: Settings,
    *,
    file_id: str,
    unique_id: str,
    content_type: str,
    pet_id: int | None,
    appointment_id: int | None,
    kind: str,
) -> str:
    if kind not in PHOTO_KINDS:
        return f"Unknown photo kind “{kind}”."
    if kind in ("before", "after") and appointment_id is None:
        return "Before/after photos belong to an appointment: use the caption “appt <id> before”."
    try:
        async with scope.transaction() as session:
            pet_id, appointment_id = await resolve_photo_target(
                session, pet_id=pet_id, appointment_id=appointment_id
            )
    except PhotoTargetError as exc:
        return str(exc)
    buffer = await bot.download(file_id, destination=BytesIO())
    assert buffer is not None
    data = buffer.read()
    key = pet_photo_key(
        settings.s3_prefix, pet_id=pet_id, kind=kind, unique_id=unique_id, ext=extension_for(content_type)
    )
    try:
        stored = await storage.put(key, data, content_type=content_type)
    except StorageNotConfiguredError as exc:
        return str(exc)
    except StorageError:
        log.warning("photo upload failed", exc_info=True)
        return "The upload to photo storage failed; please try again in a minute."
    async with scope.transaction() as session:
        pet = await link_pet_photo(
            session, pet_id=pet_id, stored=stored, kind=kind, appointment_id=appointment_id
        )
        name = pet.name
    where = f" (appointment #{appointment_id})" if appointment_id else ""
    label = {
        "photo": "photo",
        "before": "before photo",
        "after": "after photo",
        "style_reference": "style reference",
    }
    return f"Saved as {name}'s {label[kind]}{where}."


@router.message(StateFilter(None), F.text, ~F.text.startswith("/"))
async def admin_free_text(message: Message) -> None:
    await message.answer("Open a chat from a card (💬 Open chat) to reply to a customer, or see /help.")


# Registered last: anything else an admin sends stays in the control room. Without these, an admin's
# stray message or tap would fall through to the customer router and start a customer conversation.
@router.message()
async def admin_unhandled_message(message: Message, state: FSMContext) -> None:
    if await state.get_state() == PhotoStates.choosing.state:
        await message.answer("First pick what the photo is (or Cancel) in the message above.")
        return
    await message.answer("I didn't get that. /help lists what I can do.")


@router.callback_query()
async def admin_unhandled_callback(query: CallbackQuery) -> None:
    await query.answer("This button is no longer active.")


def _chunks(text: str, limit: int = 4000) -> list[str]:
    parts, current = [], ""
    for line in text.split("\n"):
        if len(current) + len(line) + 1 > limit and current:
            parts.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    parts.append(current)
    return parts
