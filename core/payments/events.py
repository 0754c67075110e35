"""Stripe webhook events, parsed into what the payments service acts on.

`parse_event()` is called by the webhook route after the signature was verified: a handled type
without the fields it needs is `MalformedEventError` (the route answers 400: Stripe shows it in its
dashboard, nothing is stored), an unknown type is None (200, ignored). The job that does the work
gets the small `StripeEventPayload`, never the whole body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.jobs.payloads import JobPayload, job_payload

STRIPE_EVENT_JOB = "stripe_event"

SESSION_COMPLETED = "checkout.session.completed"
SESSION_ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
SESSION_ASYNC_FAILED = "checkout.session.async_payment_failed"
SESSION_EXPIRED = "checkout.session.expired"
INTENT_FAILED = "payment_intent.payment_failed"
INTENT_CAPTURABLE = "payment_intent.amount_capturable_updated"
CHARGE_REFUNDED = "charge.refunded"

SESSION_EVENTS = frozenset(
    {SESSION_COMPLETED, SESSION_ASYNC_SUCCEEDED, SESSION_ASYNC_FAILED, SESSION_EXPIRED}
)
HANDLED = SESSION_EVENTS | {INTENT_FAILED, INTENT_CAPTURABLE, CHARGE_REFUNDED}


class MalformedEventError(ValueError):
    """A signed body that is not a Stripe event of a handled type with its fields."""


@job_payload(STRIPE_EVENT_JOB)
class StripeEventPayload(JobPayload):
    event_id: str
    type: str
    object_id: str  # the session, payment intent or charge
    payment_id: int | None = None  # our metadata, when the object carries it
    payment_intent_id: str | None = None
    payment_status: str | None = None  # checkout sessions
    amount_refunded: int | None = None  # charges


def parse_event(event: Mapping[str, Any]) -> StripeEventPayload | None:
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise MalformedEventError("an event needs an id and a type")
    if event_type not in HANDLED:
        return None
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise MalformedEventError(f"{event_type} without data.object.id")
    payment_status = obj.get("payment_status")
    if event_type in SESSION_EVENTS and not isinstance(payment_status, str):
        raise MalformedEventError(f"{event_type} without payment_status")
    refunded = obj.get("amount_refunded")
    if event_type == CHARGE_REFUNDED and not isinstance(refunded, int):
        raise MalformedEventError(f"{event_type} without amount_refunded")
    return StripeEventPayload(
        event_id=event_id[:255],
        type=event_type,
        object_id=str(obj["id"])[:255],
        payment_id=_payment_id(obj.get("metadata")),
        payment_intent_id=_intent(obj, event_type),
        payment_status=payment_status if isinstance(payment_status, str) else None,
        amount_refunded=refunded if isinstance(refunded, int) else None,
    )


def _payment_id(metadata: Any) -> int | None:
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get("payment_id")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _intent(obj: Mapping[str, Any], event_type: str) -> str | None:
    if event_type.startswith("payment_intent."):
        return str(obj["id"])
    intent = obj.get("payment_intent")
    if isinstance(intent, Mapping):
        intent = intent.get("id")
    return str(intent) if isinstance(intent, str) and intent else None
