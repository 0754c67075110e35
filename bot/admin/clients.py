"""Kimmie's client look-up: /client <name or phone> shows pets and history, with 💬 Open chat."""

from __future__ import annotations

from aiogram.enums import ParseMode
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot import cards, keyboards, views
from bot.admin.common import chunks
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core import customers
from core.booking.api import BookingService
from core.settings import Settings

router = RouterSpec("admin.clients")


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
        markup = keyboards.open_chat_keyboard(conversation_id) if conversation_id is not None else None
        for part in chunks(cards.client_card_text(card, settings.tz)):
            await message.answer(part, parse_mode=ParseMode.HTML, reply_markup=markup)
