"""Domain events and the follow-ups table: how one business change starts everything that follows it.

A use case changes state and calls `emit()` in the same transaction. `emit()` stores the event as a
`domain_event` row and runs the follow-ups subscribed to its type, each of which queues (or stops) a
job in that same session. So the change, its event and its jobs commit together or not at all, and a
new integration (n8n, Twenty CRM, Stripe) subscribes with one `FollowUps.subscribe(...)` line in its
wiring function instead of an edit to every booking method.

Two tables run for each event:
- the domain's own (e.g. core/booking/followups.py: Kimmie's card, the customer's message, calendar,
  reminders), passed by the service that emits;
- the process's integration subscribers, given to `Database(subscribers=...)` by the composition root
  and reached through the session, so client and conversation changes made anywhere reach them too.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.database import SUBSCRIBERS_KEY, Database
from core.db.insert_batch import inserts_together
from core.db.models import DomainEvent, utcnow
from core.jobs.payloads import JobPayload, check_payload, job_payload
from core.jobs.queue import ClaimedJob, PermanentJobError, enqueue
from core.jobs.worker import JobRegistry

_domain_event = cast(Table, DomainEvent.__table__)

# Event types. Integrations match them exactly or by prefix ("booking.*").
BOOKING_REQUESTED = "booking.requested"
BOOKING_CONFIRMED = "booking.confirmed"
BOOKING_DECLINED = "booking.declined"
BOOKING_CANCELLED = "booking.cancelled"
BOOKING_RESCHEDULED = "booking.rescheduled"
BOOKING_COMPLETED = "booking.completed"
BOOKING_NO_SHOW = "booking.no_show"
BOOKING_HOLD_EXPIRED = "booking.hold_expired"
BOOKING_RESTORED = "booking.restored"  # Kimmie undid a decline within its 5 minutes
CLIENT_CREATED = "client.created"
CLIENT_UPDATED = "client.updated"
CONVERSATION_HANDOVER = "conversation.handover"

BOOKING_EVENTS = (
    BOOKING_REQUESTED,
    BOOKING_CONFIRMED,
    BOOKING_DECLINED,
    BOOKING_CANCELLED,
    BOOKING_RESCHEDULED,
    BOOKING_COMPLETED,
    BOOKING_NO_SHOW,
    BOOKING_HOLD_EXPIRED,
    BOOKING_RESTORED,
)

# Events written by a single SQL statement (first contacts at ingest, core/conversation/ingest.py)
# cannot run Python follow-ups in it: the statement queues this job, which runs the subscribers.
DISPATCH_JOB = "dispatch_event"


class EventPayload(JobPayload):
    """A job about one stored event: what `job_follow_up` queues. An integration's kind declares
    its model as a subclass (`@job_payload("crm_sync") class CrmSyncPayload(EventPayload): pass`)
    and its handler reads the event with `load_event`."""

    event_id: str


@job_payload(DISPATCH_JOB)
class DispatchEventPayload(EventPayload):
    """Built in SQL by ingest's one-statement path (`jsonb_build_object('event_id', ...)`)."""


@dataclass(frozen=True, slots=True)
class Event:
    """An emitted event. `detail` is in-process only (the objects the change had at hand, so a
    follow-up need not read them again); it is never stored or sent."""

    id: str
    type: str
    subject: str
    occurred_at: datetime
    data: Mapping[str, Any]
    detail: object | None = None


