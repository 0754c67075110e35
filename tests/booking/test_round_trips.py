"""A booking request's round trips, and the insert batch that keeps them few (issues 10 and 16).

The statements a request sends are listed here, so a change that adds one shows up as a failing test
rather than as a slower bench nobody ran. The batch itself: rows written in order (a queue key's later
job waits behind the earlier), nested blocks share one write, and a failure writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Table, event, func, select
from sqlalchemy.exc import IntegrityError

from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.db.insert_batch import inserts_together
from core.db.models import AppointmentPet, DomainEvent, Job
from core.jobs.queue import NewJob, enqueue, enqueue_many
from core.types import Channel
from tests.booking.conftest import make_customer
from tests.support import job_kinds  # noqa: F401 - declares the test kinds

pytestmark = pytest.mark.usefixtures("catalog_db")
NY = ZoneInfo("America/New_York")
WED = date(2027, 3, 10)


@contextmanager
def statements_sent(db: Database) -> Iterator[list[str]]:
    """Every SQL statement the engine sends meanwhile (BEGIN/COMMIT are not statements here)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE goes through the cursor
            sent.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


def verb(statement: str) -> str:
    """'SELECT service', 'INSERT appointment', 'WITH ... INSERT job': what a statement does to what."""
    words = statement.replace("(", " ").split()
    if words[0] == "WITH":
        targets = [words[i + 2] for i, w in enumerate(words[:-2]) if w == "INSERT" and words[i + 1] == "INTO"]
        return "INSERT " + "+".join(sorted(targets))
    if words[0] == "INSERT":
        return f"INSERT {words[2]}"
    if words[0] == "SELECT" and "pg_advisory_xact_lock" in statement:
        return "LOCK day"
    table = words[words.index("FROM") + 1] if "FROM" in words else "?"
    return f"{words[0]} {table}"


async def test_a_booking_request_is_seven_statements_its_tail_one(
    db: Database, service: DefaultBookingService
) -> None:
    ann = await make_customer(db, "ann")
    start = datetime.combine(WED, time(9), tzinfo=NY).astimezone(UTC)
    async with db.transaction() as session:
        jobs_before = await session.scalar(select(func.coalesce(func.max(Job.id), 0)))
    async with db.transaction() as session:  # the rules are parsed once per change of the config
        await service.find_slots(session, service_code="full_groom", pet_ids=ann.pet_ids, limit=1)
    with statements_sent(db) as sent:
        async with db.transaction() as session:
            booking = await service.request_booking(
                session,
                client_id=ann.client_id,
                service_code="full_groom",
                pet_ids=ann.pet_ids,
                start=start,
                source_channel=Channel.TELEGRAM,
            )
    reads = ["SELECT business_config", "SELECT service", "SELECT pet"]  # the config: its stamp only
    if db.dialect == "postgresql":
        # The appointment with its pets, then the event with its two jobs (the hold's expiry and
        # Kimmie's card): a statement each.
        assert [verb(s) for s in sent] == [
            *reads,
            "LOCK day",
            "SELECT appointment",
            "INSERT appointment+appointment_pet",
            "INSERT domain_event+job",
        ]
    else:  # in process: one statement per table, nothing to save
        writes = ["INSERT appointment", "INSERT appointment_pet", "INSERT domain_event", "INSERT job"]
        assert [verb(s) for s in sent] == [*reads, "SELECT appointment", *writes]

    async with db.transaction() as session:
        pets = await session.scalars(
            select(AppointmentPet.pet_id).where(AppointmentPet.appointment_id == booking.id)
        )
        kinds = await session.scalars(select(Job.kind).where(Job.id > jobs_before).order_by(Job.id))
        subjects = await session.scalars(
            select(DomainEvent.subject).where(DomainEvent.type == "booking.requested")
        )
        assert list(pets) == ann.pet_ids
        assert list(kinds) == ["expire_hold", "notify_admin"]
        assert list(subjects) == [f"appointment:{booking.id}"]


async def test_batched_jobs_keep_their_order_behind_a_queue_key(db: Database) -> None:
    async with db.transaction() as session:
        async with inserts_together(session):
            await enqueue(session, "note", {"n": 0}, queue_key="conv:7")
            async with inserts_together(session):  # nested: the same batch, one write at the end
                await enqueue_many(session, [NewJob("note", {"n": n}, queue_key="conv:7") for n in (1, 2)])
            assert await session.scalar(select(func.count()).select_from(Job)) == 0  # not written yet
    async with db.transaction() as session:
        rows = (await session.execute(select(Job.payload, Job.blocked).order_by(Job.id))).all()
    assert [(payload["n"], bool(blocked)) for payload, blocked in rows] == [(0, False), (1, True), (2, True)]


async def test_a_batch_that_fails_writes_nothing_of_itself(db: Database) -> None:
    ann = await make_customer(db, "ann")
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            async with inserts_together(session) as batch:
                await enqueue(session, "note", {"n": 1})
                # A pet row for an appointment that does not exist: the foreign key refuses the write.
                batch.add(
                    cast(Table, AppointmentPet.__table__),
                    [{"appointment_id": 999_999, "pet_id": ann.pet_ids[0]}],
                )
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        assert await session.scalar(select(func.count()).select_from(AppointmentPet)) == 0
