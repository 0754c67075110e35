"""What the job queue holds right now, in one cheap statement (read by GET /metrics at scrape time).

Only live and dead rows are counted: `done` (and `cancelled`) rows pile up for ever and are left out by
the WHERE on `status`, which `ix_job_status_run_at (status, run_at)` serves. The oldest due job comes
from the same statement: per (kind, status) the smallest `run_at` of the queued rows is either in the
future (nothing of that kind is due) or it is the oldest due one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db.models import Job

# The statuses the scrape reports; the rest (done, cancelled) are history, not queue.
REPORTED_STATUSES = ("queued", "running", "dead")


@dataclass(frozen=True, slots=True)
class QueueStats:
    # (kind, status) -> number of jobs, for the statuses in REPORTED_STATUSES
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    # run_at of the oldest queued job whose time has come; None when nothing is due
    oldest_due_run_at: datetime | None = None

    @property
    def dead(self) -> int:
        return sum(n for (_kind, status), n in self.counts.items() if status == "dead")

    def oldest_due_age_s(self, now: datetime) -> float:
        if self.oldest_due_run_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_due_run_at).total_seconds())


_STATS = (
    select(Job.kind, Job.status, func.count(), func.min(Job.run_at))
    .where(Job.status.in_(REPORTED_STATUSES))
    .group_by(Job.kind, Job.status)
)


async def queue_stats(conn: AsyncConnection, *, now: datetime) -> QueueStats:
    counts: dict[tuple[str, str], int] = {}
    oldest: datetime | None = None
    for kind, status, count, min_run_at in await conn.execute(_STATS):
        counts[(kind, status)] = int(count)
        due = status == "queued" and min_run_at is not None and min_run_at <= now
        if due and (oldest is None or min_run_at < oldest):
            oldest = min_run_at
    return QueueStats(counts=counts, oldest_due_run_at=oldest)
