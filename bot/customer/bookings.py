"""The customer's own bookings on Telegram: the conversation core's one self-service flow.

`/mybookings` feeds the MY_BOOKINGS payload to the conversation core (core/conversation/offline.py
lists the bookings with Move / Cancel buttons, asks before cancelling, offers new times); its quick
replies come back as inline buttons (bot/keyboards.py), and taps are ordinary payload taps
(bot/customer/messages.py). Every id is checked there against the conversation's own client. When the
chat's client has no phone on file, a share-my-phone button links bookings made by phone or on
another app. Booking buttons sent before this flow (`MyBooking`, "c.bk:") are turned into the core
payload they meant, so old messages keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import MyBooking, MyBookingVerb
from bot.customer.common import inbound_from, ingest_update, tap_inbound, typing_due
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from bot.sender import TelegramSender
from core import linking
from core.conversation import payloads as pl

router = RouterSpec("customer.bookings")

SHARE_PHONE = (
    "Booked with us before (by phone or on another app)? Share your phone number and I'll find them."
)

_LEGACY: dict[MyBookingVerb, Callable[[MyBooking], str]] = {
    "cancel": lambda b: pl.cancel(b.appointment_id),
    "cancel_yes": lambda b: pl.cancel(b.appointment_id, confirmed=True),
    "keep": lambda b: pl.MY_BOOKINGS,
    "resched": lambda b: pl.move(b.appointment_id),
    "slot": lambda b: pl.move(b.appointment_id, start=datetime.fromtimestamp(b.ts, UTC)),
}


@router.message(Command("mybookings"))
async def my_bookings(message: Message, scope: UpdateScope, sender: TelegramSender) -> None:
    async with scope.transaction() as session:
        asked = await linking.request_my_bookings(session, inbound_from(message, text=message.text or ""))
        typing = await typing_due(session, asked.ingested)
    if not asked.phone_on_file:
        await message.answer(SHARE_PHONE, reply_markup=keyboards.share_phone_keyboard())
    if typing:
        await sender.send_typing(message.chat.id)


@router.callback_query(MyBooking.filter())
async def legacy_booking_button(
    query: CallbackQuery, callback_data: MyBooking, scope: UpdateScope, sender: TelegramSender
) -> None:
    inbound = tap_inbound(query, _LEGACY[callback_data.action](callback_data))
    typing = await ingest_update(scope, inbound)
    await query.answer()
    if typing:
        await sender.send_typing(inbound.external_user_id)
