"""Writes a caller is waiting on, so background work can step aside while they run.

The job workers and the HTTP server share one event loop and one database. A webhook is answered only
once its messages are committed (core/conversation/ingest.py), and the platform holds its connection
open until then; a job (the engine's turn, a delivery) has no one waiting on it from one millisecond
to the next. So ingest marks its writes here (`running()`), and a worker loop about to claim its
next job first waits until none is in flight (`wait_idle`), up to a bound: under a flood the
workers run fewer jobs and the loop and the CPU go to accepting, and when the flood stops they
drain at full speed. The bound is what keeps a customer's reply from starving: however long a flood
lasts, each worker loop still runs at least one job per bound (core/jobs/worker.py,
`WorkerConfig.yield_to_ingest_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class ForegroundWrites:
    """A count of foreground writes in flight, and the waiters for it to reach zero."""

    def __init__(self) -> None:
        self._running = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def busy(self) -> bool:
        return self._running > 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._wake_all()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no foreground write is in flight, at most `timeout_s`. True if it became idle."""
        if self._running == 0:
            return True
        # A future per wait, on the caller's loop (an Event would bind to the first loop it sees).
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
