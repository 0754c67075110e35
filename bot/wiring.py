"""The Telegram section of the composition root, on the Telegram side of the line: `wire_telegram(...)`
builds the bot, its sender, the dispatcher and Kimmie's Telegram notifier from explicit arguments and
returns them in a `TelegramWiring`, which also starts, stops and closes the bot for the process.

Several processes may share one PostgreSQL database; Telegram allows one getUpdates poller per bot, so
polling runs only in the process that holds the bot's advisory lock (core/db/leader.py), and another
process takes it over when that one dies. Webhook mode needs no lock: Telegram picks one process.

cheshire/wiring.py calls it only when TELEGRAM_BOT_TOKEN is set, so a process without a token never
imports aiogram, and the composition root never names an aiogram type: what it holds is this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from aiogram import Bot, Dispatcher
from aiohttp import web

from bot.notifier import TelegramAdminNotifier
from bot.scope import register_prune_job, schedule_prune
from bot.sender import TelegramSender, build_send_limiter
from bot.setup import build_bot, build_dispatcher, on_startup, setup_webhook
from core.booking.api import BookingService
from core.db.database import Database
from core.db.leader import Leadership, leadership_for, run_while_leader
from core.jobs.worker import JobRegistry
from core.settings import Settings
from core.storage import S3Storage, media_storage

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TelegramWiring:
    settings: Settings
    bot: Bot
    dispatcher: Dispatcher
    sender: TelegramSender
    notifier: TelegramAdminNotifier
    # Who polls getUpdates when several processes share the database (always this one on SQLite).
    polling_lock: Leadership
    on_startup: tuple[Hook, ...]
    on_shutdown: tuple[Hook, ...]

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


def wire_telegram(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    booking: BookingService,
) -> TelegramWiring:
    """Bot, sender, dispatcher (FSM storage, routers), Kimmie's Telegram notifier (the composition
    root's notify section puts it on "notify_admin"), the pruning job, POST /webhook/telegram in
    webhook mode, command menus + setWebhook at start-up."""
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
    register_prune_job(registry, db=db)
    if settings.telegram_mode == "webhook":
        setup_webhook(app, dispatcher, bot, settings)

    async def schedule_pruning() -> None:
        async with db.transaction() as session:
            await schedule_prune(session)

    return TelegramWiring(
        settings=settings,
        bot=bot,
        dispatcher=dispatcher,
        sender=sender,
        notifier=notifier,
        polling_lock=leadership_for(settings.database_url, f"telegram-polling:{_bot_id(settings)}"),
        on_startup=(partial(on_startup, bot, dispatcher, settings), schedule_pruning),
        on_shutdown=(dispatcher.storage.close, limiter.close),
    )


def _bot_id(settings: Settings) -> str:
    """The bot's numeric id, the token's public part before the colon: two bots on one database each
    get their own polling lock. Never the secret part."""
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    return token.split(":", 1)[0]