FollowUpRun = Callable[[AsyncSession, Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FollowUp:
    """One row of a follow-ups table: on an event, start one kind of job (or, with `stops`, cancel a
    pending one, such as a reminder for a booking that was cancelled)."""

    job_kind: str
    run: FollowUpRun
    name: str = ""
    stops: bool = False
    # A condition on the event's facts ("only when Kimmie did it"); None is always.
    when: Callable[[Event], bool] | None = None

    def applies(self, event: Event) -> bool:
        return self.when is None or self.when(event)


@dataclass(slots=True)
class FollowUps:
    """Event type (or "prefix.*", or "*") -> the follow-ups it starts, in order."""

    table: dict[str, list[FollowUp]] = field(default_factory=dict)

    @classmethod
    def of(cls, table: Mapping[str, Sequence[FollowUp]]) -> FollowUps:
        return cls({event_type: list(rows) for event_type, rows in table.items()})

    def subscribe(self, event_type: str, follow_up: FollowUp) -> None:
        self.table.setdefault(event_type, []).append(follow_up)

    def for_type(self, event_type: str) -> list[FollowUp]:
        rows = list(self.table.get(event_type, ()))
        prefix = event_type.split(".", 1)[0] + ".*"
        rows += self.table.get(prefix, ())
        rows += self.table.get("*", ())
        return rows


def job_follow_up(job_kind: str, *, name: str = "") -> FollowUp:
    """The usual integration subscriber: one job per event, carrying only the event id, keyed by it
    (a re-emitted event cannot queue twice) and ordered per subject (one booking's events run in the
    order they happened). `job_kind` must have an `EventPayload` model already: checked here, at
    wiring, rather than at the first event."""
    check_payload(job_kind, EventPayload(event_id="wiring-check").dump())

    async def start(session: AsyncSession, event: Event) -> None:
        await enqueue(
            session,
            job_kind,
            EventPayload(event_id=event.id).dump(),
            idempotency_key=f"{job_kind}:{event.id}",
            queue_key=f"{job_kind}:{event.subject}",
        )

    return FollowUp(job_kind, start, name or job_kind)


async def emit(
    session: AsyncSession,
    event_type: str,
    *,
    subject: str,
    data: Mapping[str, Any],
    detail: object | None = None,
    follow_ups: FollowUps | None = None,
) -> Event:
    """Store an event in the caller's transaction and start its follow-ups there. The event's row
    and the jobs its follow-ups queue are written together (core/db/insert_batch.py)."""
    event = Event(
        id=str(uuid.uuid4()),
        type=event_type,
        subject=subject,
        occurred_at=utcnow(),
        data=plain(data),
        detail=detail,
    )
    rows = follow_ups.for_type(event_type) if follow_ups is not None else []
    subscribers: FollowUps | None = session.info.get(SUBSCRIBERS_KEY)
    if subscribers is not None:
        rows += subscribers.for_type(event_type)
    async with inserts_together(session) as batch:
        batch.add(
            _domain_event,
            [
                {
                    "id": event.id,
                    "type": event.type,
                    "subject": subject,
                    "occurred_at": event.occurred_at,
                    "data": event.data,
                }
            ],
        )
        await start_follow_ups(session, event, rows)
    return event


async def start_follow_ups(session: AsyncSession, event: Event, rows: Sequence[FollowUp]) -> None:
    """Run the rows that apply to this event, in order, in the caller's transaction."""
    for follow_up in rows:
        if follow_up.applies(event):
            await follow_up.run(session, event)


async def load_event(session: AsyncSession, event_id: str) -> Event | None:
    row = await session.get(DomainEvent, event_id)
    if row is None:
        return None
    return Event(id=row.id, type=row.type, subject=row.subject, occurred_at=row.occurred_at, data=row.data)


def register_jobs(registry: JobRegistry, *, db: Database, subscribers: FollowUps) -> None:
    """The `dispatch_event` job: an event stored by SQL gets the process's subscribers' follow-ups,
    in one transaction (a retry cannot queue them twice: `job_follow_up` keys its jobs by event id)."""

    async def dispatch(job: ClaimedJob) -> None:
        event_id = DispatchEventPayload.load(job.payload).event_id
        async with db.transaction() as session:
            event = await load_event(session, event_id)
            if event is None:
                raise PermanentJobError(f"no event {event_id!r}")
            await start_follow_ups(session, event, subscribers.for_type(event.type))

    registry.register(DISPATCH_JOB, dispatch)


def plain(value: Any) -> Any:
    """JSON-safe plain data: datetimes and dates as ISO 8601, enums as their values, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"event data must be plain, got {type(value).__name__}")
