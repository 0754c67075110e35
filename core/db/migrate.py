"""Run Alembic from code: the service upgrades to head on start, `make migrate` does it alone."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from core.db.database import ensure_sqlite_directory

ROOT = Path(__file__).resolve().parents[2]
MIGRATION_LOCK_ID = 0x43484553  # "CHES": any constant shared by every process of this service


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    return config


async def run_alembic(url: str, action: str, revision: str = "head") -> None:
    """`action` is 'upgrade' or 'downgrade'. Runs on one connection, in one transaction."""
    ensure_sqlite_directory(url)
    config = alembic_config(url)
    engine = create_async_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})

    def _run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # Two processes starting together must not both create the schema: the second waits
            # here, then finds the database at head. Released when this transaction ends.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        elif connection.dialect.name == "sqlite":
            # pysqlite would run each DDL statement in autocommit: take the write lock and make the
            # whole upgrade one transaction (all or nothing, and one process at a time).
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


async def upgrade_to_head(url: str) -> None:
    await run_alembic(url, "upgrade", "head")


def main() -> int:
    """`python -m core.db.migrate` (`make migrate`): upgrade the configured database and exit."""
    from core.settings import Settings, SettingsError

    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"cheshire: {exc}", file=sys.stderr)
        return 2
    asyncio.run(upgrade_to_head(settings.database_url))
    print(f"database is at head ({settings.database_url.split('://', 1)[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
