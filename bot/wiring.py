"""The Telegram section of the composition root, on the Telegram side of the line: `wire_telegram(...)`
builds the bot, its sender, the dispatcher and Kimmie's Telegram notifier from explicit arguments and
returns them in a `TelegramWiring`, which also starts, stops and closes the bot for the process.

Several processes may share one PostgreSQL database; Telegram allows one getUpdates poller per bot, so
polling runs only in the process that holds the bot's advisory lock (core/db/leader.py), and another
process takes it over when that one dies. Webhook mode needs no lock: Telegram picks one process.

cheshire/wiring.py calls it only when TELEGRAM_BOT_TOKEN is set, and only after /healthz answers
(importing aiogram takes seconds): what existed before, the webhook route and the pruning job, is in
bot/deferred.py and bot/processed_updates.py. The composition root never names an aiogram type: what
it holds is this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiogram import Bot, Dispatcher

from bot.notifier import TelegramAdminNotifier
from bot.processed_updates import schedule_prune
from bot.sender import TelegramSender, build_send_limiter
from bot.setup import build_bot, build_dispatcher, build_webhook, on_startup
from bot.webhook import TelegramWebhook
from core.booking.api import BookingService
from core.db.database import Database
from core.db.leader import Leadership, leadership_for, run_while_leader
from core.settings import Settings
from core.storage import S3Storage, media_storage

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TelegramWiring:
    settings: Settings
    db: Database
    bot: Bot
    dispatcher: Dispatcher
    sender: TelegramSender
    notifier: TelegramAdminNotifier
    # POST /webhook/telegram's handler in webhook mode (the route is bot/deferred.py's), else None.
    webhook: TelegramWebhook | None
    # Who polls getUpdates when several processes share the database (always this one on SQLite).
    polling_lock: Leadership
    on_shutdown: tuple[Hook, ...]

    async def start(self) -> bool:
        """Command menus, setWebhook / deleteWebhook, tomorrow's pruning; False when Telegram refused
        or could not be reached (logged: the rest of the service runs)."""
        async with self.db.transaction() as session:
            await schedule_prune(session)
        return await on_startup(self.bot, self.dispatcher, self.settings)

    def start_polling(self) -> asyncio.Task[None] | None:
        """Poll getUpdates in polling mode (None in webhook mode, or when no handler is wired)."""
        if self.settings.telegram_mode != "polling":
            return None
        if not self.dispatcher.resolve_used_update_types():
            # Polling with no handlers would confirm (and so discard) every update Telegram holds.
            log.error("telegram: no handlers are wired, so the bot does not poll; updates wait at Telegram")
            return None
        return asyncio.create_task(
            run_while_leader(self.polling_lock, self._poll, name="telegram polling"), name="telegram-polling"
        )

    async def _poll(self) -> None:
        try:
            await self.dispatcher.start_polling(self.bot, handle_signals=False, close_bot_session=False)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A revoked token or an unreachable API must not take the channels and workers down with it.
            log.exception("telegram polling stopped with an error; the rest of the service keeps running")

    async def stop_polling(self, polling: asyncio.Task[None]) -> None:
        if not polling.done():
            with contextlib.suppress(RuntimeError):  # polling had not started (another process holds it)
                await self.dispatcher.stop_polling()
            polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)

    async def close(self) -> None:
        """Close the bot's HTTP session (last: shutdown hooks may still call Telegram)."""
        with contextlib.suppress(Exception):
            await self.bot.session.close()


def wire_telegram(*, settings: Settings, db: Database, booking: BookingService) -> TelegramWiring:
    """Bot, sender, dispatcher (FSM storage, routers), Kimmie's Telegram notifier (the composition
    root's notify section hands it to "notify_admin"), the webhook's handler in webhook mode."""
    bot = build_bot(settings)
    limiter = build_send_limiter(settings.redis_url)
    # Preview images stored locally (no public URL) are uploaded as bytes read from this storage.
    media = media_storage(settings)
    sender = TelegramSender(bot, limiter=limiter, storage=media)
    photos = S3Storage(settings)
    dispatcher = build_dispatcher(
        db=db, settings=settings, booking=booking, sender=sender, photos=photos, media=media
    )
    notifier = TelegramAdminNotifier(
        bot=bot, db=db, settings=settings, booking=booking, photos=photos, media=media
    )
    webhook = build_webhook(dispatcher, bot, settings) if settings.telegram_mode == "webhook" else None
    return TelegramWiring(
        settings=settings,
        db=db,
        bot=bot,
        dispatcher=dispatcher,
        sender=sender,
        notifier=notifier,
        webhook=webhook,
        polling_lock=leadership_for(settings.database_url, f"telegram-polling:{_bot_id(settings)}"),
        on_shutdown=(dispatcher.storage.close, limiter.close),
    )


def _bot_id(settings: Settings) -> str:
    """The bot's numeric id, the token's public part before the colon: two bots on one database each
    get their own polling lock. Never the secret part."""
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    return token.split(":", 1)[0]
