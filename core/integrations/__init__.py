"""Outbound integrations (n8n, Twenty CRM): subscribers of the domain events, one adapter module each.

Each integration is a row (or a few) in the process's `FollowUps` (core/events.py): an event queues
its job in the transaction that made the change, the job calls the vendor over httpx later, outside
any transaction. What they share lives here: which events an integration wants, the delivery record
that makes "accepted once" hold across crashes, and the plain facts an event's body carries.
docs/INTEGRATIONS.md walks through adding one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.customers import client_facts
from core.db.database import insert_for
from core.db.models import Client, DomainEvent, IntegrationDelivery, Payment, utcnow
from core.events import Event

# (integration, outcome) -> GET /metrics' cheshire_integration_calls (core/metrics.py).
OnCall = Callable[[str, str], None]

# The prefixes integrations subscribe to: every event type there is, today's and later ones
# (payment.* when payments emit), each one line in the wiring.
EVENT_PREFIXES = ("booking.*", "client.*", "conversation.*", "payment.*")


def no_count(integration: str, outcome: str) -> None:
    """The OnCall of tests and CLIs: nothing counted."""


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """`event_type` is one of `patterns` (exact, "prefix.*" or "*"); no patterns means all."""
    if not patterns:
        return True
    prefix = event_type.split(".", 1)[0] + ".*"
    return any(p in ("*", event_type, prefix) for p in patterns)


async def undelivered_event(
    session: AsyncSession, event_id: str, subscriber: str
) -> tuple[Event, bool] | None:
    """The event and whether `subscriber` accepted it already, in one statement (None: no such event)."""
    row = (
        await session.execute(
            select(DomainEvent, IntegrationDelivery.event_id)
            .outerjoin(
                IntegrationDelivery,
                and_(
                    IntegrationDelivery.event_id == DomainEvent.id,
                    IntegrationDelivery.subscriber == subscriber,
                ),
            )
            .where(DomainEvent.id == event_id)
        )
    ).one_or_none()
    if row is None:
        return None
    stored, accepted = row
    event = Event(stored.id, stored.type, stored.subject, stored.occurred_at, stored.data)
    return event, accepted is not None


async def record_delivery(session: AsyncSession, event_id: str, subscriber: str, status_code: int) -> None:
    """The event was accepted; a second record of it (a job run twice) changes nothing."""
    insert = insert_for(session)
    await session.execute(
        insert(IntegrationDelivery)
        .values(event_id=event_id, subscriber=subscriber, status_code=status_code, delivered_at=utcnow())
        .on_conflict_do_nothing(index_elements=["event_id", "subscriber"])
    )


async def event_facts(session: AsyncSession, event: Event) -> dict[str, Any]:
    """The event's stored facts, plus what a workflow needs beside a booking: its client (name,
    e-mail, phone) and its deposit, as they are now. Plain JSON, no secrets."""
    data = dict(event.data)
    booking = data.get("booking")
    if isinstance(booking, dict):
        client_id = booking.get("client_id")
        if isinstance(client_id, int) and "client" not in data:
            client = await session.get(Client, client_id)
            data["client"] = client_facts(client) if client is not None else None
        appointment_id = booking.get("id")
        if isinstance(appointment_id, int) and "deposit" not in data:
            data["deposit"] = await _deposit(session, appointment_id)
    return data


async def _deposit(session: AsyncSession, appointment_id: int) -> dict[str, Any] | None:
    payment = (
        await session.execute(
            select(Payment)
            .where(Payment.appointment_id == appointment_id)
            .order_by(Payment.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if payment is None:
        return None
    return {"amount_cents": payment.amount_cents, "currency": payment.currency, "status": payment.status}
