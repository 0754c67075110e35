"""Crash recovery in seconds (issue 15): a worker killed with SIGKILL leaves its job `running` with a
60 s lease; another worker takes it over from the dead worker's stopped heartbeat, or at once when it
starts on the same host, long before that lease ends. Long jobs keep their lease while they run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db.database import Database
from core.db.models import Job, JobWorker, utcnow
from core.jobs import __main__ as jobs_cli
from core.jobs import heartbeat
from core.jobs.queue import ClaimedJob, enqueue
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from tests.core.test_jobs import job_row, wait_until
from tests.support import job_kinds  # noqa: F401 - declares the test kinds

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 60.0


class Child:
    def __init__(self, process: asyncio.subprocess.Process, worker_id: str) -> None:
        self.process, self.worker_id = process, worker_id

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()  # reaped: its pid no longer exists


async def start_child(database_url: str, heartbeat_s: float) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.job_worker_process",
        database_url,
        str(heartbeat_s),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    return Child(process, line.decode().strip())


@pytest.fixture
async def children() -> AsyncIterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.process.returncode is None:
            await child.kill()


async def held_by(db: Database, job_id: int, worker_id: str) -> bool:
    row = await job_row(db, job_id)
    return row.status == "running" and row.locked_by == worker_id


def finishing_registry(done: list[tuple[int, datetime]]) -> JobRegistry:
    registry = JobRegistry()

    async def hang(job: ClaimedJob) -> None:  # here it finishes: this process is the healthy one
        done.append((job.id, utcnow()))

    registry.register("hang", hang)
    return registry


async def test_a_killed_workers_job_runs_elsewhere_once_its_heartbeat_stops(
    database_url: str, db: Database, children: list[Child]
) -> None:
    async with db.transaction() as session:
        job_id = await enqueue(session, "hang", {"n": 1}) or 0
    child = await start_child(database_url, heartbeat_s=0.3)
    children.append(child)
    await wait_until(lambda: held_by(db, job_id, child.worker_id))
    lease_end = (await job_row(db, job_id)).locked_until
    assert lease_end is not None and (lease_end - utcnow()).total_seconds() > LEASE_S - 10

    # A healthy worker, already running before the kill (so only the heartbeat can tell it).
    done: list[tuple[int, datetime]] = []
    survivor = Worker(
        db, finishing_registry(done), WorkerConfig(concurrency=1, poll_interval_s=0.05, heartbeat_s=0.3)
    )
    survivor.start()
    try:
        await child.kill()
        await wait_until(lambda: _done(db, job_id), timeout_s=30)
    finally:
        await survivor.stop()

    [(ran_id, finished_at)] = done
    assert ran_id == job_id
    # Picked up long before the dead worker's 60 s lease would have allowed it.
    assert finished_at < lease_end
    row = await job_row(db, job_id)
    assert (row.status, row.attempts) == ("done", 2)
    async with db.transaction() as session:
        beats = list(await session.scalars(select(JobWorker.id)))
    assert child.worker_id not in beats  # the dead worker's row is gone


async def test_a_restarted_process_frees_its_predecessors_jobs_at_start_up(
    database_url: str, db: Database, children: list[Child]
) -> None:
    async with db.transaction() as session:
        job_id = await enqueue(session, "hang", {"n": 2}) or 0
    # A slow heartbeat: its row would only expire after a minute, so only the start-up check helps.
    child = await start_child(database_url, heartbeat_s=20)
    children.append(child)
    await wait_until(lambda: held_by(db, job_id, child.worker_id))
    lease_end = (await job_row(db, job_id)).locked_until
    assert lease_end is not None
    await child.kill()

    done: list[tuple[int, datetime]] = []
    restarted = Worker(
        db, finishing_registry(done), WorkerConfig(concurrency=1, poll_interval_s=0.05, heartbeat_s=20)
    )
    restarted.start()
    try:
        await wait_until(lambda: _done(db, job_id), timeout_s=30)
    finally:
        await restarted.stop()
    [(ran_id, finished_at)] = done
    assert ran_id == job_id and finished_at < lease_end


async def test_a_live_sibling_on_the_same_host_keeps_its_jobs(
    database_url: str, db: Database, children: list[Child]
) -> None:
    async with db.transaction() as session:
        job_id = await enqueue(session, "hang", {"n": 3}) or 0
    child = await start_child(database_url, heartbeat_s=0.3)
    children.append(child)
    await wait_until(lambda: held_by(db, job_id, child.worker_id))

    async with db.transaction() as session:
        freed = await heartbeat.take_over_previous_on_host(
            session, hostname=child.worker_id.split(":")[0], pid=os.getpid(), now=utcnow()
        )
        freed += await heartbeat.take_over_dead(session, now=utcnow())
    assert freed == []
    assert await held_by(db, job_id, child.worker_id)


async def test_a_long_job_keeps_extending_its_lease(db: Database) -> None:
    registry = JobRegistry()
    leases: list[datetime] = []
    release = asyncio.Event()

    async def long(job: ClaimedJob) -> None:
        await release.wait()

    registry.register("long", long)
    async with db.transaction() as session:
        job_id = await enqueue(session, "long") or 0
    # The lease (1 s) would end, and the handler be cut off at 0.8 s, without the heartbeat.
    worker = Worker(
        db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.02, lease_s=1.0, heartbeat_s=0.1)
    )
    worker.start()
    try:
        for _ in range(4):
            await wait_until(lambda: _lease_moved(db, job_id, leases), timeout_s=10)
        await asyncio.sleep(1.5)  # well past the first lease and the first cut-off
        release.set()
        await wait_until(lambda: _done(db, job_id), timeout_s=10)
    finally:
        await worker.stop()
    row = await job_row(db, job_id)
    assert (row.status, row.attempts, row.last_error) == ("done", 1, None)
    assert leases == sorted(leases) and len(set(leases)) == len(leases)


async def _lease_moved(db: Database, job_id: int, leases: list[datetime]) -> bool:
    row = await job_row(db, job_id)
    if row.status != "running" or row.locked_until is None:
        return False
    if leases and row.locked_until <= leases[-1]:
        return False
    leases.append(row.locked_until)
    return True


async def _done(db: Database, job_id: int) -> bool:
    async with db.transaction() as session:
        return await session.scalar(select(Job.status).where(Job.id == job_id)) == "done"


async def test_the_cli_lists_worker_heartbeats_and_their_running_jobs(
    database_url: str,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = JobRegistry()
    started, release = asyncio.Event(), asyncio.Event()

    async def long(job: ClaimedJob) -> None:
        started.set()
        await release.wait()

    registry.register("long", long)
    async with db.transaction() as session:
        await enqueue(session, "long")
    worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.02, heartbeat_s=0.2))
    worker.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        await wait_until(lambda: _has_beaten(db, worker.id), timeout_s=10)
        assert await asyncio.to_thread(jobs_cli.main, ["workers"]) == 0
    finally:
        release.set()
        await worker.stop()
    out = capsys.readouterr().out
    assert f"{worker.id}  last beat" in out and "running=1  alive" in out


async def _has_beaten(db: Database, worker_id: str) -> bool:
    async with db.transaction() as session:
        return await session.get(JobWorker, worker_id) is not None
