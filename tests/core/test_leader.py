"""One process at a time (core/db/leader.py): the advisory lock is held by one holder only, passes over
when the holder's session ends, and the work stops where the lock was lost. On SQLite it just runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text

from core.db.database import Database
from core.db.leader import AlwaysLeader, PgAdvisoryLock, leadership_for, run_while_leader


@pytest.mark.postgres_only
async def test_only_one_holder_and_the_lock_passes_when_the_holder_lets_go(database_url: str) -> None:
    first, second = PgAdvisoryLock(database_url, "job-x"), PgAdvisoryLock(database_url, "job-x")
    other = PgAdvisoryLock(database_url, "job-y")
    try:
        assert await first.acquire() is True
        assert await second.acquire() is False
        assert await other.acquire() is True  # another name is another lock
        await first.release()
        assert await second.acquire() is True
        assert await second.still_held() is True
    finally:
        for lock in (first, second, other):
            await lock.release()


@pytest.mark.postgres_only
async def test_the_work_moves_when_the_holders_session_dies(database_url: str, db: Database) -> None:
    """The holder's connection is killed (as `kill -9` or a cut network does): its work is cancelled
    and the waiting process starts the work."""
    running: list[str] = []
    stopped: list[str] = []
    started = asyncio.Condition()

    def work(who: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with started:
                running.append(who)
                started.notify_all()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append(who)

        return run

    lock_a, lock_b = PgAdvisoryLock(database_url, "poll"), PgAdvisoryLock(database_url, "poll")
    a = asyncio.create_task(run_while_leader(lock_a, work("a"), name="poll", retry_s=0.1))
    async with asyncio.timeout(30), started:
        await started.wait_for(lambda: running == ["a"])
    b = asyncio.create_task(run_while_leader(lock_b, work("b"), name="poll", retry_s=0.1))
    try:
        await asyncio.sleep(0.5)  # b tries several times meanwhile
        assert running == ["a"]
        async with db.transaction() as session:
            killed = await session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    # This test's database only: other runs on the same server hold their own "poll".
                    "WHERE application_name = 'cheshire-lock:poll' AND datname = current_database() "
                    "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
                )
            )
        assert killed == 1
        async with asyncio.timeout(30), started:
            await started.wait_for(lambda: "b" in running)
        # a stops its work once its next check finds the lock gone: b may start first (each checks
        # every 0.1 s, and under load b's check can come before a's), but a must stop.
        async with asyncio.timeout(30):
            while "a" not in stopped:
                await asyncio.sleep(0.05)
        assert "b" not in stopped
    finally:
        for task in (a, b):
            task.cancel()
        await asyncio.gather(a, b, return_exceptions=True)
        await lock_a.release()
        await lock_b.release()
    assert sorted(stopped) == ["a", "b"]


async def test_on_sqlite_the_work_just_runs_and_ends_when_it_ends() -> None:
    lock = leadership_for("sqlite+aiosqlite:///:memory:", "poll")
    assert isinstance(lock, AlwaysLeader)
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    async with asyncio.timeout(10):
        await run_while_leader(lock, work, name="poll")
    assert ran == [1]
