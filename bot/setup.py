"""Assembling the Telegram side; called from the composition root's Telegram section (cheshire/wiring.py).

- `build_dispatcher(...)`: routers (admin, guard, customer), the per-update scope middleware, FSM
  storage (Redis when REDIS_URL is set, else memory: only short UI steps live there) and the
  dependencies as workflow data (handlers receive them as keyword arguments, never globals).
- `setup_webhook(app, dispatcher, bot, settings)`: POST /webhook/telegram on the shared aiohttp app,
  checking X-Telegram-Bot-Api-Secret-Token (401 otherwise) and malformed updates (400) in
  bot/webhook.py. Updates are handled before the 200 goes back: the update is in the database before
  Telegram stops retrying.
- `on_startup(bot, dispatcher, settings)`: command menus per scope, and setWebhook / deleteWebhook.
- `build_bot(settings)`: the aiogram Bot (pointed at TELEGRAM_API_BASE when set).
- `register_jobs(registry, ...)`: the Telegram notifier on the "notify_admin" job (core/notify/jobs.py)
  and the update-id pruning job, for a process assembled without the composition root (tests, bench).
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault
from aiohttp import web

from bot import admin, customer
from bot.deferred import WEBHOOK_PATH
from bot.notifier import TelegramAdminNotifier
from bot.processed_updates import register_prune_job
from bot.scope import UpdateScopeMiddleware
from bot.sender import TelegramSender
from bot.webhook import TelegramWebhook
from channels.middleware import signed_webhook
from core.booking.api import BookingService
from core.db.database import Database
from core.jobs.worker import JobRegistry
from core.notify.jobs import EmailFallback
from core.notify.jobs import register_jobs as register_notify_jobs
from core.settings import Settings
from core.storage import ObjectStorage, S3Storage

log = logging.getLogger(__name__)


def build_bot(settings: Settings) -> Bot:
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
        if settings.telegram_api_base
        else AiohttpSession()
    )
    return Bot(settings.telegram_bot_token.get_secret_value(), session=session)


def fsm_storage_for(settings: Settings) -> BaseStorage:
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis_url)
    return MemoryStorage()


def build_dispatcher(
    *,
    db: Database,
    settings: Settings,
    booking: BookingService,
    sender: TelegramSender,
    photos: ObjectStorage | None = None,
    fsm_storage: BaseStorage | None = None,
    **extra: Any,
) -> Dispatcher:
    dp = Dispatcher(
        storage=fsm_storage or fsm_storage_for(settings),
        db=db,
        settings=settings,
        booking=booking,
        sender=sender,
        photos=photos,
        **extra,
    )
    dp.update.outer_middleware(UpdateScopeMiddleware())
    # Order matters: Kimmie's routers first (filtered by IsAdmin), then the guard that refuses her
    # buttons to anyone else, then everything customers do.
    dp.include_routers(admin.build_router(), admin.build_guard_router(), customer.build_router())
    return dp


def build_webhook(dispatcher: Dispatcher, bot: Bot, settings: Settings) -> TelegramWebhook:
    if settings.telegram_webhook_secret is None:
        raise ValueError("TELEGRAM_WEBHOOK_SECRET is required in webhook mode")
    return TelegramWebhook(
        dispatcher,
        bot,
        secret=settings.telegram_webhook_secret.get_secret_value(),
        max_body_bytes=settings.max_body_bytes,
    )


def setup_webhook(app: web.Application, dispatcher: Dispatcher, bot: Bot, settings: Settings) -> None:
    """POST /webhook/telegram on an app whose bot is built already (tests; the process mounts the
    route before the bot exists: bot/deferred.py)."""
    app.router.add_post(WEBHOOK_PATH, build_webhook(dispatcher, bot, settings).handle)
    signed_webhook(app, WEBHOOK_PATH)


def webhook_url(settings: Settings) -> str:
    assert settings.public_base_url
    return f"{settings.public_base_url}{WEBHOOK_PATH}"


async def set_commands(bot: Bot, settings: Settings) -> None:
    customer_commands = [BotCommand(command=c, description=d) for c, d in customer.CUSTOMER_COMMANDS.items()]
    admin_commands = [BotCommand(command=c, description=d[:256]) for c, d in admin.ADMIN_COMMANDS.items()]
    await bot.set_my_commands(customer_commands, scope=BotCommandScopeDefault())
    for chat_id in sorted(settings.admin_chat_ids):
        await bot.set_my_commands(admin_commands, scope=BotCommandScopeChat(chat_id=chat_id))


async def on_startup(bot: Bot, dispatcher: Dispatcher, settings: Settings) -> bool:
    """Menus and webhook registration; False when Telegram refused or could not be reached (logged,
    not fatal: the rest of the service runs)."""
    try:
        await set_commands(bot, settings)
        if settings.telegram_mode == "webhook":
            assert settings.telegram_webhook_secret is not None
            await bot.set_webhook(
                webhook_url(settings),
                secret_token=settings.telegram_webhook_secret.get_secret_value(),
                allowed_updates=dispatcher.resolve_used_update_types(),
                max_connections=40,
            )
        else:
            await bot.delete_webhook(drop_pending_updates=False)
    except Exception:
        log.exception("telegram start-up calls failed (token, network?); the bot may not answer")
        return False
    return True


def register_jobs(
    registry: JobRegistry,
    *,
    db: Database,
    bot: Bot,
    settings: Settings,
    booking: BookingService,
    photos: S3Storage | None = None,
    fallback: EmailFallback | None = None,
) -> TelegramAdminNotifier:
    """Register "notify_admin" with the Telegram notifier (and the e-mail fallback, when given) and
    the pruning job; returns the notifier."""
    notifier = TelegramAdminNotifier(bot=bot, db=db, settings=settings, booking=booking, photos=photos)
    register_notify_jobs(registry, notifier=notifier, fallback=fallback)
    register_prune_job(registry, db=db)
    return notifier
