"""Kimmie's client look-up: /client <name or phone> shows pets and history, with 💬 Open chat, and
each pet's Looking Glass previews (style, status, cost; the latest ones as pictures: a presigned
link from S3, or the bytes uploaded from local storage, which Telegram cannot reach by URL)."""

from __future__ import annotations

from aiogram.enums import ParseMode
from aiogram.filters import Command, CommandObject
from aiogram.types import InputMediaPhoto, Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import cards, keyboards, views
from bot.admin.common import chunks
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from bot.sender import stored_picture
from core import customers
from core.booking.api import BookingService
from core.db.models import GroomingDesign
from core.settings import Settings
from core.storage import MediaStorage

router = RouterSpec("admin.clients")
MAX_PREVIEWS = 10
MAX_PICTURES = 3


@router.message(Command("client"))
async def client_lookup(
    message: Message,
    command: CommandObject,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
    media: MediaStorage | None = None,
) -> None:
    query = (command.args or "").strip()
    if not query:
        await message.answer("Usage: /client <name or phone>")
        return
    async with scope.transaction() as session:
        found = await customers.search_clients(session, query, limit=5)
        found_cards = [await views.client_card(session, booking, c.id) for c in found]
        conversations = {c.id: await views.conversation_for_client(session, c.id, None) for c in found}
        previews = {c.id: await _previews(session, c.id) for c in found}
    if not found_cards:
        await message.answer(f"No client matches “{query[:50]}”.")
        return
    for card in found_cards:
        conversation_id = conversations.get(card.client.id)
        markup = keyboards.open_chat_keyboard(conversation_id) if conversation_id is not None else None
        for part in chunks(cards.client_card_text(card, settings.tz)):
            await message.answer(part, parse_mode=ParseMode.HTML, reply_markup=markup)
        designs = previews.get(card.client.id) or []
        if designs:
            await message.answer(
                cards.previews_text(designs, card.pets, settings.tz), parse_mode=ParseMode.HTML
            )
            await _preview_pictures(message, designs, media)


async def _previews(session: AsyncSession, client_id: int) -> list[GroomingDesign]:
    rows = await session.scalars(
        select(GroomingDesign)
        .where(GroomingDesign.client_id == client_id)
        .order_by(GroomingDesign.id.desc())
        .limit(MAX_PREVIEWS)
    )
    return list(rows)


async def _preview_pictures(
    message: Message, designs: list[GroomingDesign], media: MediaStorage | None
) -> None:
    """The latest finished previews as one album (the list above already names them)."""
    if media is None:
        return
    keys = [str(k) for d in designs if d.status == "done" for k in (d.storage_keys or [])][:MAX_PICTURES]
    pictures = [await stored_picture(media, key) for key in keys]
    links = [picture for picture in pictures if picture is not None]
    if len(links) == 1:
        await message.answer_photo(links[0])
    elif links:
        await message.answer_media_group([InputMediaPhoto(media=link) for link in links])
