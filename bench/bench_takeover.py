"""Time from SIGKILL of a worker process until its job runs elsewhere (issue 15 "Measured").

    .venv/bin/python bench/bench_takeover.py [--rounds 3] [--heartbeat-s 2] [--lease-s 60]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

A worker process (tests/support/job_worker_process.py) claims a job that never finishes and is
killed with SIGKILL. Two ways back, each measured from the kill to the job's handler starting in
this process:
- take-over: a worker already running here notices the dead worker's heartbeat stopped (about
  three beats, plus up to one beat and a poll);
- restart: a worker started here right after the kill frees the jobs of this host's dead process
  at start-up.
The reference is the lease (`--lease-s`): before heartbeats, the job waited for it to expire.
Every wait is bounded by the lease plus 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.jobs.queue import ClaimedJob, enqueue
from core.jobs.worker import JobRegistry, Worker, WorkerConfig

ROOT = Path(__file__).resolve().parents[1]


async def start_child(url: str, heartbeat_s: float) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.job_worker_process",
        url,
        str(heartbeat_s),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    worker_id = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode().strip()
    return process, worker_id


async def held_by(dsn: str, job_id: int, worker_id: str, deadline: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while time.monotonic() < deadline:
            holder = await conn.fetchval(
                "SELECT locked_by FROM job WHERE id = $1 AND status = 'running'", job_id
            )
            if holder == worker_id:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the child never claimed its job")
    finally:
        await conn.close()


async def one_round(url: str, dsn: str, args: argparse.Namespace, *, restart: bool) -> float:
    db = Database(url)
    started = asyncio.Event()
    registry = JobRegistry()

    async def hang(job: ClaimedJob) -> None:  # here the job starts: that is the moment measured
        started.set()

    registry.register("hang", hang)
    config = WorkerConfig(
        concurrency=1, poll_interval_s=0.5, lease_s=args.lease_s, heartbeat_s=args.heartbeat_s
    )
    here = Worker(db, registry, config)
    try:
        async with db.transaction() as session:
            job_id = await enqueue(session, "hang", {"n": 1}) or 0
        child, child_id = await start_child(url, args.heartbeat_s)
        await held_by(dsn, job_id, child_id, time.monotonic() + 60)
        if not restart:
            here.start()
            await asyncio.sleep(args.heartbeat_s * 4)  # settled: it has beaten for a whole window
        child.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        await child.wait()
        if restart:
            here.start()
        await asyncio.wait_for(started.wait(), timeout=args.lease_s + 30)
        return time.perf_counter() - killed
    finally:
        await here.stop()
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM job"))
            await session.execute(text("DELETE FROM job_worker"))
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeat-s", type=float, default=2.0)
    parser.add_argument("--lease-s", type=float, default=60.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    name = f"cheshire_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{args.pg.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await upgrade_to_head(url)
        print(
            "SIGKILL of a worker process until its job runs elsewhere: "
            f"heartbeat {args.heartbeat_s} s, {args.rounds} rounds"
        )
        for restart, label in ((False, "take-over by a running worker"), (True, "restart on the same host")):
            times = [await one_round(url, dsn, args, restart=restart) for _ in range(args.rounds)]
            print(
                f"  {label:<31} median {statistics.median(times):5.1f} s "
                f"(range {min(times):.1f}-{max(times):.1f}) | reference: the lease, {args.lease_s:.0f} s"
            )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
