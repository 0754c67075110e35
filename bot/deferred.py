"""The parts of the Telegram adapter that exist before aiogram is imported.

The bot is built after /healthz answers (cheshire/runtime.py: importing aiogram takes seconds), but
some of it must exist from the start: the webhook route (aiohttp's router is frozen once the server
runs), what the sender declares to delivery, the pruning job (the worker runs from the start, and a
job of an unknown kind would die). None of this imports aiogram.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from aiohttp import web

from channels.middleware import signed_webhook
from core.deferred import Deferred, NotReadyError
from core.ports import ChannelCapabilities
from core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

WEBHOOK_PATH = "/webhook/telegram"
# Telegram: no messaging window, resumable parts (bot/sender.py's TelegramSender declares these).
TELEGRAM_CAPABILITIES = ChannelCapabilities()
# An update posted while the bot is still being built waits this long, then is answered 503 with
# Retry-After (Telegram redelivers it): well inside Telegram's own webhook time-out.
WEBHOOK_WAIT_S = 10.0
WEBHOOK_RETRY_AFTER_S = 5


class WebhookHandler(Protocol):
    async def handle(self, request: web.Request) -> web.Response: ...


def mount_webhook(
    app: web.Application, settings: Settings, bot: Deferred[T], pick: Callable[[T], WebhookHandler]
) -> None:
    """POST /webhook/telegram, answered by `pick(bot)` (bot/webhook.py) once the bot is built."""
    if settings.telegram_webhook_secret is None:
        raise ValueError("TELEGRAM_WEBHOOK_SECRET is required in webhook mode")

    async def handle(request: web.Request) -> web.Response:
        try:
            built = await bot.get(timeout_s=WEBHOOK_WAIT_S)
        except NotReadyError as exc:
            log.warning("telegram webhook POST answered 503: %s", exc)
            return web.json_response(
                {"error": "starting"}, status=503, headers={"Retry-After": str(WEBHOOK_RETRY_AFTER_S)}
            )
        return await pick(built).handle(request)

    app.router.add_post(WEBHOOK_PATH, handle)
    signed_webhook(app, WEBHOOK_PATH)
