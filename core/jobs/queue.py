"""The durable job queue, on the application's own database.

Protocol:
- `enqueue()` inserts a row in the caller's transaction: the job exists only if the business change
  that caused it commits.
- A worker *claims* due jobs by setting status=running with a lease (`locked_until`). On PostgreSQL
  the claim uses `FOR UPDATE SKIP LOCKED`, so several processes share the queue without running a job
  twice. On SQLite writes are serialized by `Database.transaction()`, which gives the same guarantee.
- A running job whose lease expired (its worker died) is claimable again.
- Jobs that share a `queue_key` run one at a time in id order: a later one is not claimable while an
  earlier one is queued or running (one customer's messages are processed strictly in order).
- Failures reschedule with exponential backoff and jitter; after `max_attempts` the job is dead,
  with its last error kept for `dead_jobs()` and Kimmie's alerts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.db.database import ENQUEUED_FLAG, dialect_name, insert_for
from core.db.models import Job, utcnow

DEFAULT_MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 3600.0
MAX_ERROR_CHARS = 4000


class RetryLater(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a handler to be run again after `delay_s` (e.g. a platform's retry_after)."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_s:.1f}s")
        self.delay_s = delay_s


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job goes dead at once."""


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    idempotency_key: str | None


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    queue_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int | None:
    """Add a job in the caller's transaction. Returns its id, or None if the key already exists."""
    values = {
        "kind": kind,
        "payload": payload or {},
        "status": "queued",
        "run_at": run_at or utcnow(),
        "attempts": 0,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "queue_key": queue_key,
        "created_at": utcnow(),
    }
    insert = insert_for(session)
    stmt = insert(Job).values(**values)
    if idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
    job_id = (await session.execute(stmt.returning(Job.id))).scalar_one_or_none()
    if job_id is not None:
        session.info[ENQUEUED_FLAG] = True
    return job_id


async def cancel_jobs(session: AsyncSession, *, idempotency_key: str) -> int:
    """Drop a job that has not run yet (a reminder for an appointment that moved)."""
    result = await session.execute(
        update(Job)
        .where(Job.idempotency_key == idempotency_key, Job.status == "queued")
        .values(status="cancelled", finished_at=utcnow(), idempotency_key=None)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def _claimable(now: datetime) -> Any:
    earlier = aliased(Job)
    due = or_(
        and_(Job.status == "queued", Job.run_at <= now),
        and_(Job.status == "running", Job.locked_until < now),
    )
    blocked_by_earlier = exists().where(
        earlier.queue_key == Job.queue_key,
        earlier.id < Job.id,
        earlier.status.in_(("queued", "running")),
    )
    return and_(due, or_(Job.queue_key.is_(None), ~blocked_by_earlier))


async def claim(session: AsyncSession, *, worker_id: str, lease_s: float, limit: int = 1) -> list[ClaimedJob]:
    """Claim up to `limit` due jobs for `worker_id`, in one statement. Call in its own short transaction.

    On PostgreSQL the inner SELECT locks the rows it picks and skips rows another claimer holds, so
    concurrent claimers never get the same job; the UPDATE in the same statement takes the lease.
    """
    now = utcnow()
    pick = select(Job.id).where(_claimable(now)).order_by(Job.run_at, Job.id).limit(limit)
    if dialect_name(session) == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    rows = await session.execute(
        update(Job)
        .where(Job.id.in_(pick.scalar_subquery()))
        .values(
            status="running",
            attempts=Job.attempts + 1,
            locked_by=worker_id,
            locked_until=now + timedelta(seconds=lease_s),
        )
        .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts, Job.idempotency_key)
        .execution_options(synchronize_session=False)
    )
    claimed = [ClaimedJob(*row) for row in rows]
    claimed.sort(key=lambda job: job.id)
    return claimed


async def complete(session: AsyncSession, job_id: int, *, worker_id: str) -> bool:
    """Mark done, unless the lease was lost to another worker meanwhile."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
        .values(status="done", finished_at=utcnow(), locked_by=None, locked_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def backoff_delay(attempt: int, *, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [c/2, c] for c = min(cap, base * 2^(attempt-1)).

    Half the ceiling is kept so the delay still grows with every attempt; the random half spreads
    jobs that failed together (one outage) so they do not all retry in the same instant.
    """
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)


async def fail(
    session: AsyncSession,
    job: ClaimedJob,
    *,
    worker_id: str,
    error: str,
    retry_in_s: float | None = None,
    permanent: bool = False,
) -> str:
    """Reschedule or bury a failed job. Returns 'queued', 'dead', or 'lost' (lease taken over)."""
    dead = permanent or job.attempts >= job.max_attempts
    delay = retry_in_s if retry_in_s is not None else backoff_delay(job.attempts)
    values: dict[str, Any] = {
        "last_error": error[:MAX_ERROR_CHARS],
        "locked_by": None,
        "locked_until": None,
    }
    if dead:
        values |= {"status": "dead", "finished_at": utcnow()}
    else:
        values |= {"status": "queued", "run_at": utcnow() + timedelta(seconds=delay)}
    result = await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == worker_id, Job.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return "lost"  # the lease expired and another worker holds the job now
    return "dead" if dead else "queued"


async def release(session: AsyncSession, job_ids: list[int], *, worker_id: str) -> None:
    """Hand back jobs a stopping worker did not finish; the attempt does not count."""
    if not job_ids:
        return
    await session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.locked_by == worker_id, Job.status == "running")
        .values(status="queued", attempts=Job.attempts - 1, locked_by=None, locked_until=None)
    )


async def dead_jobs(session: AsyncSession, *, limit: int = 50) -> list[Job]:
    rows = await session.execute(
        select(Job).where(Job.status == "dead").order_by(Job.finished_at.desc(), Job.id.desc()).limit(limit)
    )
    return list(rows.scalars())


async def get_job(session: AsyncSession, job_id: int) -> Job | None:
    return await session.get(Job, job_id)


async def retry_dead(session: AsyncSession, job_id: int) -> bool:
    """Give a dead job a fresh set of attempts, due now. Returns False if it is not dead."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "dead")
        .values(status="queued", attempts=0, run_at=utcnow(), finished_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        session.info[ENQUEUED_FLAG] = True
        return True
    return False
