"""Typed job payloads: every job kind the process runs has a model, a payload that does not match it
is refused where it is queued (and the business change with it), and one stored malformed anyway
(an older deploy, a hand-edited row) ends its job dead at once instead of failing eight times.

The process is the real composition root (build_runtime) with every job-registering integration
configured against local fakes: Telegram (fake Bot API), Google Calendar (OAuth client), the e-mail
fallback (in-process SMTP server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from cheshire.runtime import Runtime, build_runtime
from core.alerts import NOTIFY_ADMIN_JOB, notify_admin
from core.conversation.ingest import PROCESS_JOB, ingest
from core.db.database import Database
from core.db.models import Client, Job, utcnow
from core.events import CLIENT_CREATED, DISPATCH_JOB, EventPayload, FollowUps, job_follow_up
from core.jobs.payloads import JobPayloadError, check_payload, job_payload, payload_model
from core.jobs.queue import DEFAULT_MAX_ATTEMPTS, NewJob, enqueue, enqueue_many
from core.outbox import DELIVER_JOB
from core.types import Channel, InboundMessage
from tests.bot.conftest import make_settings
from tests.fakes.smtp_server import FakeSMTPServer
from tests.fakes.telegram_api import FakeTelegramAPI

# What the fully configured process registers. Listed, so that a kind which stops being wired (and
# so escapes the check below) fails this test instead of passing it vacuously.
EXPECTED_KINDS = {
    "notify_admin",
    "notify_admin_email",
    "expire_hold",
    "booking_reminder",
    "booking_rebook_nudge",
    "calendar_upsert",
    "calendar_delete",
    "fetch_profile",
    "process_message",
    "summarize_conversation",
    "deliver_message",
    "dispatch_event",
    "telegram_prune_events",
}


@job_payload("payload_probe")
class ProbePayload(EventPayload):
    """An integration's event job, for the SQL-built payloads below."""


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def runtime(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI, smtp: FakeSMTPServer
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        database_url,
        telegram_api_base=fake_tg.base_url,
        admin_email="kimmie@lookingglass.test",
        smtp_url=smtp.url(),
        google_client_id="client-1.apps.googleusercontent.com",
        google_client_secret="client-secret",
        google_calendar_api_base="http://127.0.0.1:9/calendar",  # never reached: nothing is confirmed
    )
    rt = build_runtime(settings)
    try:
        yield rt
    finally:
        if rt.telegram is not None:
            await rt.telegram.close()
        await rt.db.dispose()


def test_every_job_kind_of_the_process_has_a_payload_model(runtime: Runtime) -> None:
    kinds = runtime.registry.kinds
    assert kinds >= EXPECTED_KINDS
    assert sorted(kind for kind in kinds if payload_model(kind) is None) == []
    for kind in kinds:  # and each model refuses what it does not know, rather than dropping it
        with pytest.raises(JobPayloadError, match=r"extra|not permitted"):
            check_payload(kind, {"apointment_id": 7})


async def counts(db: Database) -> tuple[int, int]:
    async with db.transaction() as session:
        clients = await session.scalar(select(func.count()).select_from(Client))
        jobs = await session.scalar(select(func.count()).select_from(Job))
    return int(clients or 0), int(jobs or 0)


@pytest.mark.parametrize(
    "kind, payload, wrong",
    [
        (DELIVER_JOB, {"message_id": "the last one"}, "message_id"),  # not an id
        (DELIVER_JOB, {}, "message_id"),  # missing
        (PROCESS_JOB, {"message_id": 1, "conversation": 2}, "conversation"),  # a misspelt key
        (NOTIFY_ADMIN_JOB, {"type": "booking_request"}, "appointment_id"),  # its type needs a booking
        (NOTIFY_ADMIN_JOB, {"type": "gossip", "text": "hi"}, "type"),  # no such notification
        ("no_such_kind", {}, "no payload model"),
    ],
)
async def test_a_bad_payload_is_refused_at_enqueue_and_the_change_rolls_back(
    db: Database, kind: str, payload: dict[str, Any], wrong: str
) -> None:
    with pytest.raises(JobPayloadError, match=wrong):
        async with db.transaction() as session:
            session.add(Client(name="Alice"))
            await session.flush()  # the business change is written...
            await enqueue(session, kind, payload)
    assert await counts(db) == (0, 0)  # ...and gone with the job that was refused


async def test_one_bad_payload_refuses_the_whole_batch(db: Database) -> None:
    good = NewJob(DELIVER_JOB, {"message_id": 1}, idempotency_key="deliver:1")
    bad = NewJob(DELIVER_JOB, {"message_id": 2, "text": "hi"}, idempotency_key="deliver:2")
    with pytest.raises(JobPayloadError, match="text"):
        async with db.transaction() as session:
            session.add(Client(name="Alice"))
            await enqueue_many(session, [good, bad])
    assert await counts(db) == (0, 0)


async def test_a_use_case_queueing_a_bad_notification_writes_nothing(db: Database) -> None:
    with pytest.raises(JobPayloadError, match="conversation_id"):
        async with db.transaction() as session:
            session.add(Client(name="Alice"))
            await notify_admin(session, "handover", reason="asked for a human")  # whose conversation?
    assert await counts(db) == (0, 0)


async def test_a_stored_malformed_payload_makes_its_job_dead_at_once(runtime: Runtime, db: Database) -> None:
    """Every kind of the process: a row written past the check (SQL, an older deploy) with a payload
    its model refuses runs once, ends dead, and says which field is wrong."""
    kinds = sorted(runtime.registry.kinds)
    async with db.transaction() as session:
        for kind in kinds:
            session.add(
                Job(
                    kind=kind,
                    payload={"apointment_id": "seven"},
                    status="queued",
                    run_at=utcnow(),
                    attempts=0,
                    max_attempts=DEFAULT_MAX_ATTEMPTS,
                    created_at=utcnow(),
                )
            )
    for _ in kinds:  # one job per round (batch 1); the dead-job alerts it queues wait their turn
        await runtime.worker.run_once()
    async with db.transaction() as session:
        rows = (await session.execute(select(Job).where(Job.kind.in_(kinds)).order_by(Job.id))).scalars()
        malformed = [job for job in rows if "apointment_id" in job.payload]
    assert [(job.kind, job.status, job.attempts) for job in malformed] == [
        (kind, "dead", 1) for kind in kinds
    ]
    for job in malformed:
        assert job.last_error is not None
        assert job.last_error.startswith("JobPayloadError") and "apointment_id" in job.last_error


async def test_payloads_built_in_sql_match_their_models(database_url: str, db: Database) -> None:
    """PostgreSQL's one-statement ingest writes process_message and dispatch_event jobs in SQL, past
    `enqueue`: what it stores must be what the models (and so the handlers) accept."""
    subscribers = FollowUps()
    subscribers.subscribe(CLIENT_CREATED, job_follow_up("payload_probe"))
    subscribed = Database(database_url, subscribers=subscribers)
    try:
        async with subscribed.transaction() as session:
            await ingest(
                session,
                InboundMessage(
                    channel=Channel.MESSENGER,
                    external_user_id="psid-1",
                    platform_message_id="m1",
                    text="hi",
                    display_name="Zoe",
                ),
            )
    finally:
        await subscribed.dispose()
    async with db.transaction() as session:
        jobs = list((await session.execute(select(Job).order_by(Job.id))).scalars())
    assert PROCESS_JOB in {job.kind for job in jobs}
    assert {job.kind for job in jobs} & {DISPATCH_JOB, "payload_probe"}  # either path started the follow-up
    for job in jobs:
        check_payload(job.kind, job.payload)
