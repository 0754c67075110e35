"""Job queue on PostgreSQL: our Worker beside an independent minimal queue, same run, same machine.

    .venv/bin/python bench/bench_jobs.py [--jobs 4000] [--workers 2] [--rounds 3] [--keys 200]
        [--blocked-keys 1000] [--per-key 20] [--done-rows 1000000] [--claims 200]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

The reference is not the project's SQL: a table of its own (`bare_job`: id, kind, payload, status,
queue_key) drained by one asyncpg connection per claimer with a bare
`UPDATE ... WHERE id IN (SELECT id ... WHERE status = 'queued' LIMIT n FOR UPDATE SKIP LOCKED)` and
an `UPDATE ... SET status = 'done'`: no order, no run_at, no lease, no retries, no queue keys
honoured. What ours costs beyond that is what the protocol (order per key, leases, back-off) costs.

Workloads, each drained by `--workers` claimers (ours: `Worker` instances, one pool each, as
separate processes would have), alternating ours and the reference for `--rounds` rounds (median,
range):
1. no-op jobs without a key (claim batch 1 and 10);
2. queue-keyed: the same jobs spread over `--keys` keys (ours runs each key strictly in order);
3. blocked backlog: `--blocked-keys` keys each with a head in back-off and `--per-key` due jobs
   blocked behind it, then `--jobs` free jobs: the free jobs' drain (the claim must not walk the
   blocked ones), then the heads come due and the whole backlog drains, in order per key.
Then the claim alone (claim + complete, one connection, `--claims` times, median) on an empty table
and with `--done-rows` done rows never analysed, in the same run (issue 15 "Measured").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.jobs.queue import ClaimedJob, PgFastPath
from core.jobs.worker import JobRegistry, Worker, WorkerConfig

# --- The independent reference ----------------------------------------------------------------------
BARE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_job (
    id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL, status text NOT NULL,
    queue_key text, locked_by text);
CREATE INDEX IF NOT EXISTS bare_job_queued ON bare_job (id) WHERE status = 'queued';
"""
BARE_CLAIM = """
UPDATE bare_job SET status = 'running', locked_by = $1
WHERE id IN (SELECT id FROM bare_job WHERE status = 'queued' LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING id, kind, payload
"""
BARE_COMPLETE = "UPDATE bare_job SET status = 'done', locked_by = NULL WHERE id = $1"


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


async def sql(dsn: str, *statements: str, args: tuple[object, ...] = ()) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement, *args) if args else await conn.execute(statement)
    finally:
        await conn.close()


async def fill_ours(dsn: str, n: int, keys: int, *, blocked_keys: int = 0, per_key: int = 0) -> int:
    """Returns how many jobs are due now (the blocked backlog's heads wait an hour)."""
    await sql(dsn, "TRUNCATE job RESTART IDENTITY")
    if blocked_keys:
        await sql(
            dsn,
            # Heads in back-off first (lowest ids), then the due jobs that queue up behind them;
            # the triggers set `blocked` as for any insert.
            """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, queue_key)
               SELECT 'noop', jsonb_build_object('key', k, 'seq', 0), 'queued', now() + interval '1 hour',
                      1, 8, now(), 'b' || k FROM generate_series(1, $1) AS k""",
            args=(blocked_keys,),
        )
        await sql(
            dsn,
            """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, queue_key)
               SELECT 'noop', jsonb_build_object('key', k, 'seq', s), 'queued', now() - interval '1 second',
                      0, 8, now(), 'b' || k
               FROM generate_series(1, $2) AS s, generate_series(1, $1) AS k ORDER BY s, k""",
            args=(blocked_keys, per_key),
        )
    key = "'k' || (n % $2)" if keys else "NULL"
    await sql(
        dsn,
        f"""INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, queue_key)
            SELECT 'noop', jsonb_build_object('key', {key}, 'seq', n), 'queued',
                   now() - interval '1 second', 0, 8, now(), {key}
            FROM generate_series(1, $1) AS n""",
        args=(n, keys) if keys else (n,),
    )
    await sql(dsn, "VACUUM ANALYZE job")
    return n


