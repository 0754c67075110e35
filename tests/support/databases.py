"""Test databases: a fresh SQLite file or a fresh PostgreSQL database per test session,
migrated to head once; every test starts from empty tables."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import text

from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.db.models import Base

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def backend() -> str:
    return os.environ.get("CHESHIRE_TEST_DATABASE", "sqlite")


def pg_admin_url() -> str:
    return os.environ.get("CHESHIRE_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)


async def create_pg_database() -> str:
    """Create an empty database; returns its asyncpg SQLAlchemy URL."""
    name = f"cheshire_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_admin_url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = pg_admin_url().rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"


async def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(pg_admin_url())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / f'test-{uuid.uuid4().hex[:8]}.sqlite3'}"


async def fresh_empty_url(tmp_dir: Path) -> str:
    return await create_pg_database() if backend() == "postgres" else sqlite_url(tmp_dir)


async def dispose_url(url: str) -> None:
    if url.startswith("postgresql"):
        await drop_pg_database(url)


def migrated_url(tmp_dir: Path) -> str:
    """A new database at head (sync: used from a session-scoped fixture)."""

    async def _make() -> str:
        url = await fresh_empty_url(tmp_dir)
        await upgrade_to_head(url)
        return url

    return asyncio.run(_make())


async def wipe(db: Database) -> None:
    """Empty every table, quickly, keeping the schema."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.engine.begin() as conn:
        if db.is_sqlite:
            for name in tables:
                await conn.execute(text(f'DELETE FROM "{name}"'))
        else:
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
