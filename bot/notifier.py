"""Kimmie hears about things here: core.ports.AdminNotifier implemented with the Telegram bot.

Each method reads what it needs in a short transaction, closes it, then calls Telegram (never a
transaction held across a network call), and writes back the card's message id in a new one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from html import escape

from aiogram import Bot
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, Message

from bot import cards, keyboards, views
from bot.sender import stored_picture
from core.booking.api import BookingService, NotFoundError
from core.db.database import Database
from core.jobs.queue import RetryLater
from core.notify.errors import AdminUnreachableError, NoAdminChatError
from core.notify.facts import EVENT_LABEL, QUIET_EVENTS
from core.settings import Settings
from core.storage import MediaStorage, S3Storage, StorageError

log = logging.getLogger(__name__)


@asynccontextmanager
async def telegram_errors() -> AsyncIterator[None]:
    """Telegram's answers as job outcomes: wait for a 429, give up at once when retrying cannot help."""
    try:
        yield
    except TelegramRetryAfter as exc:
        raise RetryLater(float(exc.retry_after), "telegram rate limit") from None
    except TelegramForbiddenError as exc:
        log.error("telegram refuses to message the admin chat: it must open the bot and press Start")
        raise AdminUnreachableError(f"admin chat refused the bot: {exc.message[:120]}") from None
    except TelegramUnauthorizedError:
        raise AdminUnreachableError("TELEGRAM_BOT_TOKEN was rejected by Telegram") from None
    except TelegramBadRequest as exc:
        if "chat not found" not in exc.message.lower():
            raise  # our request was wrong: retried, then dead (or e-mailed) like any other failure
        log.error("telegram does not know the admin chat: check TELEGRAM_KIMMIE_CHAT_ID")
        raise AdminUnreachableError("admin chat not found: check TELEGRAM_KIMMIE_CHAT_ID") from None