async def fill_bare(dsn: str, n: int, keys: int) -> None:
    await sql(dsn, BARE_SCHEMA, "TRUNCATE bare_job RESTART IDENTITY")
    await sql(
        dsn,
        """INSERT INTO bare_job (kind, payload, status, queue_key)
           SELECT 'noop', '{}'::jsonb, 'queued', CASE WHEN $2 > 0 THEN 'k' || (n % $2) END
           FROM generate_series(1, $1) AS n""",
        args=(n, keys),
    )
    await sql(dsn, "VACUUM ANALYZE bare_job")


async def run_ours(url: str, n: int, workers: int, batch: int, *, check_order: bool = False) -> float:
    """Drain until `n` jobs ran; jobs/s. With `check_order`, each key's jobs must run in seq order."""
    done = asyncio.Event()
    count = 0
    last: dict[str, int] = {}
    disorder = 0

    async def noop(job: ClaimedJob) -> None:
        nonlocal count, disorder
        key = job.payload.get("key")
        if check_order and key is not None:
            seq = int(job.payload["seq"])
            disorder += seq < last.get(str(key), -1)
            last[str(key)] = seq
        count += 1
        if count == n:
            done.set()

    registry = JobRegistry()
    registry.register("noop", noop)
    dbs = [Database(url, pool_size=2) for _ in range(workers)]
    config = WorkerConfig(concurrency=1, poll_interval_s=0.05, batch=batch)
    pool = [Worker(db, registry, config) for db in dbs]
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
    assert disorder == 0, f"{disorder} jobs ran before an earlier job of their key"
    return n / elapsed


