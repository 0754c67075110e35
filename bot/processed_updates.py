"""Which Telegram updates were handled (ProcessedEvent rows of source "telegram"), and the daily job
that forgets the old ones. No aiogram here: the job is registered before the bot is built (the worker
runs from the start; bot/deferred.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.database import Database
from core.db.models import ProcessedEvent, utcnow
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, enqueue
from core.jobs.worker import JobRegistry

log = logging.getLogger(__name__)

EVENT_SOURCE = "telegram"


# Telegram redelivers an update for at most 24 h, and its ids may restart after a week of silence:
# remembering them for a week dedupes every redelivery without growing forever.
KEEP_EVENTS = timedelta(days=7)
PRUNE_JOB = "telegram_prune_events"


@job_payload(PRUNE_JOB)
class PrunePayload(JobPayload):
    """Nothing: the job prunes whatever is older than KEEP_EVENTS when it runs."""


async def prune_events(session: AsyncSession, *, now: datetime | None = None) -> int:
    cutoff = (now or utcnow()) - KEEP_EVENTS
    result = await session.execute(
        delete(ProcessedEvent).where(
            ProcessedEvent.source == EVENT_SOURCE, ProcessedEvent.created_at < cutoff
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def schedule_prune(session: AsyncSession, *, now: datetime | None = None) -> None:
    """Queue tomorrow's prune (once per day, whoever asks)."""
    when = (now or utcnow()) + timedelta(days=1)
    await enqueue(
        session, PRUNE_JOB, PrunePayload().dump(), run_at=when, idempotency_key=f"{PRUNE_JOB}:{when:%Y-%m-%d}"
    )


def register_prune_job(registry: JobRegistry, *, db: Database) -> None:
    async def prune(job: ClaimedJob) -> None:
        PrunePayload.load(job.payload)  # a malformed one is dead at once, like every kind's
        async with db.transaction() as session:
            removed = await prune_events(session)
            await schedule_prune(session)
        log.info("pruned processed telegram updates", extra={"removed": removed})

    registry.register(PRUNE_JOB, prune)
