"""Group commit: concurrent callers' writes share one transaction, each answered after the commit.

A webhook is acknowledged only once what it carried is committed, and one transaction per request is
one disk flush per request (about 15 ms on SQLite here), so under load requests would queue behind
the write lock. `BatchedWrites` writes the items of concurrent callers together: while one batch is
being written the next callers wait, then all of them go in the next batch (up to `max_size`).
Nothing waits on a timer: a lone item is written at once. A batch that fails is retried item by item,
so one bad item fails only its own caller. Used by message ingest and by Stripe's webhook inbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchedWrites(Generic[Item, Result]):
    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        name: str,
        max_size: int,
        size: Callable[[Item], int] = lambda _item: 1,
    ) -> None:
        """`write(items)` stores items in one transaction and returns one result per item, in order."""
        self._write = write
        self._name = name
        self._max_size = max_size
        self._size = size
        self._waiting: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name=self._name)
        # shield: a caller that goes away (the client disconnected) must not cancel everyone's batch
        return await asyncio.shield(future)

    async def _write_all(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            try:
                await self._write_batch(batch)
            except Exception as exc:  # noqa: BLE001 - each caller gets its own outcome below
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                log.warning("%s: a batch of %d failed; retrying them one by one", self._name, len(batch))
                for waiter in batch:
                    try:
                        await self._write_batch([waiter])
                    except Exception as single:  # noqa: BLE001
                        _settle(waiter[1], single)

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        size = 0
        while self._waiting and (not batch or size + self._size(self._waiting[0][0]) <= self._max_size):
            waiter = self._waiting.popleft()
            batch.append(waiter)
            size += self._size(waiter[0])
        return batch

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        results = await self._write([item for item, _ in batch])
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