async def run_bare(dsn: str, n: int, workers: int, batch: int) -> float:
    conns = [await asyncpg.connect(dsn) for _ in range(workers)]
    for conn in conns:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    async def loop(conn: asyncpg.Connection, me: str) -> None:
        while rows := await conn.fetch(BARE_CLAIM, me, batch):
            for row in rows:
                await conn.execute(BARE_COMPLETE, row["id"])

    started = time.perf_counter()
    await asyncio.gather(*(loop(conn, f"bare-{i}") for i, conn in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return n / elapsed


async def count_done(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM job WHERE status = 'done'"))
    finally:
        await conn.close()


def line(label: str, ours: list[float], ref: list[float]) -> str:
    ratios = [o / r for o, r in zip(ours, ref, strict=True)]
    return (
        f"  {label:<34} ours {statistics.median(ours):7.0f} jobs/s ({min(ours):.0f}-{max(ours):.0f}) | "
        f"bare SKIP LOCKED {statistics.median(ref):7.0f} jobs/s ({min(ref):.0f}-{max(ref):.0f}) | "
        f"ratio {statistics.median(ratios):6.1%} ({min(ratios):.0%}-{max(ratios):.0%})"
    )


async def rounds(
    n: int, ours: Callable[[], Awaitable[float]], ref: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    ours_runs, ref_runs = [], []
    for _ in range(n):  # alternate, so load from elsewhere hits both alike
        ref_runs.append(await ref())
        ours_runs.append(await ours())
    return ours_runs, ref_runs


async def drains(args: argparse.Namespace, dsn: str, url: str) -> None:
    n, w = args.jobs, args.workers

    for batch in (1, 10):

        async def ours(batch: int = batch) -> float:
            await fill_ours(dsn, n, 0)
            rate = await run_ours(url, n, w, batch)
            assert await count_done(dsn) == n, "every job done exactly once"
            return rate

        async def ref(batch: int = batch) -> float:
            await fill_bare(dsn, n, 0)
            return await run_bare(dsn, n, w, batch)

        print(line(f"no key, claim batch {batch}:", *await rounds(args.rounds, ours, ref)))

    async def keyed_ours() -> float:
        await fill_ours(dsn, n, args.keys)
        return await run_ours(url, n, w, 1, check_order=True)

    async def keyed_ref() -> float:
        await fill_bare(dsn, n, args.keys)
        return await run_bare(dsn, n, w, 1)

    print(line(f"{args.keys} queue keys, in order:", *await rounds(args.rounds, keyed_ours, keyed_ref)))

    backlog = args.blocked_keys * args.per_key
    total = backlog + args.blocked_keys

    async def free_ours() -> float:
        await fill_ours(dsn, n, 0, blocked_keys=args.blocked_keys, per_key=args.per_key)
        return await run_ours(url, n, w, 1)

    async def free_ref() -> float:
        await fill_bare(dsn, n, 0)
        return await run_bare(dsn, n, w, 1)

    print(line(f"free jobs, {backlog} blocked behind:", *await rounds(args.rounds, free_ours, free_ref)))

    async def backlog_ours() -> float:
        await fill_ours(dsn, 0, 0, blocked_keys=args.blocked_keys, per_key=args.per_key)
        # The heads come due: the whole backlog drains, in order per key.
        await sql(dsn, "UPDATE job SET run_at = now() - interval '1 second' WHERE run_at > now()")
        return await run_ours(url, total, w, 1, check_order=True)

    async def backlog_ref() -> float:
        await fill_bare(dsn, total, args.blocked_keys)
        return await run_bare(dsn, total, w, 1)

    measured = await rounds(args.rounds, backlog_ours, backlog_ref)
    print(line(f"blocked backlog drain ({total} jobs):", *measured))


async def claim_latency(url: str, dsn: str, claims: int) -> float:
    """Median ms of one claim + complete (the worker's fast path SQL) over `claims` due jobs."""
    await sql(
        dsn,
        """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at)
           SELECT 'noop', '{}', 'queued', now() - interval '1 second', 0, 8, now()
           FROM generate_series(1, $1)""",
        args=(claims,),
    )
    db = Database(url)
    fast = PgFastPath(db.engine.dialect)
    await db.dispose()
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    times = []
    try:
        for _ in range(claims):
            now = datetime.now(UTC)
            params = {"p_now": now, "p_limit": 1, "p_worker": "me", "p_until": now + timedelta(seconds=60)}
            started = time.perf_counter()
            [row] = await conn.fetch(fast._claim.sql, *fast._claim.args(params))
            done = {"p_id": row[0], "p_worker": "me", "p_finished": datetime.now(UTC)}
            await conn.execute(fast._complete.sql, *fast._complete.args(done))
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return statistics.median(times)


async def claim_with_history(args: argparse.Namespace, dsn: str, url: str) -> None:
    await sql(dsn, "TRUNCATE job RESTART IDENTITY", "VACUUM ANALYZE job")
    empty = await claim_latency(url, dsn, args.claims)
    await sql(dsn, "TRUNCATE job RESTART IDENTITY", "ALTER TABLE job SET (autovacuum_enabled = false)")
    started = time.perf_counter()
    await sql(
        dsn,
        """INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, created_at, finished_at)
           SELECT 'old', '{}', 'done', now() - interval '2 days', 1, 8, now() - interval '2 days',
                  now() - interval '2 days' FROM generate_series(1, $1)""",
        args=(args.done_rows,),
    )
    filled = time.perf_counter() - started
    full = await claim_latency(url, dsn, args.claims)
    print(
        f"  claim + complete, median of {args.claims}: empty table {empty:.2f} ms | with {args.done_rows} "
        f"done rows, never analysed {full:.2f} ms (rows written in {filled:.0f} s)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--blocked-keys", type=int, default=1000)
    parser.add_argument("--per-key", type=int, default=20)
    parser.add_argument("--done-rows", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    name, dsn = await create_database(args.pg)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await upgrade_to_head(url)
        print(
            f"job queue on PostgreSQL: {args.jobs} no-op jobs, {args.workers} workers, "
            f"median of {args.rounds} alternating rounds (range)"
        )
        await drains(args, dsn, url)
        await claim_with_history(args, dsn, url)
    finally:
        await drop_database(args.pg, name)


if __name__ == "__main__":
    asyncio.run(main())
