"""The unit of work commits once, and a rollback leaves nothing behind — jobs included."""

import pytest
from sqlalchemy import func, select

from core.db.database import Database
from core.db.models import Client, Job
from core.jobs.queue import enqueue
from tests.support import job_kinds


async def test_commit_keeps_the_change_and_its_jobs(db: Database) -> None:
    async with db.transaction() as session:
        session.add(Client(name="Alice"))
        await enqueue(session, "welcome", job_kinds.WelcomePayload(name="Alice").dump())

    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Client)) == 1
        assert await session.scalar(select(func.count()).select_from(Job)) == 1


async def test_rollback_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            session.add(Client(name="Alice"))
            await enqueue(session, "welcome", job_kinds.WelcomePayload(name="Alice").dump())
            await session.flush()
            raise RuntimeError("the use case failed after writing")

    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Client)) == 0
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
