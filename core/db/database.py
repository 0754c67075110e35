"""Engine, sessions and the unit of work.

`Database.transaction()` is the one commit point: repositories and services take the session it
yields, add and flush, and never commit. A use case opens exactly one transaction per inbound event
or request; jobs it enqueues commit with it or not at all.

SQLite has no row locks, so every write transaction is serialized: in-process by an asyncio lock,
across processes by `BEGIN IMMEDIATE` with a busy timeout. Do not nest `transaction()` calls, and do
not hold a transaction open across slow network calls (LLM, Graph API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from core.db.foreground import ForegroundWrites

log = logging.getLogger(__name__)

ENQUEUED_FLAG = "cheshire.jobs_enqueued"
# session.info key of the process's event subscribers (a core.events.FollowUps), set on every unit of
# work so that an event emitted anywhere reaches the integrations the composition root subscribed.
SUBSCRIBERS_KEY = "cheshire.event_subscribers"


class Database:
    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 10,
        pool_timeout_s: float = 30.0,
        subscribers: object | None = None,
    ) -> None:
        self.url = url
        self.subscribers = subscribers
        self.is_sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = self._create_engine(
            url, echo=echo, pool_size=pool_size, pool_timeout_s=pool_timeout_s
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._commit_listeners: list[Callable[[], None]] = []
        # Writes a caller waits on (webhook ingest): local job workers step aside while they run.
        self.foreground = ForegroundWrites()

    @staticmethod
    def _create_engine(url: str, *, echo: bool, pool_size: int, pool_timeout_s: float) -> AsyncEngine:
        if not url.startswith("sqlite"):
            # No pre-ping: it would add a round trip to every checkout (the job queue makes several
            # per job). A connection killed by a database restart fails one operation, which
            # invalidates the pool; jobs retry and requests are retried by their senders.
            return create_async_engine(
                url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
                pool_timeout=pool_timeout_s,  # every connection busy this long: a 503, not a hang
            )
        ensure_sqlite_directory(url)
        engine = create_async_engine(
            url, echo=echo, pool_timeout=pool_timeout_s, connect_args={"timeout": 30}
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (see "begin" below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def on_jobs_committed(self, listener: Callable[[], None]) -> None:
        """Called after any commit that enqueued jobs, so local workers wake at once."""
        self._commit_listeners.append(listener)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits once on success, rolls back on any exception."""
        if self._sqlite_lock is not None:
            async with self._sqlite_lock, self._unit_of_work() as session:
                yield session
        else:
            async with self._unit_of_work() as session:
                yield session

    @asynccontextmanager
    async def _unit_of_work(self) -> AsyncIterator[AsyncSession]:
        session = self.sessionmaker()
        if self.subscribers is not None:
            session.info[SUBSCRIBERS_KEY] = self.subscribers
        try:
            async with session.begin():
                yield session
            enqueued = session.info.pop(ENQUEUED_FLAG, False)
        finally:
            await session.close()
        if enqueued:
            self.jobs_committed()

    def jobs_committed(self) -> None:
        """Wake local workers: a commit just made jobs claimable (called by `transaction()` itself, and by
        code that enqueues through a single autocommit statement)."""
        for listener in self._commit_listeners:
            listener()

    @asynccontextmanager
    async def bookkeeping(self) -> AsyncIterator[AsyncConnection]:
        """A connection for single-statement queue bookkeeping (claim, complete, fail, release).

        On PostgreSQL it is in autocommit: each statement is atomic on its own, and skipping
        BEGIN/COMMIT saves two round trips per statement. On SQLite it is an ordinary write
        transaction, serialized like every other.
        """
        if self._sqlite_lock is not None:
            async with self._sqlite_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self._autocommit.connect() as conn:
                yield conn

    async def autocommit_connection(self) -> AsyncConnection:
        """A pooled PostgreSQL connection in autocommit, for a caller that holds it (a worker loop)."""
        if self.is_sqlite:
            raise RuntimeError("SQLite writes go through transaction()/bookkeeping(), serialized")
        return await self._autocommit.connect()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            log.warning("database ping failed", exc_info=True)
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file but not its directory (the default is ./var/cheshire.sqlite3)."""
    if not url.startswith("sqlite"):
        return
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_for(session: AsyncSession) -> Any:
    """The dialect's INSERT construct, which has `on_conflict_do_nothing` on both databases."""
    return pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
