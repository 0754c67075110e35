"""Retention: the `prune` job deletes, in small batches, what nothing will read again (issue 15).

Without it the job table only grows, and a claim over 21.9k never-analysed rows took a second.
Every process runs `PruneSchedule`: a minute after start-up and then every hour it enqueues a prune
due now, keyed by the hour, so all processes together queue one per hour and nothing waits in the
queue in between (a test or bench waiting for an idle queue is not kept waiting by a job due in an
hour). A run that stops with work left queues the next one in a minute.

What goes, each batch in its own short transaction:
- done and cancelled jobs finished more than JOB_RETENTION_DAYS ago, dead jobs after
  JOB_DEAD_RETENTION_DAYS (an operator may still want them). Queued and running jobs are never
  touched: they are the pending work. (A pruned job's idempotency key can be used again: the keys
  in use are per appointment or per day, long past by then.)
- processed-event keys (the de-duplication of inbound webhooks/updates) older than
  JOB_RETENTION_DAYS: every platform stops redelivering within days.
- the bodies (text, postback payload, attachments, quick replies, images) of delivered messages
  that the conversation memory has folded into the summary (`id <= summary_until_message_id`: the
  prompt never reads them again) and that are older than MESSAGE_RETENTION_DAYS. The row stays
  (its platform id still de-duplicates a redelivery, and its token counts the bills). Skipped: a
  message not delivered (pending, dead: Kimmie sees those), and every conversation that is open, i.e.
  taken over by Kimmie, flagged for her attention, or with a job queued or running on it (a pending
  summary reads the folded messages).
- Booking holds are columns of their appointment (`hold_expires_at`), cleared by the hold's own
  transition; there are no hold rows to prune.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, Text, and_, cast, delete, exists, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.database import Database
from core.db.models import Conversation, Job, Message, ProcessedEvent, utcnow
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, enqueue
from core.jobs.worker import JobRegistry

log = logging.getLogger(__name__)

PRUNE_JOB = "prune"
BATCH = 500
# A run stops after this many batches per table and comes back in a minute: a first run on a big
# backlog never holds a worker for long.
MAX_BATCHES = 100
EVERY = timedelta(hours=1)
SOON = timedelta(minutes=1)
FIRST_AFTER_S = 60.0  # start-up is busy enough; and a short-lived process (a test) never prunes
LIVE = ("queued", "running")
DELIVERED = ("received", "sent")


@job_payload(PRUNE_JOB)
class PrunePayload(JobPayload):
    """Nothing to carry: what to prune follows from the clock and the settings."""


@dataclass(frozen=True, slots=True)
class Retention:
    done_jobs: timedelta = timedelta(days=7)
    dead_jobs: timedelta = timedelta(days=30)
    events: timedelta = timedelta(days=7)
    message_bodies: timedelta = timedelta(days=30)

    @classmethod
    def of_days(cls, *, jobs: float, dead_jobs: float, messages: float) -> Retention:
        return cls(
            done_jobs=timedelta(days=jobs),
            dead_jobs=timedelta(days=dead_jobs),
            events=timedelta(days=jobs),
            message_bodies=timedelta(days=messages),
        )


async def prune_jobs(session: AsyncSession, *, now: datetime, retention: Retention) -> int:
    """One batch of finished jobs past their retention. Never a queued or running one."""
    done_before, dead_before = now - retention.done_jobs, now - retention.dead_jobs

    def finished(statuses: tuple[str, ...], before: datetime) -> object:
        # `run_at < before` bounds the (status, run_at) index range; a finished job's run_at is at
        # most its lease end, so the few just inside the window simply go next run.
        return and_(Job.status.in_(statuses), Job.run_at < before, Job.finished_at < before)

    ids = (
        select(Job.id)
        .where(or_(finished(("done", "cancelled"), done_before), finished(("dead",), dead_before)))  # type: ignore[arg-type]
        .limit(BATCH)
    )
    result = await session.execute(delete(Job).where(Job.id.in_(ids.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def prune_events(session: AsyncSession, *, now: datetime, retention: Retention) -> int:
    ids = select(ProcessedEvent.id).where(ProcessedEvent.created_at < now - retention.events).limit(BATCH)
    result = await session.execute(delete(ProcessedEvent).where(ProcessedEvent.id.in_(ids.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _conversation_busy() -> object:
    """A job queued or running on the conversation: its turn, its replies, its summary."""
    conversation_id = cast(Conversation.id, String)
    keys = [literal("conversation:") + conversation_id, literal("deliver:conversation:") + conversation_id]
    keys.append(literal("summarize:") + conversation_id)
    return exists().where(Job.queue_key.in_(keys), Job.status.in_(LIVE))


async def prune_message_bodies(session: AsyncSession, *, now: datetime, retention: Retention) -> int:
    has_body = or_(
        Message.text != "",
        Message.payload.is_not(None),
        cast(Message.attachments, Text) != "[]",
        cast(Message.quick_replies, Text) != "[]",
        cast(Message.image_urls, Text) != "[]",
    )
    ids = (
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.summary_until_message_id.is_not(None),
            Message.id <= Conversation.summary_until_message_id,
            Message.created_at < now - retention.message_bodies,
            Message.delivery_status.in_(DELIVERED),
            has_body,
            ~Conversation.human_takeover,
            ~Conversation.needs_attention,
            ~_conversation_busy(),  # type: ignore[operator]
        )
        .limit(BATCH)
    )
    result = await session.execute(
        update(Message)
        .where(Message.id.in_(ids.scalar_subquery()))
        .values(text="", payload=None, attachments=[], quick_replies=[], image_urls=[])
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


PRUNERS = (("jobs", prune_jobs), ("processed_events", prune_events), ("message_bodies", prune_message_bodies))


async def prune(
    db: Database, *, retention: Retention, now: datetime | None = None
) -> tuple[dict[str, int], bool]:
    """Every pruner in batches of BATCH rows, one transaction each. Returns the counts, and whether
    some pruner stopped at MAX_BATCHES with work left."""
    now = now or utcnow()
    removed: dict[str, int] = {}
    more = False
    for name, pruner in PRUNERS:
        removed[name] = 0
        for _ in range(MAX_BATCHES):
            async with db.transaction() as session:
                n = await pruner(session, now=now, retention=retention)
            removed[name] += n
            if n < BATCH:
                break
        else:
            more = True
    return removed, more


async def schedule_prune(session: AsyncSession, *, at: datetime) -> None:
    """Queue a prune at `at` (one per minute slot, whoever asks)."""
    await enqueue(
        session,
        PRUNE_JOB,
        PrunePayload().dump(),
        run_at=at,
        idempotency_key=f"{PRUNE_JOB}:{at:%Y-%m-%dT%H:%M}",
    )


def register_prune_job(registry: JobRegistry, *, db: Database, retention: Retention) -> None:
    async def run(job: ClaimedJob) -> None:
        PrunePayload.load(job.payload)
        now = utcnow()
        removed, more = await prune(db, retention=retention, now=now)
        if more:
            async with db.transaction() as session:
                await schedule_prune(session, at=now + SOON)
        log.info("pruned", extra={"removed": removed, "more": more})

    registry.register(PRUNE_JOB, run)


async def enqueue_hourly_prune(db: Database, *, now: datetime | None = None) -> None:
    """Queue this hour's prune, due now (a no-op when some process already did)."""
    hour = (now or utcnow()).replace(minute=0, second=0, microsecond=0)
    async with db.transaction() as session:
        await enqueue(
            session, PRUNE_JOB, PrunePayload().dump(), idempotency_key=f"{PRUNE_JOB}:{hour:%Y-%m-%dT%H}"
        )


class PruneSchedule:
    """The process's clock for retention: `start()` at start-up, `stop()` at shutdown."""

    def __init__(self, db: Database, *, first_after_s: float = FIRST_AFTER_S) -> None:
        self.db = db
        self.first_after_s = first_after_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._tick(), name="prune-schedule")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await enqueue_hourly_prune(self.db)
            except Exception:  # the database is down: the next tick tries again
                log.warning("could not queue the hourly prune", exc_info=True)
            now = utcnow()
            await asyncio.sleep(
                ((now + EVERY).replace(minute=0, second=1, microsecond=0) - now).total_seconds()
            )
