"""POST /webhook/telegram: Telegram's pushed updates, checked before aiogram sees them.

aiogram's own request handler turns anything it cannot parse (`{}`, `[]`, `null`, `{`, a nesting too
deep, a wrong type) into a 500, and Telegram redelivers a 5xx again and again. Here:

- a missing or wrong `X-Telegram-Bot-Api-Secret-Token` is a 401 (and counts against the per-IP limit
  that guards unsigned traffic; the right secret is not held to it: Telegram posts from a few addresses);
- a body that is not JSON, not an object, or not a Telegram `Update` is a 400 (413 when too large);
- a valid update of a type this aiogram does not know is ignored with a log line and a 200;
- anything else is fed to the dispatcher and handled before the 200 goes back (the update is in the
  database before Telegram stops retrying). A database that is away is the app's 503.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.methods import TelegramMethod
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError
from aiohttp import web
from pydantic import ValidationError

from channels.middleware import ApiError, error_response, limit_unsigned, parse_json, read_body

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class TelegramWebhook:
    def __init__(self, dispatcher: Dispatcher, bot: Bot, *, secret: str, max_body_bytes: int) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self._secret = secret.encode()
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: web.Request) -> web.Response:
        try:
            update = await self._update(request)
        except ApiError as exc:  # rendered here: this route may be mounted without the channel middlewares
            return error_response(exc.status, exc.message, headers=exc.headers)
        if update is None:
            return web.json_response({})
        result: Any = await self.dispatcher.feed_webhook_update(self.bot, update)
        if isinstance(result, TelegramMethod):  # a handler answered "in the webhook reply": send it
            await self.dispatcher.silent_call_request(self.bot, result)
        return web.json_response({})

    async def _update(self, request: web.Request) -> Update | None:
        """The checked update; None for one to acknowledge and ignore."""
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "backslashreplace")
        if not hmac.compare_digest(given, self._secret):
            await limit_unsigned(request)
            log.warning("telegram webhook POST refused (401): missing or wrong %s", SECRET_HEADER)
            raise ApiError(401, "unauthorized")
        body = parse_json(await read_body(request, self._max_body_bytes))
        if not isinstance(body, dict):
            raise ApiError(400, "a Telegram update must be a JSON object")
        update = _validate(body, self.bot)
        try:
            update.event_type  # noqa: B018 - raises for a type this aiogram does not know
        except UpdateTypeLookupError:
            fields = sorted(key[:40] for key in body if key != "update_id")[:5]
            log.info("telegram webhook: ignored update %s of an unknown type %s", update.update_id, fields)
            return None
        return update


def _validate(body: dict[str, Any], bot: Bot) -> Update:
    try:
        return Update.model_validate(body, context={"bot": bot})
    except (ValidationError, RecursionError, ValueError, TypeError):
        # Not the request's content in the answer, nor in the log: only that it was not an update.
        raise ApiError(400, "malformed Telegram update") from None
