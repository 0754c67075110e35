"""One process at a time: work that must not run twice (Telegram's getUpdates) runs only in the
process that holds a lock, and passes to another process when the holder dies.

On PostgreSQL the lock is a session-level advisory lock held on a connection of its own (outside the
pool, so no checkout, recycle or invalidation can drop it by accident). The server releases it the
moment that session ends, which is what a `kill -9` does to the holder's socket; the other processes
try again every few seconds and one of them takes the work over. The holder checks its connection on
the same beat and stops the work as soon as the connection is gone: after a database cut another
process may already hold the lock. `idle_session_timeout` makes the server end a holder's session that
vanished without closing its socket (a cut network), so the lock cannot stay with a dead process.

SQLite is one process by nature: there the lock is always held and the work just runs.

`one_process_at_a_time(session, name)` is the short form, for a start-up step every process runs
(loading the catalog): a transaction-level lock, so the second process waits, then sees the first's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

RETRY_S = 3.0  # how often a follower tries the lock and the holder checks its connection
CALL_TIMEOUT_S = 5.0
# A live holder speaks every RETRY_S seconds; the server ends a session silent for this long.
IDLE_SESSION_TIMEOUT_MS = 15_000
# What a database that went away raises (refused or dropped connections, time-outs, driver errors).
_DB_DOWN = (OSError, TimeoutError, SQLAlchemyError)


class Leadership(Protocol):
    """A lock one process holds at a time."""

    async def acquire(self) -> bool:
        """Take the lock if free; False when another process holds it or the database is away."""
        ...

    async def still_held(self) -> bool:
        """Is the lock still ours (is its connection alive)?"""
        ...

    async def release(self) -> None: ...


class AlwaysLeader:
    """SQLite: a single process, so the lock is always ours."""

    async def acquire(self) -> bool:
        return True

    async def still_held(self) -> bool:
        return True

    async def release(self) -> None:
        return None


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (advisory locks are per database)."""
    return int.from_bytes(hashlib.sha256(f"cheshire:{name}".encode()).digest()[:8], "big", signed=True)


class PgAdvisoryLock:
    """`pg_try_advisory_lock` on a dedicated autocommit connection; released when that session ends."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.key = lock_key(name)
        self._engine: AsyncEngine = create_async_engine(
            url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "timeout": CALL_TIMEOUT_S,
                "server_settings": {
                    "application_name": f"cheshire-lock:{name}"[:63],
                    "idle_session_timeout": str(IDLE_SESSION_TIMEOUT_MS),
                },
            },
        )
        self._conn: AsyncConnection | None = None
        self._unreachable = False

    async def acquire(self) -> bool:
        await self._drop()
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                conn = await self._engine.connect()
                try:
                    got = bool(
                        await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
                    )
                except BaseException:
                    await _close_quietly(conn)
                    raise
        except _DB_DOWN as exc:
            if not self._unreachable:  # once per outage, not every few seconds
                log.warning("lock %s: database unreachable (%s); trying again", self.name, type(exc).__name__)
            self._unreachable = True
            return False
        self._unreachable = False
        if not got:
            await _close_quietly(conn)
            return False
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await self._conn.execute(text("SELECT 1"))
        except _DB_DOWN as exc:
            log.warning("lock %s: its connection failed (%s); letting it go", self.name, type(exc).__name__)
            return False
        return True

    async def release(self) -> None:
        # Ending the session releases the lock; no unlock statement is needed (or possible when the
        # connection is what failed).
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)


async def _close_quietly(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await conn.invalidate()  # terminate the session: a broken one cannot be closed politely
    with contextlib.suppress(Exception):
        await conn.close()


async def one_process_at_a_time(session: AsyncSession, name: str) -> None:
    """Until this transaction ends, another process reaching the same `name` waits here (PostgreSQL;
    SQLite serializes write transactions anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})


def leadership_for(database_url: str, name: str) -> Leadership:
    return AlwaysLeader() if database_url.startswith("sqlite") else PgAdvisoryLock(database_url, name)


async def run_while_leader(
    lock: Leadership, work: Callable[[], Awaitable[None]], *, name: str, retry_s: float = RETRY_S
) -> None:
    """Wait for the lock, run `work` while it is held, and wait again if it is lost.

    Returns when `work` ends on its own (it stopped, or failed for good: another process may try it
    then). Losing the lock cancels `work`; cancelling this cancels `work` and lets the lock go.
    """
    waiting_logged = False
    while True:
        if not await lock.acquire():
            if not waiting_logged:
                log.info("%s runs in another process; this one takes over if that one stops", name)
                waiting_logged = True
            await asyncio.sleep(retry_s)
            continue
        waiting_logged = False
        log.info("%s runs in this process (it holds the lock)", name)
        task = asyncio.ensure_future(work())
        try:
            lost = await _watch(lock, task, retry_s)
        finally:
            if not task.done():
                task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            await lock.release()
        if isinstance(outcome, Exception):
            log.error("%s failed", name, exc_info=outcome)
        if not lost:
            return
        log.warning("%s stopped here: the lock was lost; trying to take it again", name)
        await asyncio.sleep(retry_s)


async def _watch(lock: Leadership, task: asyncio.Future[None], retry_s: float) -> bool:
    """Until `task` ends (False) or the lock is lost (True)."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=retry_s)
        if done:
            return False
        if not await lock.still_held():
            return True
