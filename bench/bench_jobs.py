"""Job queue throughput on PostgreSQL: our Worker vs a bare asyncpg loop, same run, same queries.

    .venv/bin/python bench/bench_jobs.py [--jobs 4000] [--workers 2] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Both sides drain the same number of no-op jobs from a fresh database with `--workers` concurrent
claimers: ours are `Worker` instances (one pool each, as separate processes would have), the reference
is one asyncpg connection per claimer running the claim and complete statements in autocommit, with
nothing else around them. Prints jobs/s for both and the ratio (goal: ours >= 70 % of the reference).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker, WorkerConfig

# The statements our queue issues (core/jobs/queue.py), written out by hand for the reference.
CLAIM_SQL = """
UPDATE job SET status = 'running', attempts = attempts + 1, locked_by = $1, locked_until = $2
WHERE id IN (
    SELECT j.id FROM job AS j
    WHERE ((j.status = 'queued' AND j.run_at <= $3) OR (j.status = 'running' AND j.locked_until < $3))
      AND (j.queue_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM job AS e
          WHERE e.queue_key = j.queue_key AND e.id < j.id AND e.status IN ('queued', 'running')))
    ORDER BY j.run_at, j.id LIMIT $4 FOR UPDATE SKIP LOCKED)
RETURNING id, kind, payload, attempts, max_attempts, idempotency_key
"""
COMPLETE_SQL = """
UPDATE job SET status = 'done', finished_at = $3, locked_by = NULL, locked_until = NULL, last_error = NULL
WHERE id = $1 AND locked_by = $2 AND status = 'running'
"""


async def create_database(admin_url: str) -> tuple[str, str]:
    name = f"cheshire_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin_url.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def fill(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE job RESTART IDENTITY")
        await conn.execute(
            """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at)
               SELECT 'noop', '{}'::jsonb, 'queued', now() - interval '1 second', 0, 8, now()
               FROM generate_series(1, $1)""",
            n,
        )
        await conn.execute("VACUUM ANALYZE job")
    finally:
        await conn.close()


async def count_done(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM job WHERE status = 'done' AND attempts = 1"))
    finally:
        await conn.close()


async def run_ours(url: str, n: int, workers: int, batch: int) -> float:
    done = asyncio.Event()
    count = 0

    async def noop(job: ClaimedJob) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    registry = JobRegistry()
    registry.register("noop", noop)
    dbs = [Database(url, pool_size=2) for _ in range(workers)]
    pool = [
        Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.05, batch=batch)) for db in dbs
    ]
    for db in dbs:  # open the pools first, as a running service would have
        await db.ping()
    started = time.perf_counter()
    for worker in pool:
        worker.start()
    await done.wait()
    elapsed = time.perf_counter() - started
    for worker in pool:
        await worker.stop()
    for db in dbs:
        await db.dispose()
    return n / elapsed


async def run_reference(dsn: str, n: int, workers: int, batch: int) -> float:
    conns = [await asyncpg.connect(dsn) for _ in range(workers)]
    for conn in conns:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    async def loop(conn: asyncpg.Connection, me: str) -> None:
        from datetime import UTC, datetime, timedelta

        while True:
            now = datetime.now(UTC)
            rows = await conn.fetch(CLAIM_SQL, me, now + timedelta(seconds=60), now, batch)
            if not rows:
                return
            for row in rows:
                await conn.execute(COMPLETE_SQL, row["id"], me, datetime.now(UTC))

    started = time.perf_counter()
    await asyncio.gather(*(loop(conn, f"ref-{i}") for i, conn in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    name, dsn = await create_database(args.pg)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await upgrade_to_head(url)
        print(
            f"job queue on PostgreSQL: {args.jobs} no-op jobs, {args.workers} workers, "
            f"median of {args.rounds} alternating rounds"
        )
        for batch in (1, 10):
            ours_runs, ref_runs, ratios = [], [], []
            for _ in range(args.rounds):  # alternate, so load from elsewhere hits both alike
                await fill(dsn, args.jobs)
                ref = await run_reference(dsn, args.jobs, args.workers, batch)
                assert await count_done(dsn) == args.jobs
                await fill(dsn, args.jobs)
                ours = await run_ours(url, args.jobs, args.workers, batch)
                assert await count_done(dsn) == args.jobs, "every job done exactly once"
                ours_runs.append(ours)
                ref_runs.append(ref)
                ratios.append(ours / ref)
            print(
                f"  claim batch {batch:>2}: ours {statistics.median(ours_runs):7.0f} jobs/s | reference "
                f"(bare asyncpg) {statistics.median(ref_runs):7.0f} jobs/s | ratio median "
                f"{statistics.median(ratios):6.1%} (range {min(ratios):.0%}-{max(ratios):.0%}; goal >= 70%)"
            )
    finally:
        await drop_database(args.pg, name)


if __name__ == "__main__":
    asyncio.run(main())
