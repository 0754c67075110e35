"""Shared fixtures. The same suite runs on SQLite and on PostgreSQL (CHESHIRE_TEST_DATABASE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.db.database import Database
from core.settings import Settings
from tests.support import databases


def pytest_report_header(config: pytest.Config) -> str:
    return f"cheshire test database: {databases.backend()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if databases.backend() == "postgres":
        return
    skip = pytest.mark.skip(reason="PostgreSQL-only behaviour; runs in the PostgreSQL pass of make test")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database for the whole session."""
    url = databases.migrated_url(tmp_path_factory.mktemp("db"))
    yield url
    asyncio.run(databases.dispose_url(url))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A Database on empty tables."""
    database = Database(database_url)
    await databases.wipe(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for tests: the test database, no integrations, nothing read from a .env file."""
    return Settings(_env_file=None, database_url=database_url, environment="test")  # type: ignore[call-arg]
