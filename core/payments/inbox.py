"""Stripe's webhook events stored once, many per commit.

A webhook event is acknowledged only after its id and its job are committed (a 200 before that could
lose it). Concurrent requests share one transaction through core/db/group_commit.py, so 100 events/s
do not queue up behind one disk flush each; a lone event is written at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.db.database import Database, insert_for
from core.db.group_commit import BatchedWrites
from core.db.models import ProcessedEvent, utcnow
from core.jobs.queue import NewJob, enqueue_many
from core.payments.events import STRIPE_EVENT_JOB, StripeEventPayload

EVENT_SOURCE = "stripe"


class EventInbox:
    def __init__(self, db: Database, *, max_batch: int = 200) -> None:
        self._db = db
        self._batches: BatchedWrites[StripeEventPayload, bool] = BatchedWrites(
            self._write, name="stripe-inbox", max_size=max_batch
        )

    async def store(self, event: StripeEventPayload) -> bool:
        """True when the event is new (stored with its job), False for a redelivery."""
        return await self._batches.submit(event)

    async def _write(self, batch: Sequence[StripeEventPayload]) -> list[bool]:
        ids = list(dict.fromkeys(event.event_id for event in batch))
        async with self._db.transaction() as session:
            stmt = (
                insert_for(session)(ProcessedEvent)
                .values([{"source": EVENT_SOURCE, "event_id": i, "created_at": utcnow()} for i in ids])
                .on_conflict_do_nothing(index_elements=["source", "event_id"])
                .returning(ProcessedEvent.event_id)
            )
            new = set((await session.execute(stmt)).scalars())
            # The same id twice in one batch: the first caller stored it, the second is a redelivery.
            fresh: list[bool] = []
            seen: set[str] = set()
            for event in batch:
                fresh.append(event.event_id in new and event.event_id not in seen)
                seen.add(event.event_id)
            jobs = [
                NewJob(
                    STRIPE_EVENT_JOB,
                    event.dump(),
                    idempotency_key=f"{STRIPE_EVENT_JOB}:{event.event_id}",
                    # One payment's events run one at a time, in the order they arrived.
                    queue_key=f"stripe:{event.payment_id or event.object_id}",
                )
                for event, is_new in zip(batch, fresh, strict=True)
                if is_new
            ]
            await enqueue_many(session, jobs)
        return fresh
