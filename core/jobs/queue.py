"""The durable job queue, on the application's own database.

Protocol:
- `enqueue()` inserts a row in the caller's transaction: the job exists only if the business change
  that caused it commits.
- A worker *claims* due jobs by setting status=running with a lease (`locked_until`). On PostgreSQL
  the claim uses `FOR UPDATE SKIP LOCKED`, so several processes share the queue without running a job
  twice. On SQLite writes are serialized by `Database.transaction()`, which gives the same guarantee.
- A running job whose lease expired (its worker died) is claimable again: a running job's `run_at`
  is its lease end. The lease is extended while the job runs (core/jobs/heartbeat.py), and the jobs
  of a worker whose heartbeat stopped are made claimable at once.
- Jobs that share a `queue_key` run one at a time in id order: a later one is inserted `blocked`
  while an earlier one is queued or running, and unblocked when the key's head finishes (database
  triggers, migration 0005, in the same statement), so the claim never looks at waiting jobs (one
  customer's messages are processed strictly in order).
- Failures reschedule with exponential backoff and jitter; after `max_attempts` the job is dead,
  with its last error kept for `dead_jobs()` and Kimmie's alerts.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.db.database import ENQUEUED_FLAG, dialect_name, insert_for
from core.db.insert_batch import open_batch
from core.db.models import Job, UtcDateTime, utcnow
from core.jobs.errors import PermanentJobError as PermanentJobError
from core.jobs.errors import RetryLater as RetryLater
from core.jobs.payloads import check_payload

DEFAULT_MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 3600.0
MAX_ERROR_CHARS = 4000


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
    """Add a job in the caller's transaction. Returns its id, or None if the key already exists, or
    None inside `inserts_together` (core/db/insert_batch.py), which writes it with the block's other
    rows when the block ends.

    A payload that is not its kind's model raises JobPayloadError here, before anything is written."""
    payload = payload or {}
    check_payload(kind, payload)
    values = {
        "kind": kind,
        "payload": payload,
        "status": "queued",
        "run_at": run_at or utcnow(),
        "attempts": 0,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "queue_key": queue_key,
        "blocked": False,  # the database's trigger blocks it behind its key's head (migration 0005)
        "created_at": utcnow(),
    }
    batch = open_batch(session)
    if batch is not None:
        batch.add(_job, [values], skip_conflicts_on=_IDEMPOTENCY)
        session.info[ENQUEUED_FLAG] = True
        return None
    insert = insert_for(session)
    stmt = insert(Job).values(**values)
    if idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
    job_id = (await session.execute(stmt.returning(Job.id))).scalar_one_or_none()
    if job_id is not None:
        session.info[ENQUEUED_FLAG] = True
    return job_id


_IDEMPOTENCY = ("idempotency_key",)


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: str
    payload: dict[str, Any]
    idempotency_key: str | None = None
    queue_key: str | None = None


