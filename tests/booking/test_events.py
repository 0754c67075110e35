"""Domain events: the transition table, the follow-ups table, and subscribers.

- Every allowed transition emits exactly its event; every forbidden one is refused and writes nothing
  (the refusal is caught inside the transaction, which then commits: the service itself must not
  have written anything before saying no).
- Each event queues exactly the jobs its follow-ups table lists, in the same transaction; a rolled
  back change leaves neither the event nor its jobs.
- An integration subscribes with one line and gets one job per event, with plain JSON facts.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.booking.api import InvalidTransitionError
from core.booking.service import DefaultBookingService
from core.booking.transitions import TRANSITIONS, Action
from core.conversation.ingest import ingest
from core.customers import save_contact
from core.db.database import Database
from core.db.models import Appointment, DomainEvent, Job
from core.events import EventPayload, FollowUps, job_follow_up
from core.jobs.payloads import job_payload
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry
from core.settings import Settings
from core.types import AppointmentStatus, Booking, Channel, InboundMessage, Interval
from tests.booking.conftest import Clock, Customer, make_customer

pytestmark = pytest.mark.usefixtures("catalog_db")
NY = ZoneInfo("America/New_York")


# Integrations' event jobs, as an integration declares them (one model per kind, core/jobs/payloads.py).
@job_payload("crm_sync")
class CrmSyncPayload(EventPayload):
    pass


@job_payload("n8n_post")
class N8nPostPayload(EventPayload):
    pass


WED = date(2027, 3, 10)  # more than a week after the clock: reminders are ahead
S = AppointmentStatus


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=NY).astimezone(UTC)


class QuietCalendar:
    """The CalendarProvider port with nothing on it (the Google adapter has its own tests)."""

    async def busy(self, start: datetime, end: datetime) -> list[Interval]:
        return []

    async def upsert_event(self, booking: Booking, *, summary: str, description: str) -> str:
        return f"evt{booking.id}"

    async def delete_event(self, booking_id: int, event_id: str | None) -> None:
        return None


@pytest.fixture
def calendar_service(settings: Settings, clock: Clock) -> DefaultBookingService:
    return DefaultBookingService(settings, QuietCalendar(), now=clock)


@dataclass
class Snapshot:
    status: str
    start: datetime
    events: int
    jobs: int
    max_job: int


async def snapshot(db: Database, appointment_id: int) -> Snapshot:
    async with db.transaction() as session:
        appt = await session.get_one(Appointment, appointment_id)
        return Snapshot(
            appt.status,
            appt.start_at,
            await session.scalar(select(func.count()).select_from(DomainEvent)) or 0,
            await session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) or 0,
            await session.scalar(select(func.max(Job.id))) or 0,
        )


async def new_request(db: Database, service: DefaultBookingService, who: Customer, start: datetime) -> int:
    async with db.transaction() as session:
        booking = await service.request_booking(
            session,
            client_id=who.client_id,
            service_code="full_groom",
            pet_ids=who.pet_ids,
            start=start,
            source_channel=Channel.TELEGRAM,
        )
    return booking.id


async def force_status(db: Database, appointment_id: int, status: S) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Appointment).where(Appointment.id == appointment_id).values(status=status.value)
        )


def call_for(
    service: DefaultBookingService, action: Action, appointment_id: int
) -> Callable[[AsyncSession], Awaitable[Any]]:
    """Kimmie's call for each action (customers' calls go through the same transitions)."""
    calls: dict[Action, Callable[[AsyncSession], Awaitable[Any]]] = {
        Action.APPROVE: lambda s: service.approve(s, appointment_id=appointment_id),
        Action.DECLINE: lambda s: service.decline(s, appointment_id=appointment_id, reason="fully booked"),
        Action.CANCEL: lambda s: service.cancel(s, appointment_id=appointment_id, client_id=None),
        Action.RESCHEDULE: lambda s: service.reschedule(
            s, appointment_id=appointment_id, new_start=at(WED + timedelta(days=1), 13), client_id=None
        ),
        Action.COMPLETE: lambda s: service.complete(s, appointment_id=appointment_id),
        Action.NO_SHOW: lambda s: service.no_show(s, appointment_id=appointment_id),
    }
    return calls[action]


async def events_of(db: Database, subject: str) -> list[DomainEvent]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(DomainEvent).where(DomainEvent.subject == subject).order_by(DomainEvent.occurred_at)
        )
        return list(rows.scalars())


async def queued_after(db: Database, job_id: int) -> list[str]:
    async with db.transaction() as session:
        rows = await session.execute(select(Job.kind).where(Job.id > job_id).order_by(Job.id))
        return list(rows.scalars())


# --- The transition table ---------------------------------------------------------------------------

KIMMIES_ACTIONS = [a for a in Action if a not in (Action.REQUEST, Action.EXPIRE)]


@pytest.mark.parametrize("status", list(S), ids=lambda s: s.value)
@pytest.mark.parametrize("action", KIMMIES_ACTIONS, ids=lambda a: a.name)
async def test_every_transition_emits_its_event_or_is_refused_writing_nothing(
    db: Database, service: DefaultBookingService, action: Action, status: S
) -> None:
    ann = await make_customer(db, "ann")
    appointment_id = await new_request(db, service, ann, at(WED, 9))
    await force_status(db, appointment_id, status)
    before = await snapshot(db, appointment_id)
    expected = TRANSITIONS.get((action, status))

    async with db.transaction() as session:
        if expected is None:
            with pytest.raises(InvalidTransitionError, match=f"appointment #{appointment_id}"):
                await call_for(service, action, appointment_id)(session)
        else:
            await call_for(service, action, appointment_id)(session)

    after = await snapshot(db, appointment_id)
    emitted = [e.type for e in await events_of(db, f"appointment:{appointment_id}")]
    if expected is None:
        assert after == before, "a refused transition wrote something"
        assert emitted == [events.BOOKING_REQUESTED]
    else:
        assert after.status == expected.to.value
        assert emitted == [events.BOOKING_REQUESTED, expected.event]


async def test_an_expired_hold_emits_hold_expired_once(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    appointment_id = await new_request(db, service, ann, at(WED, 9))
    clock.advance(hours=25)
    async with db.transaction() as session:
        assert await service.expire_hold(session, appointment_id=appointment_id) is True
    async with db.transaction() as session:  # a second run of the job: nothing more happens
        assert await service.expire_hold(session, appointment_id=appointment_id) is False
    emitted = [e.type for e in await events_of(db, f"appointment:{appointment_id}")]
    assert emitted == [events.BOOKING_REQUESTED, events.BOOKING_HOLD_EXPIRED]


def test_the_table_is_the_lifecycle_kimmie_knows() -> None:
    spec = {
        (Action.REQUEST, None): (S.REQUESTED, events.BOOKING_REQUESTED),
        (Action.APPROVE, S.REQUESTED): (S.CONFIRMED, events.BOOKING_CONFIRMED),
        (Action.DECLINE, S.REQUESTED): (S.DECLINED, events.BOOKING_DECLINED),
        (Action.CANCEL, S.REQUESTED): (S.CANCELLED, events.BOOKING_CANCELLED),
        (Action.CANCEL, S.CONFIRMED): (S.CANCELLED, events.BOOKING_CANCELLED),
        (Action.RESCHEDULE, S.REQUESTED): (S.REQUESTED, events.BOOKING_RESCHEDULED),
        (Action.RESCHEDULE, S.CONFIRMED): (S.CONFIRMED, events.BOOKING_RESCHEDULED),
        (Action.COMPLETE, S.CONFIRMED): (S.COMPLETED, events.BOOKING_COMPLETED),
        (Action.NO_SHOW, S.CONFIRMED): (S.NO_SHOW, events.BOOKING_NO_SHOW),
        (Action.EXPIRE, S.REQUESTED): (S.EXPIRED, events.BOOKING_HOLD_EXPIRED),
    }
    assert {key: (t.to, t.event) for key, t in TRANSITIONS.items()} == spec
    assert {t.event for t in TRANSITIONS.values()} == set(events.BOOKING_EVENTS)


# --- The follow-ups table ---------------------------------------------------------------------------

NOTIFY, DELIVER, EXPIRE = "notify_admin", "deliver_message", "expire_hold"
REMINDER, REBOOK, CAL_UP, CAL_DEL = (
    "booking_reminder",
    "booking_rebook_nudge",
    "calendar_upsert",
    "calendar_delete",
)

# What each step of a booking's life starts, by the spec (calendar configured, changes by Kimmie).
SCENARIOS: list[tuple[str, list[Action], list[str]]] = [
    (events.BOOKING_REQUESTED, [], [EXPIRE, NOTIFY]),
    (events.BOOKING_CONFIRMED, [Action.APPROVE], [CAL_UP, REMINDER, DELIVER, NOTIFY]),
    (events.BOOKING_DECLINED, [Action.DECLINE], [DELIVER, NOTIFY]),
    (events.BOOKING_CANCELLED, [Action.APPROVE, Action.CANCEL], [CAL_DEL, DELIVER, NOTIFY]),
    (events.BOOKING_RESCHEDULED, [Action.RESCHEDULE], [EXPIRE, DELIVER, NOTIFY]),
    (events.BOOKING_RESCHEDULED, [Action.APPROVE, Action.RESCHEDULE], [CAL_UP, REMINDER, DELIVER, NOTIFY]),
    (events.BOOKING_COMPLETED, [Action.APPROVE, Action.COMPLETE], [REBOOK, NOTIFY]),
    (events.BOOKING_NO_SHOW, [Action.APPROVE, Action.NO_SHOW], [NOTIFY]),
]


@pytest.mark.parametrize(
    ("event_type", "steps", "expected"), SCENARIOS, ids=[s[0] + str(len(s[1])) for s in SCENARIOS]
)
async def test_each_event_queues_exactly_the_jobs_its_table_lists(
    db: Database,
    calendar_service: DefaultBookingService,
    event_type: str,
    steps: list[Action],
    expected: list[str],
) -> None:
    ann = await make_customer(db, "ann")
    appointment_id = await new_request(db, calendar_service, ann, at(WED, 9))
    mark = 0  # the request itself: every job so far is its own
    for step in steps:
        mark = (await snapshot(db, appointment_id)).max_job
        async with db.transaction() as session:
            await call_for(calendar_service, step, appointment_id)(session)

    queued = await queued_after(db, mark)
    last = (await events_of(db, f"appointment:{appointment_id}"))[-1]
    assert last.type == event_type
    assert sorted(queued) == sorted(expected)
    # ...and the table is where they come from: each is a row of that event type.
    listed = {f.job_kind for f in calendar_service.follow_ups.for_type(event_type) if not f.stops}
    assert listed >= set(expected)


async def test_a_rolled_back_change_leaves_neither_its_event_nor_its_jobs(
    db: Database, calendar_service: DefaultBookingService
) -> None:
    ann = await make_customer(db, "ann")
    appointment_id = await new_request(db, calendar_service, ann, at(WED, 9))
    before = await snapshot(db, appointment_id)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as session:
            await calendar_service.approve(session, appointment_id=appointment_id)
            raise Boom

    assert await snapshot(db, appointment_id) == before
    assert [e.type for e in await events_of(db, f"appointment:{appointment_id}")] == [
        events.BOOKING_REQUESTED
    ]


# --- Subscribers ------------------------------------------------------------------------------------


@pytest.fixture
async def subscribed_db(database_url: str, db: Database) -> Any:
    """The same (wiped) database, opened the way the composition root opens it: with subscribers."""
    subscribers = FollowUps()
    subscribers.subscribe("booking.*", job_follow_up("crm_sync"))
    subscribers.subscribe(events.CLIENT_CREATED, job_follow_up("crm_sync"))
    subscribers.subscribe(events.CLIENT_UPDATED, job_follow_up("crm_sync"))
    subscribed = Database(database_url, subscribers=subscribers)
    try:
        yield subscribed, subscribers
    finally:
        await subscribed.dispose()


async def test_an_integration_subscribes_with_one_line_and_gets_plain_facts(
    subscribed_db: tuple[Database, FollowUps], service: DefaultBookingService
) -> None:
    db, _subscribers = subscribed_db
    ann = await make_customer(db, "ann")
    appointment_id = await new_request(db, service, ann, at(WED, 9))
    async with db.transaction() as session:
        await service.approve(session, appointment_id=appointment_id)

    booking_events = await events_of(db, f"appointment:{appointment_id}")
    assert [e.type for e in booking_events] == [events.BOOKING_REQUESTED, events.BOOKING_CONFIRMED]
    async with db.transaction() as session:
        crm = list(
            (await session.execute(select(Job).where(Job.kind == "crm_sync").order_by(Job.id))).scalars()
        )
    by_event = {j.payload["event_id"]: j for j in crm}
    for event in booking_events:
        assert (
            by_event[event.id].queue_key == f"crm_sync:appointment:{appointment_id}"
        )  # in order per booking
    confirmed = booking_events[1].data
    json.dumps(confirmed)  # plain JSON, as stored
    assert confirmed["booking"]["id"] == appointment_id
    assert confirmed["booking"]["status"] == "confirmed"
    assert confirmed["booking"]["start"] == at(WED, 9).isoformat()
    assert confirmed["booking"]["start_local"].startswith("2027-03-10T09:00:00-05:00")
    assert confirmed["booking"]["pets"] == [{"id": ann.pet_ids[0], "name": "Biscuit"}]


async def test_client_events_reach_subscribers_from_first_contact_and_contact_changes(
    subscribed_db: tuple[Database, FollowUps],
) -> None:
    db, subscribers = subscribed_db
    inbound = InboundMessage(
        channel=Channel.MESSENGER,
        external_user_id="psid-1",
        platform_message_id="m1",
        text="hi",
        display_name="Zoe",
    )
    async with db.transaction() as session:
        result = await ingest(session, inbound)
    registry = JobRegistry()
    events.register_jobs(registry, db=db, subscribers=subscribers)
    async with db.transaction() as session:  # on PostgreSQL the one-statement ingest defers to a job
        dispatch = list((await session.execute(select(Job).where(Job.kind == events.DISPATCH_JOB))).scalars())
    handler = registry.get(events.DISPATCH_JOB)
    assert handler is not None
    for job in dispatch:
        await handler(ClaimedJob(job.id, job.kind, job.payload, 1, job.max_attempts, job.idempotency_key))
        await handler(
            ClaimedJob(job.id, job.kind, job.payload, 2, job.max_attempts, job.idempotency_key)
        )  # retried

    async with db.transaction() as session:
        await save_contact(session, client_id=result.client_id, email="Zoe@Example.com")
        await save_contact(
            session, client_id=result.client_id, email="zoe@example.com"
        )  # no change: no event

    client_events = await events_of(db, f"client:{result.client_id}")
    assert [e.type for e in client_events] == [events.CLIENT_CREATED, events.CLIENT_UPDATED]
    assert client_events[0].data["client"]["name"] == "Zoe"
    assert client_events[1].data == {
        "client": {"id": result.client_id, "name": "Zoe", "email": "zoe@example.com", "phone": None},
        "changed": ["email"],
    }
    async with db.transaction() as session:
        crm = list(
            (
                await session.execute(select(Job.payload).where(Job.kind == "crm_sync").order_by(Job.id))
            ).scalars()
        )
    assert sorted(j["event_id"] for j in crm) == sorted(e.id for e in client_events)  # once each


async def test_a_chat_needing_kimmie_emits_conversation_handover(
    subscribed_db: tuple[Database, FollowUps],
) -> None:
    from core.conversation.takeover import handover_requested

    db, subscribers = subscribed_db
    subscribers.subscribe(events.CONVERSATION_HANDOVER, job_follow_up("n8n_post"))
    ann = await make_customer(db, "ann")
    async with db.transaction() as session:
        await handover_requested(session, ann.conversation_id, "asked for a human")
    (event,) = await events_of(db, f"conversation:{ann.conversation_id}")
    assert event.type == events.CONVERSATION_HANDOVER
    assert event.data == {"conversation_id": ann.conversation_id, "reason": "asked for a human"}
    async with db.transaction() as session:
        kinds = list((await session.execute(select(Job.kind).order_by(Job.id))).scalars())
    assert kinds[-2:] == ["notify_admin", "n8n_post"]
