"""The durable job queue, on both databases: what a caller and an operator can observe.

Time is driven by moving `run_at` / `locked_until` into the past rather than by sleeping.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from cheshire.runtime import _alert_on_dead_job
from core.db.database import Database
from core.db.models import AdminAlert, Job, utcnow
from core.jobs import __main__ as jobs_cli
from core.jobs import queue
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater, enqueue
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from tests.support import job_kinds

FAST = WorkerConfig(concurrency=1, poll_interval_s=0.02, lease_s=30.0)


async def job_row(db: Database, job_id: int) -> Job:
    async with db.transaction() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def make_due(db: Database, job_id: int) -> None:
    """Pretend the scheduled time has come."""
    async with db.transaction() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(run_at=utcnow() - timedelta(seconds=1))
        )


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.01)


async def count_jobs(db: Database, status: str) -> int:
    async with db.transaction() as session:
        count = await session.scalar(select(func.count()).select_from(Job).where(Job.status == status))
    return int(count or 0)


def recording_registry(kind: str = "note") -> tuple[JobRegistry, list[ClaimedJob]]:
    registry = JobRegistry()
    ran: list[ClaimedJob] = []

    async def handler(job: ClaimedJob) -> None:
        ran.append(job)

    registry.register(kind, handler)
    return registry, ran


async def test_a_job_runs_once_and_is_done(db: Database) -> None:
    registry, ran = recording_registry()
    async with db.transaction() as session:
        job_id = await enqueue(session, "note", job_kinds.NotePayload(text="hello").dump())
    worker = Worker(db, registry, FAST)

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert [(job.id, job.payload) for job in ran] == [(job_id, {"text": "hello"})]
    row = await job_row(db, job_id or 0)
    assert (row.status, row.attempts, row.locked_by) == ("done", 1, None)


async def test_job_enqueued_in_a_rolled_back_transaction_never_runs(db: Database) -> None:
    registry, ran = recording_registry()
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await enqueue(session, "note", {"text": "lost"})
            raise RuntimeError("the business change failed")

    assert await Worker(db, registry, FAST).run_once() == 0
    assert ran == []
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0


async def test_failures_back_off_exponentially_then_the_job_is_dead_and_listed(
    db: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = JobRegistry()

    async def broken(job: ClaimedJob) -> None:
        raise ConnectionError(f"calendar unreachable (attempt {job.attempts})")

    registry.register("sync_calendar", broken)
    async with db.transaction() as session:
        job_id = await enqueue(session, "sync_calendar", {"appointment_id": 7}, max_attempts=5) or 0
    worker = Worker(db, registry, FAST)

    delays = []
    for attempt in range(1, 5):
        before = utcnow()
        assert await worker.run_once() == 1
        row = await job_row(db, job_id)
        assert (row.status, row.attempts) == ("queued", attempt)
        assert row.last_error == f"ConnectionError: calendar unreachable (attempt {attempt})"
        delays.append((row.run_at - before).total_seconds())
        # Not due yet: nothing runs until its time comes.
        assert await worker.run_once() == 0
        await make_due(db, job_id)

    # Each delay lies in [c/2, c] with c = 2 s * 2^(attempt-1): it at least doubles the floor each time.
    for attempt, delay in enumerate(delays, start=1):
        ceiling = queue.BACKOFF_BASE_S * 2 ** (attempt - 1)
        assert ceiling / 2 - 0.5 <= delay <= ceiling + 0.5, (attempt, delays)
    assert delays[3] > delays[0] * 2

    assert await worker.run_once() == 1
    row = await job_row(db, job_id)
    assert (row.status, row.attempts) == ("dead", 5)
    async with db.transaction() as session:
        dead = await queue.dead_jobs(session)
    assert [(job.id, job.last_error) for job in dead] == [
        (job_id, "ConnectionError: calendar unreachable (attempt 5)")
    ]

    # The operator's view: the CLI lists it with its error, and can run it again.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await asyncio.to_thread(jobs_cli.main, ["dead"]) == 0
    out = capsys.readouterr().out
    assert f"#{job_id}  sync_calendar  attempts=5/5" in out
    assert "ConnectionError: calendar unreachable (attempt 5)" in out
    assert await asyncio.to_thread(jobs_cli.main, ["retry", str(job_id)]) == 0
    row = await job_row(db, job_id)
    assert (row.status, row.attempts) == ("queued", 0)
    assert await asyncio.to_thread(jobs_cli.main, ["retry", str(job_id)]) == 1  # no longer dead


async def test_retry_later_uses_the_given_delay(db: Database) -> None:
    registry = JobRegistry()

    async def throttled(job: ClaimedJob) -> None:
        raise RetryLater(30, "telegram says retry after 30 s")

    registry.register("send", throttled)
    async with db.transaction() as session:
        job_id = await enqueue(session, "send") or 0
    before = utcnow()
    await Worker(db, registry, FAST).run_once()

    row = await job_row(db, job_id)
    assert row.status == "queued"
    assert 29 <= (row.run_at - before).total_seconds() <= 31
    assert row.last_error is not None and "telegram says retry after 30 s" in row.last_error


async def test_permanent_error_is_dead_at_once_and_alerts_kimmie_once_per_kind(db: Database) -> None:
    registry = JobRegistry()

    async def rejected(job: ClaimedJob) -> None:
        raise PermanentJobError("recipient does not exist")

    registry.register("send", rejected)
    registry.dead_listeners.append(_alert_on_dead_job(db))
    async with db.transaction() as session:
        first = await enqueue(session, "send", {"n": 1}) or 0
        second = await enqueue(session, "send", {"n": 2}) or 0
    worker = Worker(db, registry, FAST)
    assert await worker.run_once() == 1
    assert await worker.run_once() == 1

    for job_id in (first, second):
        row = await job_row(db, job_id)
        assert (row.status, row.attempts) == ("dead", 1)
        assert row.last_error == "PermanentJobError: recipient does not exist"
    async with db.transaction() as session:
        alert = (await session.execute(select(AdminAlert))).scalar_one()
        notices = list(await session.scalars(select(Job).where(Job.kind == "notify_admin")))
    assert alert.fault_key == "job_dead:send" and alert.occurrences == 2
    assert len(notices) == 1
    assert notices[0].payload["type"] == "alert"
    assert "send" in notices[0].payload["text"] and "recipient does not exist" in notices[0].payload["text"]


async def test_unknown_job_kind_is_dead_with_a_clear_error(db: Database) -> None:
    async with db.transaction() as session:
        job_id = await enqueue(session, "nobody_handles_this") or 0
    await Worker(db, JobRegistry(), FAST).run_once()
    row = await job_row(db, job_id)
    assert row.status == "dead"
    assert row.last_error == "no handler for job kind 'nobody_handles_this'"


async def test_scheduled_job_waits_for_run_at(db: Database) -> None:
    registry, ran = recording_registry("reminder")
    async with db.transaction() as session:
        job_id = await enqueue(session, "reminder", run_at=utcnow() + timedelta(hours=24)) or 0
    worker = Worker(db, registry, FAST)

    assert await worker.run_once() == 0
    assert ran == []
    await make_due(db, job_id)
    assert await worker.run_once() == 1
    assert [job.id for job in ran] == [job_id]


async def test_idempotency_key_dedupes_and_cancel_frees_it(db: Database) -> None:
    async with db.transaction() as session:
        first = await enqueue(session, "reminder", {"n": 1}, idempotency_key="reminder:appointment:9")
        again = await enqueue(session, "reminder", {"n": 2}, idempotency_key="reminder:appointment:9")
    assert first is not None and again is None
    async with db.transaction() as session:
        rows = list(await session.scalars(select(Job)))
    assert [(job.id, job.payload) for job in rows] == [(first, {"n": 1})]

    # Rescheduling an appointment cancels its pending reminder; the key can then be used again.
    async with db.transaction() as session:
        assert await queue.cancel_jobs(session, idempotency_key="reminder:appointment:9") == 1
        moved = await enqueue(session, "reminder", {"n": 3}, idempotency_key="reminder:appointment:9")
    assert moved is not None
    assert (await job_row(db, first)).status == "cancelled"


async def test_expired_lease_is_picked_up_again(db: Database) -> None:
    registry, ran = recording_registry()
    async with db.transaction() as session:
        job_id = await enqueue(session, "note") or 0
    # A worker claims it and dies without finishing.
    async with db.transaction() as session:
        [claimed] = await queue.claim(session, worker_id="crashed-worker", lease_s=60)
    assert claimed.id == job_id
    worker = Worker(db, registry, FAST)
    assert await worker.run_once() == 0  # the lease still holds

    async with db.transaction() as session:
        # The lease runs out (a running job's run_at is its lease end).
        past = utcnow() - timedelta(seconds=1)
        await session.execute(update(Job).where(Job.id == job_id).values(locked_until=past, run_at=past))
    assert await worker.run_once() == 1
    assert [job.attempts for job in ran] == [2]
    row = await job_row(db, job_id)
    assert (row.status, row.locked_by) == ("done", None)

    # The crashed worker's late bookkeeping cannot touch a job it no longer holds.
    async with db.transaction() as session:
        assert await queue.complete(session, job_id, worker_id="crashed-worker") is False
        assert await queue.fail(session, claimed, worker_id="crashed-worker", error="late") == "lost"
    assert (await job_row(db, job_id)).status == "done"


async def test_jobs_with_the_same_queue_key_run_strictly_in_order(database_url: str, db: Database) -> None:
    registry = JobRegistry()
    running: dict[str, int] = defaultdict(int)
    order: dict[str, list[int]] = defaultdict(list)
    overlaps: list[str] = []

    async def handle(job: ClaimedJob) -> None:
        key = job.payload["conversation"]
        running[key] += 1
        if running[key] > 1:
            overlaps.append(key)
        await asyncio.sleep(0)  # let the other loops run while this one "works"
        order[key].append(job.payload["seq"])
        running[key] -= 1

    registry.register("ordered", handle)
    keys = ["a", "b", "c"]
    async with db.transaction() as session:
        for seq in range(10):
            for key in keys:
                await enqueue(
                    session,
                    "ordered",
                    job_kinds.OrderedPayload(conversation=key, seq=seq).dump(),
                    queue_key=f"conv:{key}",
                )
    other_db = Database(database_url)  # a second process's pool
    config = WorkerConfig(concurrency=4, poll_interval_s=0.01, lease_s=30.0, batch=2)
    workers = [Worker(db, registry, config), Worker(other_db, registry, config)]
    try:
        for worker in workers:
            worker.start()
        await wait_until(lambda: _all_done(db, 30))
    finally:
        for worker in workers:
            await worker.stop()
        await other_db.dispose()

    assert overlaps == []
    assert dict(order) == {key: list(range(10)) for key in keys}


async def _all_done(db: Database, total: int) -> bool:
    return await count_jobs(db, "done") == total


@pytest.mark.postgres_only
async def test_two_workers_never_run_the_same_job_twice(database_url: str, db: Database) -> None:
    total = 300
    runs: Counter[int] = Counter()
    registry = JobRegistry()

    async def effect(job: ClaimedJob) -> None:
        runs[job.payload["n"]] += 1
        await asyncio.sleep(0)

    registry.register("effect", effect)
    async with db.transaction() as session:
        for n in range(total):
            await enqueue(session, "effect", {"n": n})
    other_db = Database(database_url)
    workers = [
        Worker(db, registry, WorkerConfig(concurrency=4, poll_interval_s=0.01, batch=1)),
        Worker(other_db, registry, WorkerConfig(concurrency=4, poll_interval_s=0.01, batch=5)),
    ]
    try:
        for worker in workers:
            worker.start()
        await wait_until(lambda: _all_done(db, total))
    finally:
        for worker in workers:
            await worker.stop()
        await other_db.dispose()

    assert set(runs) == set(range(total))
    assert [n for n, count in runs.items() if count != 1] == []
    async with db.transaction() as session:
        by_worker = dict(
            (await session.execute(select(Job.attempts, func.count()).group_by(Job.attempts))).all()
        )
    assert by_worker == {1: total}


async def test_graceful_stop_releases_in_flight_jobs(db: Database) -> None:
    registry = JobRegistry()
    started = asyncio.Event()

    async def slow(job: ClaimedJob) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes on its own

    registry.register("slow", slow)
    async with db.transaction() as session:
        job_id = await enqueue(session, "slow") or 0
    worker = Worker(db, registry, WorkerConfig(concurrency=2, poll_interval_s=0.01))
    worker.start()
    await asyncio.wait_for(started.wait(), timeout=10)
    await worker.stop(timeout_s=0.05)

    row = await job_row(db, job_id)
    # Back in the queue, as if never tried: the next process runs it at once.
    assert (row.status, row.attempts, row.locked_by, row.locked_until) == ("queued", 0, None, None)
    assert row.run_at <= utcnow()


async def test_graceful_stop_lets_a_running_job_finish(db: Database) -> None:
    registry = JobRegistry()
    started, proceed = asyncio.Event(), asyncio.Event()

    async def short(job: ClaimedJob) -> None:
        started.set()
        await proceed.wait()

    registry.register("short", short)
    async with db.transaction() as session:
        job_id = await enqueue(session, "short") or 0
    worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.01))
    worker.start()
    await asyncio.wait_for(started.wait(), timeout=10)
    stopping = asyncio.create_task(worker.stop(timeout_s=30))
    await asyncio.sleep(0)
    proceed.set()
    await stopping
    assert (await job_row(db, job_id)).status == "done"


async def test_handler_cut_off_at_its_timeout_is_retried(db: Database) -> None:
    registry = JobRegistry()

    async def hangs(job: ClaimedJob) -> None:
        await asyncio.Event().wait()

    registry.register("hangs", hangs)
    async with db.transaction() as session:
        job_id = await enqueue(session, "hangs") or 0
    await Worker(db, registry, WorkerConfig(concurrency=1, lease_s=0.1)).run_once()
    row = await job_row(db, job_id)
    assert row.status == "queued" and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("timed out")


async def test_worker_wakes_when_a_job_is_committed(db: Database) -> None:
    registry, ran = recording_registry()
    # A poll interval far longer than the test: only the commit wake-up can make it run.
    worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=3600))
    worker.start()
    try:
        await asyncio.sleep(0.05)  # the loop has found nothing and sleeps
        async with db.transaction() as session:
            await enqueue(session, "note")
        await wait_until(lambda: _all_done(db, 1), timeout_s=10)
    finally:
        await worker.stop()
    assert len(ran) == 1


async def test_workers_step_aside_while_ingest_is_in_flight_then_run(db: Database) -> None:
    """Accept fast, answer soon: a job committed while a webhook's write is in flight waits for it."""
    registry, ran = recording_registry()
    # Bounds far longer than the test: only the end of the foreground write can let the job run.
    config = WorkerConfig(concurrency=1, poll_interval_s=3600, yield_to_ingest_s=3600)
    worker = Worker(db, registry, config)
    worker.start()
    try:
        await asyncio.sleep(0.05)  # the loop has found nothing and sleeps
        with db.foreground.running():
            async with db.transaction() as session:
                job_id = await enqueue(session, "note")  # the commit wakes the worker
            await asyncio.sleep(0.2)
            assert ran == []
            assert (await job_row(db, job_id or 0)).status == "queued"
        await wait_until(lambda: _all_done(db, 1), timeout_s=10)
    finally:
        await worker.stop()
    assert [job.id for job in ran] == [job_id]


async def test_a_flood_of_ingest_does_not_starve_the_workers(db: Database) -> None:
    """Foreground writes that never stop delay each job by at most `yield_to_ingest_s`, never forever."""
    registry, ran = recording_registry()
    worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=3600, yield_to_ingest_s=0.05))
    with db.foreground.running():  # busy for the whole test
        async with db.transaction() as session:
            for n in range(3):
                await enqueue(session, "note", job_kinds.NotePayload(text=f"reply {n}").dump())
        worker.start()
        try:
            await wait_until(lambda: _all_done(db, 3), timeout_s=10)
        finally:
            await worker.stop()
    assert sorted(job.payload["text"] for job in ran) == ["reply 0", "reply 1", "reply 2"]
