"""Kimmie's day: /today, /tomorrow, /week (the agenda) and /pending (requests waiting, with buttons)."""

from __future__ import annotations

from aiogram.enums import ParseMode
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot import cards, keyboards, views
from bot.admin.common import chunks
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core.booking.api import BookingService
from core.settings import Settings

router = RouterSpec("admin.agenda")


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
        clients = {cid: (await views.client_view(session, cid)).label for cid in {b.client_id for b in items}}
    for part in chunks(cards.agenda_text(title, items, pets, clients, tz)):
        await message.answer(part, parse_mode=ParseMode.HTML)


@router.message(Command("pending"))
async def pending(message: Message, scope: UpdateScope, booking: BookingService, settings: Settings) -> None:
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
            reply_markup=keyboards.booking_card_keyboard(card),
        )
