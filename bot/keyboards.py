"""Every keyboard the bot shows, in one place: Kimmie's card, chat and photo buttons, the customer's
quick replies (core's choices as inline buttons) and the share-my-phone button.

Pure functions from plain values to aiogram markups; each callback_data is packed by its factory in
bot/callbacks.py (or is a core payload), so it stays within Telegram's 64 bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiogram.filters.callback_data import MAX_CALLBACK_LENGTH
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from bot.callbacks import (
    ApptAction,
    CardVerb,
    ChatAction,
    DeclineCode,
    DeclineReason,
    PhotoAction,
    ReminderAction,
)
from bot.cards import fmt_slot
from bot.views import CardData
from core.storage import PHOTO_KINDS
from core.types import AppointmentStatus, Booking, QuickReply, Slot

log = logging.getLogger(__name__)

PHOTO_KIND_TITLES = {
    "photo": "Pet photo",
    "before": "Before",
    "after": "After",
    "style_reference": "Style reference",
}


def _card_button(text: str, action: CardVerb, appointment_id: int, ts: int = 0) -> InlineKeyboardButton:
    packed = ApptAction(action=action, appointment_id=appointment_id, ts=ts).pack()
    return InlineKeyboardButton(text=text, callback_data=packed)


# --- Kimmie ------------------------------------------------------------------------------------------


def booking_card_keyboard(card: CardData, *, now: datetime | None = None) -> InlineKeyboardMarkup | None:
    rows: list[list[InlineKeyboardButton]] = []
    appointment_id = card.booking.id
    if card.undo_until is not None and (now or datetime.now(UTC)) < card.undo_until:
        rows.append([_card_button("↩ Undo decline", "undo", appointment_id)])
    if card.booking.status == AppointmentStatus.REQUESTED:
        rows.append(
            [
                _card_button("✅ Approve", "approve", appointment_id),
                _card_button("❌ Decline", "decline", appointment_id),
            ]
        )
        rows.append([_card_button("🕑 Offer another time", "offer", appointment_id)])
    if card.deposit is not None and card.deposit.refundable:
        rows.append([_card_button("↩ Refund deposit", "refund", appointment_id)])
    if card.conversation_id is not None:
        rows.append([open_chat_button(card.conversation_id)])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def refund_confirm_keyboard(appointment_id: int) -> InlineKeyboardMarkup:
    """The confirming tap: money leaves only on "Yes, refund"."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _card_button("✅ Yes, refund", "refund_yes", appointment_id),
                _card_button("✖ Keep it", "back", appointment_id),
            ]
        ]
    )


# Decline's second tap: why (the customer's message follows from it).
DECLINE_TITLES: dict[DeclineCode, str] = {
    "fully_booked": "📅 Fully booked",
    "not_a_fit": "🙅 Not a fit",
    "other": "… Other reason",
}


def decline_reasons_keyboard(appointment_id: int) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                text=title, callback_data=DeclineReason(reason=code, appointment_id=appointment_id).pack()
            )
        ]
        for code, title in DECLINE_TITLES.items()
    ]
    rows.append([_card_button("↩ Back", "back", appointment_id)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def open_chat_button(conversation_id: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        text="💬 Open chat", callback_data=ChatAction(action="open", conversation_id=conversation_id).pack()
    )


def open_chat_keyboard(conversation_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[open_chat_button(conversation_id)]])


def alternatives_keyboard(appointment_id: int, slots: Sequence[Slot], tz: ZoneInfo) -> InlineKeyboardMarkup:
    rows = [
        [_card_button(fmt_slot(s.start, s.end, tz), "alt", appointment_id, int(s.start.timestamp()))]
        for s in slots
    ]
    rows.append([_card_button("↩ Back", "back", appointment_id)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def hand_back_keyboard(conversation_id: int) -> InlineKeyboardMarkup:
    done = ChatAction(action="done", conversation_id=conversation_id).pack()
    button = InlineKeyboardButton(text="✅ Done — hand back to the assistant", callback_data=done)
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def _photo_cancel_row() -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(text="Cancel", callback_data=PhotoAction(action="cancel").pack())]


def photo_kind_keyboard(appointment_id: int) -> InlineKeyboardMarkup:
    """What the photo of this appointment is: two kinds per row, then Cancel."""

    def button(kind: str) -> InlineKeyboardButton:
        packed = PhotoAction(action="kind", target_id=appointment_id, kind=kind).pack()
        return InlineKeyboardButton(text=PHOTO_KIND_TITLES[kind], callback_data=packed)

    return InlineKeyboardMarkup(
        inline_keyboard=[
            [button(k) for k in PHOTO_KINDS[:2]],
            [button(k) for k in PHOTO_KINDS[2:]],
            _photo_cancel_row(),
        ]
    )


def photo_appointment_keyboard(bookings: Sequence[Booking], tz: ZoneInfo) -> InlineKeyboardMarkup:
    """Which of these (recent) appointments a photo is for, then Cancel."""
    rows = [
        [
            InlineKeyboardButton(
                text=f"{b.start.astimezone(tz):%a %H:%M} {', '.join(b.pet_names)}"[:60],
                callback_data=PhotoAction(action="appt", target_id=b.id).pack(),
            )
        ]
        for b in bookings
    ]
    rows.append(_photo_cancel_row())
    return InlineKeyboardMarkup(inline_keyboard=rows)


# --- Customers ---------------------------------------------------------------------------------------


def quick_reply_keyboard(quick_replies: tuple[QuickReply, ...]) -> InlineKeyboardMarkup | None:
    """Core's choices as inline buttons whose callback_data is the payload: two short buttons per row,
    long titles on their own row."""
    rows: list[list[InlineKeyboardButton]] = []
    for reply in quick_replies:
        payload = reply.payload
        if reply.url:  # a link (the deposit's Checkout page): its own row
            rows.append([InlineKeyboardButton(text=reply.title, url=reply.url)])
            continue
        if len(payload.encode()) > MAX_CALLBACK_LENGTH:
            log.warning("quick reply payload over 64 bytes dropped", extra={"title": reply.title})
            continue
        button = InlineKeyboardButton(text=reply.title, callback_data=payload)
        if rows and len(rows[-1]) == 1 and len(rows[-1][0].text) <= 14 and len(reply.title) <= 14:
            rows[-1].append(button)
        else:
            rows.append([button])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def share_phone_keyboard() -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="📱 Share my phone number", request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def reminder_digest_keyboard(appointment_ids: Sequence[int]) -> InlineKeyboardMarkup:
    """One "Mark confirmed" button per visit on Kimmie's list of reminders that did not arrive."""
    rows = [
        [
            InlineKeyboardButton(
                text=f"✅ Mark #{appointment_id} confirmed",
                callback_data=ReminderAction(action="confirm", appointment_id=appointment_id).pack(),
            )
        ]
        for appointment_id in appointment_ids
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)
