"""`POST /webhook/twenty`: Twenty CRM's webhook, so an edit of a Person's name, e-mail or phone in
the CRM reaches the client's record (wired only with TWENTY_WEBHOOK_SECRET).

verify the signature on the raw bytes → parse → one core call (core/integrations/twenty_inbound.py)
→ 200. A wrong or stale signature is 401, a malformed body 400, a body over MAX_BODY_BYTES 413.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import SecretStr

from channels import middleware
from core.db.database import Database
from core.integrations import twenty_inbound as inbound

log = logging.getLogger(__name__)

PATH = "/webhook/twenty"
SIGNATURE_HEADER = "X-Twenty-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twenty-Webhook-Timestamp"
NONCE_HEADER = "X-Twenty-Webhook-Nonce"


def setup_routes(app: web.Application, *, db: Database, secret: SecretStr) -> None:
    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()  # past MAX_BODY_BYTES: the app's client_max_size answers 413
        try:
            inbound.verify(
                secret.get_secret_value(),
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                raw,
            )
        except inbound.BadSignatureError as exc:
            log.warning("twenty webhook refused: %s", exc)
            await middleware.limit_unsigned(request)
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            change = inbound.parse(raw)
        except inbound.MalformedError as exc:
            return web.json_response({"error": f"malformed webhook body: {exc}"}, status=400)
        if change is None:
            return web.json_response({"status": "ignored"})
        async with db.transaction() as session:
            if await inbound.seen_before(session, request.headers.get(NONCE_HEADER)):
                return web.json_response({"status": "duplicate"})
            outcome = await inbound.apply(session, change)
        return web.json_response({"status": outcome})

    app.router.add_post(PATH, receive)
    middleware.signed_webhook(app, PATH)
