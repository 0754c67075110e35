"""Stripe's webhook events stored once, many per commit.

A webhook event is acknowledged only after its id and its job are committed (a 200 before that could
lose it). One transaction per event is one disk flush per event: about 15 ms on SQLite on this
machine, so 100 events/s would queue up behind the write lock. `EventInbox` stores the events of
concurrent requests together: while one batch is written the next callers wait, then all of them go
in the next batch (nothing waits on a timer: a lone event is written at once). A batch that fails is
retried one event at a time, so one bad event fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from core.db.database import Database, insert_for
from core.db.models import ProcessedEvent, utcnow
from core.jobs.queue import NewJob, enqueue_many
from core.payments.events import STRIPE_EVENT_JOB, StripeEventPayload

log = logging.getLogger(__name__)

EVENT_SOURCE = "stripe"
_Waiter = tuple[StripeEventPayload, "asyncio.Future[bool]"]


class EventInbox:
    def __init__(self, db: Database, *, max_batch: int = 200) -> None:
        self._db = db
        self._max_batch = max_batch
        self._waiting: deque[_Waiter] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def store(self, event: StripeEventPayload) -> bool:
        """True when the event is new (stored with its job), False for a redelivery."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="stripe-inbox")
        # shield: a caller that goes away (Stripe timed out) must not cancel everyone's batch
        return await asyncio.shield(future)

    async def _write_all(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft() for _ in range(min(self._max_batch, len(self._waiting)))]
            try:
                await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - each caller gets its own outcome below
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                log.warning("stripe event batch of %d failed; retrying one by one", len(batch))
                for item in batch:
                    try:
                        await self._write([item])
                    except Exception as single:  # noqa: BLE001
                        _settle(item[1], single)

    async def _write(self, batch: list[_Waiter]) -> None:
        ids = list(dict.fromkeys(event.event_id for event, _ in batch))
        async with self._db.transaction() as session:
            stmt = (
                insert_for(session)(ProcessedEvent)
                .values([{"source": EVENT_SOURCE, "event_id": i, "created_at": utcnow()} for i in ids])
                .on_conflict_do_nothing(index_elements=["source", "event_id"])
                .returning(ProcessedEvent.event_id)
            )
            new = set((await session.execute(stmt)).scalars())
            jobs, queued = [], set()
            for event, _ in batch:
                if event.event_id in new and event.event_id not in queued:
                    queued.add(event.event_id)
                    jobs.append(
                        NewJob(
                            STRIPE_EVENT_JOB,
                            event.dump(),
                            idempotency_key=f"{STRIPE_EVENT_JOB}:{event.event_id}",
                            # One payment's events run one at a time, in the order they arrived.
                            queue_key=f"stripe:{event.payment_id or event.object_id}",
                        )
                    )
            await enqueue_many(session, jobs)
        first: set[str] = set()
        for event, future in batch:  # the same id twice in one batch: the first caller stored it
            fresh = event.event_id in new and event.event_id not in first
            first.add(event.event_id)
            _settle(future, fresh)


def _settle(future: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
