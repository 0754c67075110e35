"""One running job per queue key, in order, without the claim walking the jobs that wait (issue 16).

`job.blocked` is kept by database triggers: these tests check the flag through what a worker does
(what runs, in which order) and, on PostgreSQL, that the claim's plan reads a bounded number of
rows however many jobs wait behind busy keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from core.db.database import Database
from core.db.models import Job, utcnow
from core.jobs import queue
from core.jobs.queue import ClaimedJob, NewJob, RetryLater, enqueue, enqueue_many
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from tests.core.test_jobs import count_jobs, job_row, wait_until
from tests.support import job_kinds  # noqa: F401 - declares the test kinds


async def blocked_flags(db: Database, key: str) -> list[tuple[str, bool]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(Job.status, Job.blocked).where(Job.queue_key == key).order_by(Job.id)
        )
    return [(status, bool(blocked)) for status, blocked in rows]


async def test_a_keys_later_jobs_wait_and_the_next_is_freed_when_the_head_finishes(db: Database) -> None:
    async with db.transaction() as session:
        await enqueue_many(session, [NewJob("note", {"n": n}, queue_key="conv:1") for n in range(3)])
        await enqueue(session, "note", {"n": 3}, queue_key="conv:1")
        await enqueue(session, "note", {"n": 9}, queue_key="conv:2")
    assert await blocked_flags(db, "conv:1") == [
        ("queued", False),
        ("queued", True),
        ("queued", True),
        ("queued", True),
    ]
    assert await blocked_flags(db, "conv:2") == [("queued", False)]

    # The head done: the next one is free, the others still wait.
    async with db.transaction() as session:
        claimed = await queue.claim(session, worker_id="w", lease_s=30, limit=10)
    assert sorted(job.payload["n"] for job in claimed) == [0, 9]  # one per key
    head = next(job for job in claimed if job.payload["n"] == 0)
    async with db.transaction() as session:
        assert await queue.complete(session, head.id, worker_id="w")
    assert await blocked_flags(db, "conv:1") == [
        ("done", False),
        ("queued", False),
        ("queued", True),
        ("queued", True),
    ]

    # A head that dies, or is cancelled, frees the next one too; one run again queues up behind.
    async with db.transaction() as session:
        [second] = await queue.claim(session, worker_id="w", lease_s=30)
        assert await queue.fail(session, second, worker_id="w", error="boom", permanent=True) == "dead"
    assert await blocked_flags(db, "conv:1") == [
        ("done", False),
        ("dead", False),
        ("queued", False),
        ("queued", True),
    ]
    assert await queue_retry(db, second.id)
    assert await blocked_flags(db, "conv:1") == [
        ("done", False),
        ("queued", True),
        ("queued", False),
        ("queued", True),
    ]
    async with db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.queue_key == "conv:1", ~Job.blocked, Job.status == "queued")
            .values(status="cancelled")
        )
    # The lowest live id goes next: the job run again.
    assert await blocked_flags(db, "conv:1") == [
        ("done", False),
        ("queued", False),
        ("cancelled", False),
        ("queued", True),
    ]


async def queue_retry(db: Database, job_id: int) -> bool:
    async with db.transaction() as session:
        return await queue.retry_dead(session, job_id)


async def test_strict_order_per_key_under_four_workers_with_a_head_in_backoff(
    database_url: str, db: Database
) -> None:
    successors = 10_000
    order: dict[str, list[int]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    registry = JobRegistry()

    async def process(job: ClaimedJob) -> None:
        key, seq = job.payload["key"], job.payload["seq"]
        if running[key]:
            overlaps.append(key)
        running[key] += 1
        try:
            if key == "a" and seq == 0 and job.attempts == 1:
                raise RetryLater(0.3, "the model is down")  # the head goes into backoff
            await asyncio.sleep(random.random() / 1000)
            order[key].append(seq)
        finally:
            running[key] -= 1

    registry.register("turn", process)
    async with db.transaction() as session:
        await enqueue_many(
            session,
            [NewJob("turn", {"key": "a", "seq": n}, queue_key="conv:a") for n in range(successors + 1)],
        )
        for n in range(50):  # other customers, interleaved
            await enqueue_many(
                session, [NewJob("turn", {"key": k, "seq": n}, queue_key=f"conv:{k}") for k in ("b", "c")]
            )
    other = Database(database_url)  # a second process's pool
    config = WorkerConfig(concurrency=1, poll_interval_s=0.01, lease_s=30.0, batch=2)
    workers = [Worker(db if n % 2 else other, registry, config) for n in range(4)]
    try:
        for worker in workers:
            worker.start()
        await wait_until(lambda: _drained(order), timeout_s=120)
    finally:
        for worker in workers:
            await worker.stop()
        await other.dispose()

    assert overlaps == []
    assert order["b"] == list(range(50)) and order["c"] == list(range(50))
    # A drained prefix of key a, strictly in order, starting with the head that was in backoff.
    assert order["a"] == list(range(len(order["a"])))
    assert len(order["a"]) >= 200
    assert (await job_row(db, 1)).attempts == 2


async def _drained(order: dict[str, list[int]]) -> bool:
    return len(order["a"]) >= 200 and len(order["b"]) == 50 and len(order["c"]) == 50


async def test_jobs_enqueued_while_the_key_drains_are_never_stranded(database_url: str, db: Database) -> None:
    """An enqueue racing the completion of its key's head: the new job must not stay blocked."""
    registry = JobRegistry()
    seen: list[int] = []

    async def note(job: ClaimedJob) -> None:
        seen.append(job.payload["n"])

    registry.register("note", note)
    producers = Database(database_url)
    worker = Worker(db, registry, WorkerConfig(concurrency=2, poll_interval_s=0.01, batch=1))
    worker.start()

    async def produce(start: int) -> None:
        for n in range(start, start + 40):
            async with producers.transaction() as session:
                await enqueue(session, "note", {"n": n}, queue_key="conv:busy")
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(produce(start) for start in range(0, 200, 40)))
        await wait_until(lambda: _count_done(db, 200), timeout_s=60)
    finally:
        await worker.stop()
        await producers.dispose()
    assert sorted(seen) == list(range(200))
    assert await count_jobs(db, "queued") == 0