class TelegramAdminNotifier:
    def __init__(
        self,
        *,
        bot: Bot,
        db: Database,
        settings: Settings,
        booking: BookingService,
        photos: S3Storage | None = None,
        media: MediaStorage | None = None,
    ) -> None:
        self.photos = photos if photos is not None and photos.configured else None
        # Where preview pictures live (MEDIA_DIR without S3): read and uploaded when not fetchable.
        self.media = media
        self.bot = bot
        self.db = db
        self.settings = settings
        self.booking = booking

    @property
    def chat_id(self) -> int | None:
        if self.settings.telegram_kimmie_chat_id is not None:
            return self.settings.telegram_kimmie_chat_id
        admins = sorted(self.settings.admin_chat_ids)
        return admins[0] if admins else None

    def _chat(self) -> int:
        chat_id = self.chat_id
        if chat_id is None:
            raise NoAdminChatError("TELEGRAM_KIMMIE_CHAT_ID is not set: nobody to notify")
        return chat_id

    # --- AdminNotifier --------------------------------------------------------------------------
    async def booking_request(self, appointment_id: int) -> None:
        async with telegram_errors():
            await self._booking_request(appointment_id)

    async def _booking_request(self, appointment_id: int) -> None:
        chat_id = self._chat()
        async with self.db.transaction() as session:
            card = await views.load_card(session, self.booking, appointment_id)
        if card.card_message_id is not None and card.card_chat_id is not None:
            # A retried job whose card already went out: refresh it rather than send a second one.
            await self.refresh_card(card)
            return
        sent = await self.send_card(chat_id, card)
        async with self.db.transaction() as session:
            await views.set_card_location(session, appointment_id, sent.chat.id, sent.message_id)

    async def booking_changed(self, appointment_id: int, event: str) -> None:
        async with telegram_errors():
            await self._booking_changed(appointment_id, event)

    async def _booking_changed(self, appointment_id: int, event: str) -> None:
        chat_id = self._chat()
        async with self.db.transaction() as session:
            try:
                card = await views.load_card(session, self.booking, appointment_id)
            except NotFoundError:
                log.info(
                    "booking_changed for a missing appointment", extra={"appointment_id": appointment_id}
                )
                return
        b = card.booking
        label = EVENT_LABEL.get(event, event.replace("_", " "))
        pets = ", ".join(b.pet_names) or "—"
        text = (
            f"🔔 Booking #{b.id} ({cards.e(pets)}, {cards.fmt_slot(b.start, b.end, self.settings.tz)}) "
            f"{cards.e(label)}"
        )
        if card.card_message_id is not None:
            await self.refresh_card(card)
        if event not in QUIET_EVENTS:
            await self.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)

    async def handover(self, conversation_id: int, reason: str) -> None:
        async with telegram_errors():
            await self._handover(conversation_id, reason)

    async def _handover(self, conversation_id: int, reason: str) -> None:
        chat_id = self._chat()
        async with self.db.transaction() as session:
            view = await views.conversation_view(session, conversation_id)
        if view is None:
            return
        markup = keyboards.open_chat_keyboard(conversation_id)
        await self.bot.send_message(
            chat_id, cards.handover_text(view, reason), parse_mode=ParseMode.HTML, reply_markup=markup
        )

    async def reminder_digest(self, appointment_ids: Sequence[int]) -> None:
        async with telegram_errors():
            await self._reminder_digest(appointment_ids)

    async def _reminder_digest(self, appointment_ids: Sequence[int]) -> None:
        chat_id = self._chat()
        async with self.db.transaction() as session:
            items = []
            for appointment_id in appointment_ids:
                try:
                    items.append(await views.load_card(session, self.booking, appointment_id))
                except NotFoundError:
                    continue
        if not items:
            return
        await self.bot.send_message(
            chat_id,
            cards.reminder_digest_text(items, self.settings.tz),
            parse_mode=ParseMode.HTML,
            reply_markup=keyboards.reminder_digest_keyboard([c.booking.id for c in items]),
        )

    async def alert(self, text: str) -> None:
        async with telegram_errors():
            await self._alert(text)

    async def _alert(self, text: str) -> None:
        await self.bot.send_message(self._chat(), f"⚠️ {escape(text, quote=False)}", parse_mode=ParseMode.HTML)

    # --- cards --------------------------------------------------------------------------------
    async def send_card(self, chat_id: int, card: views.CardData, *, note: str | None = None) -> Message:
        text = cards.booking_card_text(card, self.settings.tz, note=note)
        markup = keyboards.booking_card_keyboard(card)
        photo = await self._photo_link(card)
        if photo and len(text) <= 1024:
            try:
                return await self.bot.send_photo(
                    chat_id, photo, caption=text, parse_mode=ParseMode.HTML, reply_markup=markup
                )
            except TelegramBadRequest:
                # Telegram could not fetch the picture (private bucket, dead link): the text still matters.
                log.info("pet photo not accepted by telegram; sending the card as text")
        return await self.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup)

    async def _photo_link(self, card: views.CardData) -> str | BufferedInputFile | None:
        pet = next((p for p in card.pets if p.photo_url), None)
        if pet is None:
            return None
        if self.photos is not None and pet.photo_key:
            # Our bucket is private: Telegram fetches the picture through a short-lived signed URL.
            try:
                return await self.photos.presigned_url(pet.photo_key, expires_s=600)
            except StorageError:
                log.info("could not sign the pet photo URL; sending the card as text")
                return None
        if self.media is not None and pet.photo_key:
            return await stored_picture(self.media, pet.photo_key)
        return pet.photo_url

    async def refresh_card(self, card: views.CardData, *, note: str | None = None) -> None:
        if card.card_chat_id is None or card.card_message_id is None:
            return
        try:
            await edit_card(self.bot, card.card_chat_id, card.card_message_id, card, self.settings, note=note)
        except TelegramBadRequest as exc:
            # The card was deleted or is too old to edit: the update line still tells Kimmie.
            log.info("booking card not editable: %s", exc.message[:120])


async def edit_card(
    bot: Bot,
    chat_id: int,
    message_id: int,
    card: views.CardData,
    settings: Settings,
    *,
    note: str | None = None,
    markup: InlineKeyboardMarkup | None = None,
) -> None:
    """Show the card's current state in place (text card or photo-caption card)."""
    text = cards.booking_card_text(card, settings.tz, note=note)
    keyboard = markup if markup is not None else keyboards.booking_card_keyboard(card)
    try:
        await bot.edit_message_text(
            text=text,
            chat_id=chat_id,
            message_id=message_id,
            parse_mode=ParseMode.HTML,
            reply_markup=keyboard,
        )
    except TelegramBadRequest as exc:
        message = exc.message.lower()
        if "not modified" in message:
            return
        if "no text" in message:
            await bot.edit_message_caption(
                caption=text[:1024],
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
            )
            return
        raise
