"""Migrations: every revision upgrades, downgrades and upgrades again (the stairway), on a fresh
database of the backend under test; the migrated schema matches the models; and on PostgreSQL the
exclusion constraint refuses two overlapping confirmed appointments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from core.db.database import Database
from core.db.migrate import alembic_config, run_alembic
from core.db.models import Appointment, Base, Client, Service
from tests.support import databases


def revisions() -> list[Script]:
    """Oldest first."""
    script = ScriptDirectory.from_config(alembic_config("unused"))
    return list(reversed(list(script.walk_revisions("base", "heads"))))


@pytest.fixture
async def empty_url(tmp_path: Path) -> AsyncIterator[str]:
    url = await databases.fresh_empty_url(tmp_path)
    try:
        yield url
    finally:
        await databases.dispose_url(url)


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names) - {"alembic_version"}


def test_there_is_a_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("unused"))
    assert len(script.get_heads()) == 1


@pytest.mark.parametrize("revision", revisions(), ids=lambda r: r.revision)
async def test_stairway_upgrade_downgrade_upgrade(empty_url: str, revision: Script) -> None:
    previous = revision.down_revision or "base"
    assert isinstance(previous, str)
    if previous != "base":
        await run_alembic(empty_url, "upgrade", previous)
    before = await table_names(empty_url)

    await run_alembic(empty_url, "upgrade", revision.revision)
    after = await table_names(empty_url)
    await run_alembic(empty_url, "downgrade", previous)
    assert await table_names(empty_url) == before
    await run_alembic(empty_url, "upgrade", revision.revision)
    assert await table_names(empty_url) == after


async def test_full_round_trip_leaves_an_empty_database(empty_url: str) -> None:
    await run_alembic(empty_url, "upgrade", "head")
    assert await table_names(empty_url) == {table.name for table in Base.metadata.sorted_tables}
    await run_alembic(empty_url, "downgrade", "base")
    assert await table_names(empty_url) == set()
    await run_alembic(empty_url, "upgrade", "head")


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrated_schema_agree(empty_url: str) -> None:
    await run_alembic(empty_url, "upgrade", "head")
    engine = create_async_engine(empty_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], "models.py and the migrations disagree; autogenerate would emit these"


@pytest.mark.postgres_only
async def test_overlapping_confirmed_appointments_are_refused(database_url: str, db: Database) -> None:
    start = datetime(2027, 3, 1, 15, 0, tzinfo=UTC)
    async with db.transaction() as session:
        client = Client(name="Alice")
        service = Service(code="bath", name="Bath", base_price_cents=5000, base_duration_min=60)
        session.add_all([client, service])
        await session.flush()
        client_id, service_id = client.id, service.id

    def appointment(offset_min: int, status: str) -> Appointment:
        begins = start + timedelta(minutes=offset_min)
        return Appointment(
            client_id=client_id,
            service_id=service_id,
            start_at=begins,
            end_at=begins + timedelta(hours=1),
            status=status,
        )

    async with db.transaction() as session:
        session.add(appointment(0, "confirmed"))
        # Requests may overlap (Kimmie chooses); back-to-back confirmed ones may touch.
        session.add(appointment(30, "requested"))
        session.add(appointment(60, "confirmed"))

    with pytest.raises(IntegrityError, match="ex_appointment_no_overlap_confirmed"):
        async with db.transaction() as session:
            session.add(appointment(30, "confirmed"))


async def test_processes_starting_together_migrate_once(empty_url: str) -> None:
    """Several processes upgrading the same empty database at once all succeed (PostgreSQL: one waits
    on an advisory lock; SQLite: writers are serialized)."""
    await asyncio.gather(*(run_alembic(empty_url, "upgrade", "head") for _ in range(3)))
    assert await table_names(empty_url) == {table.name for table in Base.metadata.sorted_tables}
