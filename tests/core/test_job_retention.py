"""Retention (issue 15): the `prune` job deletes old finished jobs, old de-duplication keys and the
bodies of messages the memory has folded away, in small batches, and keeps everything pending work
or an open conversation still needs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.conversation.memory import SummarizePayload
from core.customers import get_or_create_conversation, get_or_create_identity
from core.db.database import Database
from core.db.models import Conversation, Job, Message, ProcessedEvent, utcnow
from core.jobs import retention
from core.jobs.queue import enqueue
from core.jobs.retention import PRUNE_JOB, PruneSchedule, Retention, enqueue_hourly_prune, register_prune_job
from core.jobs.worker import JobRegistry, Worker
from tests.core.test_jobs import FAST, wait_until
from tests.support import job_kinds  # noqa: F401 - declares the test kinds

DAY = timedelta(days=1)


async def add_job(db: Database, name: str, status: str, age: timedelta, **extra: object) -> int:
    when = utcnow() - age
    async with db.transaction() as session:
        job_id = await enqueue(session, "note", {"name": name}, run_at=when, **extra) or 0  # type: ignore[arg-type]
        finished = when if status not in ("queued", "running") else None
        await session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=finished))
    return job_id


async def job_names(db: Database) -> set[str]:
    async with db.transaction() as session:
        return {job.payload["name"] for job in await session.scalars(select(Job).where(Job.kind == "note"))}


async def conversation_with_history(
    db: Database, external_id: str, *, age: timedelta
) -> tuple[int, list[int]]:
    """Six messages `age` old; the memory has folded the first four into the summary."""
    async with db.transaction() as session:
        identity = await get_or_create_identity(session, "telegram", external_id)
        conversation = await get_or_create_conversation(session, identity)
        rows = [
            Message(
                conversation_id=conversation.id,
                channel="telegram",
                direction="in",
                author="customer",
                text="my dog Rex is 30 kg",
                attachments=[{"type": "photo", "file_id": "f1"}],
                delivery_status="received",
                platform_message_id=f"{external_id}-1",
            ),
            Message(
                conversation_id=conversation.id,
                channel="telegram",
                direction="out",
                author="assistant",
                text="Rex sounds lovely",
                quick_replies=[{"title": "Book"}],
                delivery_status="sent",
            ),
            Message(
                conversation_id=conversation.id,
                channel="telegram",
                direction="out",
                author="assistant",
                text="still being sent",
                delivery_status="pending",
            ),
            Message(
                conversation_id=conversation.id,
                channel="telegram",
                direction="out",
                author="assistant",
                text="never arrived",
                delivery_status="dead",
            ),
            Message(
                conversation_id=conversation.id,
                channel="telegram",
                direction="in",
                author="customer",
                text="Saturday?",
                delivery_status="received",
                platform_message_id=f"{external_id}-5",
            ),
            Message(
                conversation_id=conversation.id,
                channel="telegram",
                direction="out",
                author="assistant",
                text="Saturday at 10",
                delivery_status="sent",
            ),
        ]
        session.add_all(rows)
        await session.flush()
        for row in rows:
            row.created_at = utcnow() - age
        conversation.summary = "Rex, 30 kg"
        conversation.summary_until_message_id = rows[3].id
        return conversation.id, [row.id for row in rows]


async def bodies(db: Database, ids: list[int]) -> list[str]:
    async with db.transaction() as session:
        rows = {m.id: m for m in await session.scalars(select(Message).where(Message.id.in_(ids)))}
    return [rows[i].text for i in ids]


async def test_prune_keeps_pending_work_and_deletes_the_rest(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches, each its own transaction
    for n in range(5):
        await add_job(db, f"old-done-{n}", "done", 8 * DAY)
    await add_job(db, "old-cancelled", "cancelled", 8 * DAY)
    await add_job(db, "recent-done", "done", 6 * DAY)
    await add_job(db, "dead-3-weeks", "dead", 21 * DAY)
    await add_job(db, "dead-2-months", "dead", 60 * DAY)
    # Pending work, however old: a job overdue for weeks, one running, one far in the future.
    await add_job(db, "overdue-queued", "queued", 40 * DAY, queue_key="conversation:999")
    await add_job(db, "running", "running", 40 * DAY)
    async with db.transaction() as session:
        await enqueue(session, "note", {"name": "reminder"}, run_at=utcnow() + 30 * DAY)
        session.add_all(
            [
                ProcessedEvent(source="telegram", event_id="1", created_at=utcnow() - 8 * DAY),
                ProcessedEvent(source="stripe", event_id="evt_1", created_at=utcnow() - 8 * DAY),
                ProcessedEvent(source="telegram", event_id="2", created_at=utcnow() - DAY),
            ]
        )

    _folded, folded_ids = await conversation_with_history(db, "folded", age=40 * DAY)
    busy, busy_ids = await conversation_with_history(db, "busy", age=40 * DAY)
    taken_over, taken_over_ids = await conversation_with_history(db, "taken-over", age=40 * DAY)
    _recent, recent_ids = await conversation_with_history(db, "recent", age=10 * DAY)
    async with db.transaction() as session:
        # A summary still pending on one conversation reads the folded messages.
        await enqueue(
            session,
            "summarize_conversation",
            SummarizePayload(conversation_id=busy, until=0, lines=["Rex, 30 kg"]).dump(),
            queue_key=f"summarize:{busy}",
        )
        await session.execute(
            update(Conversation).where(Conversation.id == taken_over).values(human_takeover=True)
        )

    removed, more = await retention.prune(db, retention=Retention())

    assert await job_names(db) == {"recent-done", "dead-3-weeks", "overdue-queued", "running", "reminder"}
    async with db.transaction() as session:
        events = {(e.source, e.event_id) for e in await session.scalars(select(ProcessedEvent))}
    assert events == {("telegram", "2")}
    # Folded and delivered: the text goes. Pending/dead (Kimmie sees them) and the verbatim part stay.
    assert await bodies(db, folded_ids) == [
        "",
        "",
        "still being sent",
        "never arrived",
        "Saturday?",
        "Saturday at 10",
    ]
    async with db.transaction() as session:
        first = await session.get(Message, folded_ids[0])
        assert first is not None
        assert (first.attachments, first.platform_message_id) == ([], "folded-1")  # still de-duplicates
        second = await session.get(Message, folded_ids[1])
        assert second is not None and second.quick_replies == []
    for ids in (busy_ids, taken_over_ids, recent_ids):
        assert (await bodies(db, ids))[:2] == ["my dog Rex is 30 kg", "Rex sounds lovely"]
    assert removed == {"jobs": 7, "processed_events": 2, "message_bodies": 2}
    assert more is False


async def test_the_hourly_prune_is_queued_once_per_hour_and_runs_in_a_worker(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = JobRegistry()
    register_prune_job(registry, db=db, retention=Retention())
    await add_job(db, "old-done", "done", 8 * DAY)
    schedule = PruneSchedule(db, first_after_s=0)
    await schedule.start()
    try:
        await wait_until(lambda: _prune_jobs(db, 1), timeout_s=10)
    finally:
        await schedule.stop()
    await enqueue_hourly_prune(db)  # another process's clock, the same hour: still one job

    assert await Worker(db, registry, FAST).run_once() == 1
    assert await job_names(db) == set()
    async with db.transaction() as session:
        rows = list(await session.scalars(select(Job).where(Job.kind == PRUNE_JOB)))
    assert [row.status for row in rows] == ["done"]  # nothing left waiting in the queue

    # A run that stops with work left comes back in a minute.
    monkeypatch.setattr(retention, "BATCH", 1)
    monkeypatch.setattr(retention, "MAX_BATCHES", 2)
    for n in range(3):
        await add_job(db, f"old-{n}", "done", 8 * DAY)
    await enqueue_hourly_prune(db, now=utcnow() + timedelta(hours=1))
    assert await Worker(db, registry, FAST).run_once() == 1
    assert await job_names(db) == {"old-2"}
    async with db.transaction() as session:
        later = await session.scalar(select(Job).where(Job.kind == PRUNE_JOB, Job.status == "queued"))
    assert later is not None and timedelta(0) < later.run_at - utcnow() <= timedelta(minutes=1)


async def _prune_jobs(db: Database, n: int) -> bool:
    async with db.transaction() as session:
        return len(list(await session.scalars(select(Job.id).where(Job.kind == PRUNE_JOB)))) == n