async def _count_done(db: Database, total: int) -> bool:
    return await count_jobs(db, "done") == total


# Rows laid down as the triggers would leave them: 1M done, 1k keys each with a running head whose
# lease holds and 100 due jobs blocked behind it, and 10 due jobs without a key.
BACKLOG = [
    """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, finished_at)
       SELECT 'old', '{}', 'done', now() - interval '2 days', 1, 8, now() - interval '2 days',
              now() - interval '2 days'
       FROM generate_series(1, 1000000)""",
    """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, locked_by,
                        locked_until, queue_key, blocked)
       SELECT 'turn', '{}', 'running', now() + interval '60 s', 1, 8, now(), 'elsewhere',
              now() + interval '60 s', 'conv:' || k, false
       FROM generate_series(1, 1000) AS k""",
    """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, queue_key, blocked)
       SELECT 'turn', '{}', 'queued', now() - interval '1 minute', 0, 8, now(),
              'conv:' || (n % 1000 + 1), true
       FROM generate_series(1, 100000) AS n""",
    """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at)
       SELECT 'free', '{}', 'queued', now() - interval '1 second' + n * interval '1 ms', 0, 8, now()
       FROM generate_series(1, 10) AS n""",
]


class _RollBack(Exception):
    pass


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for child in node.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.mark.postgres_only
async def test_the_claim_reads_a_bounded_number_of_rows_behind_100k_blocked_jobs(db: Database) -> None:
    """1k keys each with a running head and 100 due jobs behind it, 1M done rows, 10 free jobs, and
    statistics never gathered: the claim's plan reads a handful of rows, not the backlog."""
    async with db.engine.connect() as conn:
        await conn.execute(text("ALTER TABLE job SET (autovacuum_enabled = false)"))  # stats stay stale
        await conn.commit()
    try:
        async with db.engine.begin() as conn:
            # Rows laid down as the triggers would leave them; skipping the triggers keeps this quick.
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in BACKLOG:
                await conn.execute(text(statement))
        fast = queue.PgFastPath(db.engine.dialect)
        now = utcnow()
        args = fast._claim.args(
            {"p_now": now, "p_limit": 1, "p_worker": "me", "p_until": now + timedelta(seconds=60)}
        )
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            with contextlib.suppress(_RollBack):
                async with raw.transaction():  # EXPLAIN ANALYZE runs the UPDATE: rolled back
                    explained = await raw.fetchval(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + fast._claim.sql, *args
                    )
                    claimed = [
                        r["kind"] for r in await raw.fetch("SELECT kind FROM job WHERE locked_by = 'me'")
                    ]
                    raise _RollBack
    finally:
        async with db.engine.connect() as conn:
            await conn.execute(text("ALTER TABLE job RESET (autovacuum_enabled)"))
            await conn.commit()

    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    nodes = _plan_nodes(plan)
    rows_read = sum(
        n.get("Actual Rows", 0) * n.get("Actual Loops", 1) + n.get("Rows Removed by Filter", 0) for n in nodes
    )
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    assert claimed == ["free"]
    assert rows_read <= 50, json.dumps(plan, indent=1)[:4000]
    assert buffers <= 200, json.dumps(plan, indent=1)[:4000]
    assert all(n.get("Node Type") != "Seq Scan" for n in nodes), [n.get("Node Type") for n in nodes]
