"""Job registry and worker loop.

Handlers are `async def handler(job: ClaimedJob) -> None`; their dependencies are bound when they
are registered (closures or functools.partial in the entry point), never looked up globally.
A handler opens its own `db.transaction()` for its business writes; the queue bookkeeping
(claim / complete / fail) runs as separate single statements around it (`Database.bookkeeping()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db.database import Database
from core.db.models import utcnow
from core.jobs import heartbeat, queue
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater
from core.logging import job_context

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob], Awaitable[None]]
DeadJobListener = Callable[[ClaimedJob, str], Awaitable[None]]
# (kind, "completed" | "failed" | "dead") after each run is recorded: GET /metrics counts them.
OutcomeListener = Callable[[str, str], None]


class JobRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self.dead_listeners: list[DeadJobListener] = []

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"job kind {kind!r} registered twice")
        self._handlers[kind] = handler

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._handlers)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 2
    poll_interval_s: float = 0.5
    lease_s: float = 60.0
    # Jobs claimed per round trip by one loop; >1 trades latency of the later ones for throughput.
    batch: int = 1
    # Seconds between heartbeats (core/jobs/heartbeat.py); 0 turns them off (a worker that only
    # runs `run_once`, as tests and the CLI do, never beats).
    heartbeat_s: float = 2.0
    # The longest a handler may run, however often its lease is extended.
    max_run_s: float = 300.0
    # Before claiming, a loop waits while foreground writes (webhook ingest, `Database.foreground`)
    # are in flight, at most this long; 0 never waits. Accept fast, answer soon: under a flood the
    # loop and the CPU go to acknowledging the platform, and the bound is the floor under draining
    # (each loop still runs a job per bound), so a customer's reply never starves behind a flood.
    yield_to_ingest_s: float = 0.25

    @property
    def handler_timeout_s(self) -> float:
        """How long a handler runs before its lease is first extended.

        A handler is cut off before its lease ends, so no other worker can take the job over while
        it still runs (which would run it twice). Each heartbeat that extends the lease moves this
        deadline on, up to `max_run_s`: a long job runs on while its worker lives.
        """
        return min(self.max_run_s, self.lease_s * 0.8)


@functools.cache
def _fast_path(dialect: Dialect) -> queue.PgFastPath:
    return queue.PgFastPath(dialect)


class _Bookkeeper:
    """Where one worker loop writes its claim/complete/fail statements.

    On PostgreSQL the loop keeps one autocommit connection for its lifetime (checking one out of
    the pool per statement costs about as much as the statement) and runs claim/complete through
    `queue.PgFastPath` on it. A connection that fails is dropped and replaced on next use. On SQLite
    every statement is its own serialized write transaction, like all other writes.
    """

    def __init__(self, db: Database, fast: queue.PgFastPath | None) -> None:
        self.db = db
        self.fast = fast
        self._conn: AsyncConnection | None = None
        self._raw: Any = None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        if self.db.is_sqlite:
            async with self.db.bookkeeping() as conn:
                yield conn
            return
        if self._conn is None:
            self._conn = await self.db.autocommit_connection()
            self._raw = (await self._conn.get_raw_connection()).driver_connection
        try:
            yield self._conn
        except BaseException:
            await self.close()
            raise

    async def claim(self, worker_id: str, lease_s: float, limit: int) -> list[ClaimedJob]:
        async with self.connection() as conn:
            if self.fast is not None:
                return await self.fast.claim(self._raw, worker_id=worker_id, lease_s=lease_s, limit=limit)
            return await queue.claim(conn, worker_id=worker_id, lease_s=lease_s, limit=limit)

    async def complete(self, job_id: int, worker_id: str) -> bool:
        async with self.connection() as conn:
            if self.fast is not None:
                return await self.fast.complete(self._raw, job_id, worker_id=worker_id)
            return await queue.complete(conn, job_id, worker_id=worker_id)

    async def close(self) -> None:
        conn, self._conn, self._raw = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())


class Worker:
    """`concurrency` loops in this process, each claiming and running one job at a time.

    Every job this worker claimed and has not yet completed, failed or released is in `_claimed`;
    `stop()` releases whatever is left there, so a restart never waits for leases to expire.
    """

    def __init__(
        self,
        db: Database,
        registry: JobRegistry,
        config: WorkerConfig | None = None,
        *,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.config = config or WorkerConfig()
        self.on_outcome = on_outcome
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.hostname}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._claimed: set[int] = set()
        # Jobs whose handler is running: the watchdog that cuts it off, and when it started.
        self._running: dict[int, tuple[asyncio.Timeout, float]] = {}
        self._beating: asyncio.Task[None] | None = None
        self._stop_beating = asyncio.Event()
        db.on_jobs_committed(self.wake)

    def _bookkeeper(self) -> _Bookkeeper:
        return _Bookkeeper(self.db, None if self.db.is_sqlite else _fast_path(self.db.engine.dialect))

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        self._stopping.clear()
        for n in range(self.config.concurrency):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"job-worker-{n}"))
        if self.config.heartbeat_s > 0 and self._beating is None:
            self._stop_beating.clear()
            self._beating = asyncio.create_task(self._heartbeat(), name="job-worker-heartbeat")

    async def stop(self, timeout_s: float = 8.0) -> None:
        """Stop claiming; let running jobs finish within the timeout; release the rest."""
        self._stopping.set()
        self._wakeup.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        unfinished = sorted(self._claimed)
        if unfinished:
            try:
                async with self.db.bookkeeping() as conn:
                    await queue.release(conn, unfinished, worker_id=self.id)
                self._claimed.difference_update(unfinished)
                log.info("released unfinished jobs", extra={"job_ids": unfinished})
            except Exception:
                log.exception("could not release jobs; they run again when their lease expires")
        await self._stop_heartbeat()

    async def _stop_heartbeat(self) -> None:
        beating, self._beating = self._beating, None
        if beating is None:
            return
        self._stop_beating.set()
        await asyncio.gather(beating, return_exceptions=True)
        try:
            async with self.db.bookkeeping() as conn:
                await heartbeat.forget(conn, worker_id=self.id)
        except Exception:
            log.warning("could not remove this worker's heartbeat row; it expires on its own", exc_info=True)

    async def _heartbeat(self) -> None:
        """Beat every `heartbeat_s` until stopped; a failed beat is logged and retried next time."""
        loop = asyncio.get_running_loop()
        window = self.config.heartbeat_s * heartbeat.DEAD_AFTER_BEATS
        connected_since: float | None = None
        first = True
        while not self._stop_beating.is_set():
            try:
                # Others are taken over only once this worker has reached the database for a whole
                # expiry window itself (after a database cut, everyone's row is stale).
                settled = connected_since is not None and loop.time() - connected_since >= window
                await self._beat_once(first=first, take_over=settled)
                first = False
                if connected_since is None:
                    connected_since = loop.time()
            except Exception:
                connected_since = None
                log.warning("heartbeat failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_beating.wait(), timeout=self.config.heartbeat_s)

    async def _beat_once(self, *, first: bool, take_over: bool) -> None:
        config = self.config
        now, started = utcnow(), asyncio.get_running_loop().time()
        running = list(self._running)
        freed: list[int] = []
        async with self.db.bookkeeping() as conn:
            window = timedelta(seconds=config.heartbeat_s * heartbeat.DEAD_AFTER_BEATS)
            await heartbeat.beat(
                conn,
                worker_id=self.id,
                hostname=self.hostname,
                pid=self.pid,
                now=now,
                expires_at=now + window,
            )
            if running:
                lease_end = now + timedelta(seconds=config.lease_s)
                await heartbeat.extend_leases(conn, worker_id=self.id, until=lease_end)
            if first:
                freed += await heartbeat.take_over_previous_on_host(
                    conn, hostname=self.hostname, pid=self.pid, now=now
                )
            if take_over:
                freed += await heartbeat.take_over_dead(conn, now=now)
        # The leases are extended: each running handler may go on, up to its own max_run_s.
        for job_id in running:
            # Only handlers still running (one may have finished, or timed out, while we beat).
            watched = self._running.get(job_id)
            if watched is not None and not watched[0].expired():
                watchdog, began = watched
                watchdog.reschedule(min(began + config.max_run_s, started + config.lease_s * 0.8))
        if freed:
            log.warning("took over the jobs of dead workers", extra={"job_ids": freed})
            self.wake()

    async def _loop(self) -> None:
        books = self._bookkeeper()
        try:
            while not self._stopping.is_set():
                await self._yield_to_ingest()
                # Cleared before claiming: a wake-up that arrives while we claim is not lost.
                self._wakeup.clear()
                try:
                    ran = await self.run_once(books)
                except Exception:
                    log.exception("worker round failed")
                    ran = 0
                if ran == 0 and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=self.config.poll_interval_s)
        finally:
            await books.close()

    async def _yield_to_ingest(self) -> None:
        if self.config.yield_to_ingest_s > 0 and self.db.foreground.busy:
            await self.db.foreground.wait_idle(self.config.yield_to_ingest_s)

    async def run_once(self, books: _Bookkeeper | None = None) -> int:
        """Claim and run one batch. Returns how many jobs ran (0 = nothing was due)."""
        if self._stopping.is_set():
            return 0
        if books is None:  # a one-off round (tests, CLI): no connection kept
            books = self._bookkeeper()
            try:
                return await self.run_once(books)
            finally:
                await books.close()
        jobs = await books.claim(self.id, self.config.lease_s, self.config.batch)
        self._claimed.update(job.id for job in jobs)
        ran = 0
        for job in jobs:
            if self._stopping.is_set():
                break  # the rest stay in _claimed and are released by stop()
            await self._run(job, books)
            ran += 1
        return ran

    async def _run(self, job: ClaimedJob, books: _Bookkeeper) -> None:
        with job_context(job.id, job.kind):
            handler = self.registry.get(job.kind)
            if handler is None:
                await self._failed(books, job, f"no handler for job kind {job.kind!r}", permanent=True)
                return
            if job.attempts > job.max_attempts:
                await self._failed(books, job, "lease expired on every attempt", permanent=True)
                return
            began = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout_at(began + self.config.handler_timeout_s) as watchdog:
                    self._running[job.id] = (watchdog, began)
                    try:
                        await handler(job)
                    finally:
                        self._running.pop(job.id, None)
            except RetryLater as exc:
                await self._failed(books, job, f"RetryLater: {exc}", retry_in_s=exc.delay_s)
            except PermanentJobError as exc:
                await self._failed(books, job, f"{type(exc).__name__}: {exc}", permanent=True)
            except TimeoutError:
                ran_s = asyncio.get_running_loop().time() - began
                await self._failed(books, job, f"timed out after {ran_s:.0f}s")
            except Exception as exc:
                log.warning("job failed", exc_info=True)
                await self._failed(books, job, f"{type(exc).__name__}: {exc}")
            else:
                if await books.complete(job.id, self.id) and self.on_outcome is not None:
                    self.on_outcome(job.kind, "completed")
                self._claimed.discard(job.id)

    async def _failed(
        self,
        books: _Bookkeeper,
        job: ClaimedJob,
        error: str,
        *,
        retry_in_s: float | None = None,
        permanent: bool = False,
    ) -> None:
        async with books.connection() as conn:
            status = await queue.fail(
                conn, job, worker_id=self.id, error=error, retry_in_s=retry_in_s, permanent=permanent
            )
        self._claimed.discard(job.id)
        if self.on_outcome is not None and status != "lost":
            self.on_outcome(job.kind, "dead" if status == "dead" else "failed")
        if status == "dead":
            log.error("job dead", extra={"error": error[:300]})
            for listener in self.registry.dead_listeners:
                try:
                    await listener(job, error)
                except Exception:
                    log.exception("dead-job listener failed")
        elif status == "lost":
            log.warning("job lease was lost before its failure was recorded")
