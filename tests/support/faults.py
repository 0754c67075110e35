"""Database faults that need no proxy: a connection pool with every connection checked out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db.database import Database


@contextlib.asynccontextmanager
async def every_connection_busy(db: Database) -> AsyncIterator[None]:
    """Check out connections until the pool has none left: the next checkout times out (build `db`
    with a short `pool_timeout_s`)."""
    held: list[AsyncConnection] = []
    try:
        for _ in range(64):
            try:
                held.append(await db.engine.connect())
            except sa_exc.TimeoutError:
                break
        else:
            raise AssertionError("the pool never ran out")
        yield
    finally:
        for conn in held:
            await conn.close()