@functools.cache
def _insert_jobs_statement(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(_job).on_conflict_do_nothing(index_elements=["idempotency_key"])


async def enqueue_many(session: AsyncSession, jobs: Sequence[NewJob]) -> None:
    """Add several due jobs in the caller's transaction with one statement, in order: jobs sharing a
    queue key run in the order given. A job whose idempotency key already exists is skipped. Every
    payload is checked against its kind's model first (JobPayloadError: none of them is written)."""
    if not jobs:
        return
    for job in jobs:
        check_payload(job.kind, job.payload)
    now = utcnow()
    rows = [
        {
            "kind": job.kind,
            "payload": job.payload,
            "status": "queued",
            "run_at": now,
            "attempts": 0,
            "max_attempts": DEFAULT_MAX_ATTEMPTS,
            "idempotency_key": job.idempotency_key,
            "queue_key": job.queue_key,
            "blocked": False,
            "created_at": now,
        }
        for job in jobs
    ]
    batch = open_batch(session)
    if batch is not None:
        batch.add(_job, rows, skip_conflicts_on=_IDEMPOTENCY)
    else:
        await session.execute(_insert_jobs_statement(dialect_name(session)), rows)
    session.info[ENQUEUED_FLAG] = True


async def cancel_jobs(session: AsyncSession, *, idempotency_key: str) -> int:
    """Drop a job that has not run yet (a reminder for an appointment that moved)."""
    result = await session.execute(
        update(Job)
        .where(Job.idempotency_key == idempotency_key, Job.status == "queued")
        .values(status="cancelled", finished_at=utcnow(), idempotency_key=None)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


# --- Bookkeeping statements --------------------------------------------------------------------------
# Built once and reused with bound parameters: SQLAlchemy then compiles each statement once and
# asyncpg reuses its prepared statement, which keeps per-job overhead close to a bare driver loop.
# They run on a session or on the worker's bookkeeping connection (`Database.bookkeeping()`).

Executor = AsyncSession | AsyncConnection
_job = cast(Table, Job.__table__)


def _dialect(executor: Executor) -> str:
    if isinstance(executor, AsyncConnection):
        return executor.dialect.name
    return dialect_name(executor)


# A live job: queued, or running (claimable again once its lease, kept in `run_at`, has ended). As
# text, so the claim's WHERE repeats the claimable index's predicate word for word (SQLite uses a
# partial index only then) and compiles without an expanding parameter (the fast path needs one SQL).
_LIVE_CANDIDATE = text("candidate.status IN ('queued', 'running')")


@functools.cache
def _claim_statement(skip_locked: bool) -> Any:
    """The due, unblocked live jobs in run order: one range of `ix_job_claimable`, which holds no
    done rows and no job waiting behind its queue key (`blocked`, kept by the database's triggers),
    so a claim reads about `limit` index entries whatever the backlog."""
    # An alias keeps the inner SELECT independent of the UPDATE's own `job` (no accidental correlation).
    job = _job.alias("candidate")
    pick = (
        select(job.c.id)
        .where(_LIVE_CANDIDATE, ~job.c.blocked, job.c.run_at <= bindparam("p_now", type_=UtcDateTime))
        .order_by(job.c.run_at, job.c.id)
        .limit(bindparam("p_limit", type_=Integer))
    )
    if skip_locked:
        pick = pick.with_for_update(skip_locked=True)
    target = _job
    until = bindparam("p_until", type_=UtcDateTime)
    return (
        update(target)
        .where(target.c.id.in_(pick.scalar_subquery()))
        .values(
            status="running",
            attempts=target.c.attempts + 1,
            locked_by=bindparam("p_worker"),
            locked_until=until,
            run_at=until,
        )
        .returning(
            target.c.id,
            target.c.kind,
            target.c.payload,
            target.c.attempts,
            target.c.max_attempts,
            target.c.idempotency_key,
        )
    )


@functools.cache
def _complete_statement() -> Any:
    return (
        update(_job)
        .where(
            _job.c.id == bindparam("p_id"),
            _job.c.locked_by == bindparam("p_worker"),
            _job.c.status == "running",
        )
        .values(
            status="done",
            finished_at=bindparam("p_finished", type_=UtcDateTime),
            locked_by=None,
            locked_until=None,
            last_error=None,
        )
    )


async def claim(executor: Executor, *, worker_id: str, lease_s: float, limit: int = 1) -> list[ClaimedJob]:
    """Claim up to `limit` due jobs for `worker_id` in one statement (one round trip).

    On PostgreSQL the inner SELECT locks the rows it picks and skips rows another claimer holds, so
    concurrent claimers never get the same job; the UPDATE in the same statement takes the lease.
    A single statement is atomic, so this is safe in autocommit as well as inside a transaction.
    """
    now = utcnow()
    statement = _claim_statement(_dialect(executor) == "postgresql")
    rows = await executor.execute(
        statement,
        {"p_now": now, "p_limit": limit, "p_worker": worker_id, "p_until": now + timedelta(seconds=lease_s)},
    )
    claimed = [ClaimedJob(*row) for row in rows]
    claimed.sort(key=lambda job: job.id)
    return claimed


async def complete(executor: Executor, job_id: int, *, worker_id: str) -> bool:
    """Mark done, unless the lease was lost to another worker meanwhile."""
    result = await executor.execute(
        _complete_statement(), {"p_id": job_id, "p_worker": worker_id, "p_finished": utcnow()}
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class PgFastPath:
    """`claim` and `complete` on a worker's own asyncpg connection (PostgreSQL, autocommit).

    The SQL is compiled once from the very statements above, so there is one definition of the
    protocol; only SQLAlchemy's per-execution machinery is skipped. It is the hot path: two
    statements per job, and at no-op speed that machinery costs as much as the database itself.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._claim = _Compiled(_claim_statement(True), dialect)
        self._complete = _Compiled(_complete_statement(), dialect)

    async def claim(self, raw: Any, *, worker_id: str, lease_s: float, limit: int = 1) -> list[ClaimedJob]:
        now = utcnow()
        params = {"p_now": now, "p_limit": limit, "p_worker": worker_id}
        params["p_until"] = now + timedelta(seconds=lease_s)
        rows = await raw.fetch(self._claim.sql, *self._claim.args(params))
        return sorted((ClaimedJob(*row) for row in rows), key=lambda job: job.id)

    async def complete(self, raw: Any, job_id: int, *, worker_id: str) -> bool:
        params = {"p_id": job_id, "p_worker": worker_id, "p_finished": utcnow()}
        status = await raw.execute(self._complete.sql, *self._complete.args(params))
        return bool(status.endswith(" 1"))  # "UPDATE 1"


class _Compiled:
    """A statement compiled once for asyncpg: SQL text plus how to lay out its positional arguments."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        names = list(compiled.positiontup or ())
        processors = compiled._bind_processors
        # Literal values (status strings, increments) are fixed: lay them out once. Only the
        # bindparam("p_...") values change per call.
        fixed = compiled.construct_params({name: None for name in names if name.startswith("p_")})
        self._template = [None if name.startswith("p_") else fixed[name] for name in names]
        self._slots = [
            (position, name, processors.get(name))
            for position, name in enumerate(names)
            if name.startswith("p_")
        ]

    def args(self, params: dict[str, Any]) -> list[Any]:
        values = list(self._template)
        for position, name, process in self._slots:
            value = params[name]
            values[position] = process(value) if process is not None else value
        return values


def backoff_delay(attempt: int, *, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [c/2, c] for c = min(cap, base * 2^(attempt-1)).

    Half the ceiling is kept so the delay still grows with every attempt; the random half spreads
    jobs that failed together (one outage) so they do not all retry in the same instant.
    """
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)


async def fail(
    executor: Executor,
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
    result = await executor.execute(
        update(_job)
        .where(_job.c.id == job.id, _job.c.locked_by == worker_id, _job.c.status == "running")
        .values(**values)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return "lost"  # the lease expired and another worker holds the job now
    return "dead" if dead else "queued"


async def release(executor: Executor, job_ids: list[int], *, worker_id: str) -> None:
    """Hand back jobs a stopping worker did not finish; the attempt does not count."""
    if not job_ids:
        return
    await executor.execute(
        update(_job)
        .where(_job.c.id.in_(job_ids), _job.c.locked_by == worker_id, _job.c.status == "running")
        .values(
            status="queued", attempts=_job.c.attempts - 1, locked_by=None, locked_until=None, run_at=utcnow()
        )
    )


async def dead_jobs(session: AsyncSession, *, limit: int = 50) -> list[Job]:
    rows = await session.execute(
        select(Job).where(Job.status == "dead").order_by(Job.finished_at.desc(), Job.id.desc()).limit(limit)
    )
    return list(rows.scalars())


@dataclass(frozen=True, slots=True)
class Retrying:
    """Jobs of one kind that failed at least once and wait for another try (an integration whose
    vendor is down or refusing: n8n's 404, Twenty's 401, 5xx)."""

    kind: str
    count: int
    next_run_at: datetime
    last_error: str


async def retrying_jobs(session: AsyncSession) -> list[Retrying]:
    """Per kind: how many queued jobs carry a failure, when the next one runs, the latest error."""
    rows = await session.execute(
        select(Job.kind, Job.run_at, Job.last_error)
        .where(Job.status == "queued", Job.last_error.is_not(None))
        .order_by(Job.kind, Job.id.desc())
    )
    by_kind: dict[str, Retrying] = {}
    for kind, run_at, error in rows:
        seen = by_kind.get(kind)
        if seen is None:
            by_kind[kind] = Retrying(kind, 1, run_at, error or "")
        else:
            by_kind[kind] = Retrying(kind, seen.count + 1, min(seen.next_run_at, run_at), seen.last_error)
    return list(by_kind.values())


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
