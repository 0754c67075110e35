"""Stripe's side of the HTTP server: `POST /webhook/stripe` and the pages Checkout returns to.

The webhook is three steps, as every inbound route: verify the signature on the raw body (the SDK,
through the payments gateway; tolerance 300 s), store the event id once (`processed_event`, source
"stripe") with its job in the same transaction, answer 200. A missing, wrong or stale signature, a
body that is not an event, or a handled type without its fields is a 400 and changes nothing; an
unknown type is a 200 and is ignored; a redelivery is a 200 that changes nothing. The work
(receipt, card, refunds) happens in the `stripe_event` job (core/payments/service.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from core.db.database import Database, insert_for
from core.db.models import ProcessedEvent, utcnow
from core.jobs.queue import enqueue
from core.payments import texts
from core.payments.events import STRIPE_EVENT_JOB, MalformedEventError, StripeEventPayload, parse_event
from core.payments.gateway import SignatureError

log = logging.getLogger(__name__)

EVENT_SOURCE = "stripe"
WEBHOOK_PATH = "/webhook/stripe"
SUCCESS_PATH = "/pay/success"
CANCEL_PATH = "/pay/cancel"

Verify = Callable[[bytes, str | None], Mapping[str, Any]]


async def store_event(db: Database, event: StripeEventPayload) -> bool:
    """The event id, once, with its job. False: seen before (nothing is queued again)."""
    async with db.transaction() as session:
        stmt = (
            insert_for(session)(ProcessedEvent)
            .values(source=EVENT_SOURCE, event_id=event.event_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["source", "event_id"])
            .returning(ProcessedEvent.id)
        )
        if (await session.execute(stmt)).scalar_one_or_none() is None:
            return False
        await enqueue(
            session,
            STRIPE_EVENT_JOB,
            event.dump(),
            idempotency_key=f"{STRIPE_EVENT_JOB}:{event.event_id}",
            # One payment's events run one at a time, in the order they arrived.
            queue_key=f"stripe:{event.payment_id or event.object_id}",
        )
    return True


def webhook_handler(db: Database, verify: Verify) -> Callable[[web.Request], Any]:
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
        new = await store_event(db, parsed)
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
    app.router.add_post(WEBHOOK_PATH, webhook_handler(db, verify))
    app.router.add_get(SUCCESS_PATH, _page(texts.SUCCESS_PAGE))
    app.router.add_get(CANCEL_PATH, _page(texts.CANCEL_PAGE))
