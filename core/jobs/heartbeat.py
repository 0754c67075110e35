"""Worker heartbeats: a killed process's jobs run elsewhere within seconds, not after their lease.

Each `Worker` has a row in `job_worker` that it refreshes every beat (`beat_at`, and `expires_at` a
few beats ahead). On the same beat it extends the lease of the jobs it is running, so a long job is
never taken over while its worker lives. Jobs held by a worker whose row expired are made claimable
at once (their `run_at`, a running job's lease end, moves to now) and the row is deleted. At start-up
a worker also frees the jobs of this host's previous processes (same host name, a pid that no longer
exists), which a restart after `kill -9` finds before any heartbeat could expire.

A worker takes others over only after it has itself reached the database for the whole expiry
window: after a database cut every worker's row is stale, and the first one back must not take
over jobs whose workers are alive and simply have not beaten yet.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.db.database import dialect_name
from core.db.models import Job, JobWorker

# A worker is dead once it missed this many beats in a row.
DEAD_AFTER_BEATS = 3

Executor = AsyncSession | AsyncConnection
_worker = cast(Table, JobWorker.__table__)
_job = cast(Table, Job.__table__)


def _dialect(executor: Executor) -> str:
    return executor.dialect.name if isinstance(executor, AsyncConnection) else dialect_name(executor)


async def beat(
    executor: Executor, *, worker_id: str, hostname: str, pid: int, now: datetime, expires_at: datetime
) -> None:
    """Insert or refresh this worker's row (a row deleted by a take-over comes back)."""
    insert = pg_insert if _dialect(executor) == "postgresql" else sqlite_insert
    statement = insert(_worker).values(
        id=worker_id, hostname=hostname, pid=pid, started_at=now, beat_at=now, expires_at=expires_at
    )
    await executor.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={"beat_at": now, "expires_at": expires_at}
        )
    )


async def extend_leases(executor: Executor, *, worker_id: str, until: datetime) -> int:
    """Push the lease of every job this worker is running to `until`."""
    result = await executor.execute(
        update(_job)
        .where(_job.c.status == "running", _job.c.locked_by == worker_id)
        .values(locked_until=until, run_at=until)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _free_jobs_of(executor: Executor, worker_ids: list[str], now: datetime) -> list[int]:
    if not worker_ids:
        return []
    rows = await executor.execute(
        update(_job)
        .where(_job.c.status == "running", _job.c.locked_by.in_(worker_ids))
        .values(run_at=now, locked_until=now)
        .returning(_job.c.id)
    )
    freed = [int(job_id) for (job_id,) in rows]
    await executor.execute(delete(_worker).where(_worker.c.id.in_(worker_ids)))
    return freed


async def take_over_dead(executor: Executor, *, now: datetime) -> list[int]:
    """Make the jobs of every worker whose heartbeat expired claimable now. Returns their ids."""
    dead = list(await executor.scalars(select(_worker.c.id).where(_worker.c.expires_at < now)))
    return await _free_jobs_of(executor, dead, now)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    return True


def _pid_of(worker_id: str, hostname: str) -> int | None:
    """The pid in a worker id `host:pid:random`, if the worker ran on `hostname`."""
    parts = worker_id.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != hostname or not parts[1].isdigit():
        return None
    return int(parts[1])


async def take_over_previous_on_host(
    executor: Executor,
    *,
    hostname: str,
    pid: int,
    now: datetime,
    alive: Callable[[int], bool] = pid_alive,
) -> list[int]:
    """Free the running jobs of this host's earlier processes that no longer exist.

    Read from the jobs' `locked_by` (not only `job_worker`), so it also finds jobs of a process that
    died before its first beat. Another live process on this host, or another Worker of this very
    process, keeps its jobs.
    """
    holders = await executor.scalars(
        select(_job.c.locked_by).where(_job.c.status == "running", _job.c.locked_by.is_not(None)).distinct()
    )
    gone = []
    for holder in holders:
        holder_pid = _pid_of(holder, hostname)
        if holder_pid is not None and holder_pid != pid and not alive(holder_pid):
            gone.append(holder)
    return await _free_jobs_of(executor, gone, now)


async def forget(executor: Executor, *, worker_id: str) -> None:
    """A worker that stops cleanly removes its row."""
    await executor.execute(delete(_worker).where(_worker.c.id == worker_id))
