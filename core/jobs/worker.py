"""Job registry and worker loop.

Handlers are `async def handler(job: ClaimedJob) -> None`; their dependencies are bound when they
are registered (closures or functools.partial in the entry point), never looked up globally.
A handler opens its own `db.transaction()` for its business writes; the queue bookkeeping
(claim / complete / fail) runs in separate short transactions around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.db.database import Database
from core.jobs import queue
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater
from core.logging import job_context

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob], Awaitable[None]]
DeadJobListener = Callable[[ClaimedJob, str], Awaitable[None]]


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
    batch: int = 1


class Worker:
    """`concurrency` loops in this process, each claiming and running one job at a time."""

    def __init__(self, db: Database, registry: JobRegistry, config: WorkerConfig | None = None) -> None:
        self.db = db
        self.registry = registry
        self.config = config or WorkerConfig()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        db.on_jobs_committed(self.wake)

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        for n in range(self.config.concurrency):
            self._tasks.append(asyncio.create_task(self._loop(n), name=f"job-worker-{n}"))

    async def stop(self, timeout_s: float = 8.0) -> None:
        """Stop claiming, let running jobs finish within the timeout, release the rest."""
        self._stopping.set()
        self._wakeup.set()
        running = list(self._in_flight.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=timeout_s)
            for task in pending:
                task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        unfinished = list(self._in_flight)
        if unfinished:
            with contextlib.suppress(Exception):
                async with self.db.transaction() as session:
                    await queue.release(session, unfinished, worker_id=self.id)
            log.info("released unfinished jobs", extra={"job_ids": unfinished})
        self._tasks.clear()

    async def _loop(self, n: int) -> None:
        while not self._stopping.is_set():
            try:
                ran = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker round failed")
                ran = 0
            if ran == 0:
                await self._idle()

    async def _idle(self) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=self.config.poll_interval_s)

    async def run_once(self) -> int:
        """Claim and run one batch. Returns how many jobs ran (0 = queue idle)."""
        if self._stopping.is_set():
            return 0
        async with self.db.transaction() as session:
            jobs = await queue.claim(
                session, worker_id=self.id, lease_s=self.config.lease_s, limit=self.config.batch
            )
        for job in jobs:
            task = asyncio.current_task()
            assert task is not None
            self._in_flight[job.id] = task
            try:
                await self._run(job)
            finally:
                self._in_flight.pop(job.id, None)
        return len(jobs)

    async def _run(self, job: ClaimedJob) -> None:
        with job_context(job.id, job.kind):
            handler = self.registry.get(job.kind)
            if handler is None:
                await self._failed(job, f"no handler for job kind {job.kind!r}", permanent=True)
                return
            if job.attempts > job.max_attempts:
                await self._failed(job, "lease expired on every attempt", permanent=True)
                return
            try:
                async with asyncio.timeout(self.config.lease_s):
                    await handler(job)
            except asyncio.CancelledError:
                raise
            except RetryLater as exc:
                await self._failed(job, str(exc), retry_in_s=exc.delay_s)
            except PermanentJobError as exc:
                await self._failed(job, f"{type(exc).__name__}: {exc}", permanent=True)
            except Exception as exc:
                log.warning("job failed", exc_info=True)
                await self._failed(job, f"{type(exc).__name__}: {exc}")
            else:
                async with self.db.transaction() as session:
                    await queue.complete(session, job.id, worker_id=self.id)

    async def _failed(
        self, job: ClaimedJob, error: str, *, retry_in_s: float | None = None, permanent: bool = False
    ) -> None:
        async with self.db.transaction() as session:
            status = await queue.fail(
                session, job, worker_id=self.id, error=error, retry_in_s=retry_in_s, permanent=permanent
            )
        if status == "dead":
            log.error("job dead", extra={"error": error[:300]})
            for listener in self.registry.dead_listeners:
                with contextlib.suppress(Exception):
                    await listener(job, error)
