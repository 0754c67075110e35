"""Reading queued jobs and running their handlers directly (no worker loop, no sleeping)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.db.database import Database
from core.db.models import Job, Message
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry


async def jobs(db: Database, kind: str, *, status: str | None = "queued") -> list[Job]:
    async with db.transaction() as session:
        query = select(Job).where(Job.kind == kind).order_by(Job.id)
        if status is not None:
            query = query.where(Job.status == status)
        return list((await session.execute(query)).scalars())


async def admin_events(db: Database) -> list[dict[str, Any]]:
    return [j.payload for j in await jobs(db, "notify_admin", status=None)]


async def outbound(db: Database) -> list[Message]:
    async with db.transaction() as session:
        rows = await session.execute(select(Message).where(Message.direction == "out").order_by(Message.id))
        return list(rows.scalars())


async def run_queued(db: Database, registry: JobRegistry, kind: str) -> int:
    """Run every queued job of a kind through its registered handler, marking it done."""
    ran = 0
    for job in await jobs(db, kind):
        handler = registry.get(kind)
        assert handler is not None, kind
        await handler(ClaimedJob(job.id, job.kind, job.payload, 1, job.max_attempts, job.idempotency_key))
        async with db.transaction() as session:
            row = await session.get_one(Job, job.id)
            row.status = "done"
        ran += 1
    return ran
