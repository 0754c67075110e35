"""Stripe's side of the HTTP server: `POST /webhook/stripe` and the pages Checkout returns to.

The webhook is three steps, as every inbound route: verify the signature on the raw body (the SDK,
through the payments gateway; tolerance 300 s), store the event id once (`processed_event`, source
"stripe") with its job in the same transaction (concurrent requests share one: core/payments/inbox.py),
answer 200. A missing, wrong or stale signature, a
body that is not an event, or a handled type without its fields is a 400 and changes nothing; an
unknown type is a 200 and is ignored; a redelivery is a 200 that changes nothing. The work
(receipt, card, refunds) happens in the `stripe_event` job (core/payments/service.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from core.db.database import Database
from core.payments import texts
from core.payments.events import MalformedEventError, parse_event
from core.payments.gateway import SignatureError
from core.payments.inbox import EventInbox

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook/stripe"
SUCCESS_PATH = "/pay/success"
CANCEL_PATH = "/pay/cancel"

Verify = Callable[[bytes, str | None], Mapping[str, Any]]


def webhook_handler(inbox: EventInbox, verify: Verify) -> Callable[[web.Request], Any]:
    async def stripe_webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            parsed = parse_event(verify(raw, request.headers.get("Stripe-Signature")))
        except SignatureError:
            return web.json_response({"error": "bad signature"}, status=400)
        except MalformedEventError as exc:
            log.warning("signed stripe event without its fields", extra={"error": str(exc)[:200]})
            return web.json_response({"error": "malformed event"}, status=400)
        if parsed is None:
            return web.json_response({"received": True, "ignored": True})
        new = await inbox.store(parsed)
        return web.json_response({"received": True, "duplicate": not new})

    return stripe_webhook


def _page(text: str) -> Callable[[web.Request], Any]:
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>Payment</title><p style='font:18px sans-serif;margin:2em'>{text}</p>"
    )

    async def page(request: web.Request) -> web.Response:
        del request
        return web.Response(text=body, content_type="text/html")

    return page


def setup_routes(app: web.Application, *, db: Database, verify: Verify) -> None:
    app.router.add_post(WEBHOOK_PATH, webhook_handler(EventInbox(db), verify))
    app.router.add_get(SUCCESS_PATH, _page(texts.SUCCESS_PAGE))
    app.router.add_get(CANCEL_PATH, _page(texts.CANCEL_PAGE))
