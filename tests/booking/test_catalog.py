"""catalog.toml → database: upsert on start, re-applied only when the file changes, services removed
from the file deactivated, business facts read back from the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.booking.api import NotFoundError
from core.booking.catalog import CatalogError, load_catalog, read_rules, set_config
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.db.models import Service
from tests.booking.conftest import CATALOG


async def services(db: Database) -> dict[str, Service]:
    async with db.transaction() as session:
        return {s.code: s for s in (await session.execute(select(Service))).scalars()}


async def test_load_upserts_services_and_config(db: Database, service: DefaultBookingService) -> None:
    async with db.transaction() as session:
        assert await load_catalog(session, CATALOG) is True
    rows = await services(db)
    assert rows["full_groom"].base_price_cents == 7500 and rows["full_groom"].active
    assert rows["teeth"].is_addon
    async with db.transaction() as session:
        listed = await service.list_services(session)
        info = await service.business_info(session)
    assert [s.code for s in listed][:2] == ["full_groom", "bath_tidy"]
    assert "Tue 09:00-17:00 (break 12:30-13:00)" in info.hours
    assert "Mon closed" in info.hours
    assert dict(info.policies)["cancellation"].startswith("Free cancellation")


async def test_reload_applies_only_a_changed_file(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    text = CATALOG.read_text()
    path.write_text(text)
    async with db.transaction() as session:
        await load_catalog(session, path)
    # Kimmie changes a price in the database; a restart with the same file keeps her change.
    async with db.transaction() as session:
        row = (await session.execute(select(Service).where(Service.code == "nail_trim"))).scalar_one()
        row.base_price_cents = 1800
    async with db.transaction() as session:
        assert await load_catalog(session, path) is False
    assert (await services(db))["nail_trim"].base_price_cents == 1800

    # The file is edited: a new price, and the de-shed service removed.
    edited = text.replace(
        'code = "nail_trim"\nname = "Nail trim"\ndescription = "Nail clip and file."\nprice_cents = 1500',
        'code = "nail_trim"\nname = "Nail trim"\ndescription = "Nail clip and file."\nprice_cents = 2000',
    )
    start = edited.index('[[services]]\ncode = "deshed"')
    end = edited.index("[[services]]", start + 5)
    path.write_text(edited[:start] + edited[end:])
    async with db.transaction() as session:
        assert await load_catalog(session, path) is True
    rows = await services(db)
    assert rows["nail_trim"].base_price_cents == 2000
    assert rows["deshed"].active is False  # deactivated, not deleted
    async with db.transaction() as session:
        codes = [
            s.code for s in (await session.execute(select(Service).where(Service.active.is_(True)))).scalars()
        ]
    assert "deshed" not in codes


async def test_removed_service_cannot_be_quoted(
    db: Database, service: DefaultBookingService, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.toml"
    text = CATALOG.read_text()
    start = text.index('[[services]]\ncode = "puppy_intro"')
    end = text.index("[[services]]", start + 5)
    path.write_text(text[:start] + text[end:])
    async with db.transaction() as session:
        await load_catalog(session, path)
    async with db.transaction() as session:
        with pytest.raises(NotFoundError):
            await service.quote(session, service_code="puppy_intro")


async def test_closure_added_in_the_database(catalog_db: Database, service: DefaultBookingService) -> None:
    async with catalog_db.transaction() as session:
        rules = await read_rules(session)
        await set_config(
            session, "closures", {"dates": ["2027-03-02", *sorted(str(d) for d in rules.closures)]}
        )
    async with catalog_db.transaction() as session:
        info = await service.business_info(session)
        rules = await read_rules(session)
    assert "2027-03-02" in {str(d) for d in rules.closures}
    assert "Tue Mar 2" in dict(info.policies)["closures"]
    async with catalog_db.transaction() as session:
        with pytest.raises(CatalogError):
            await set_config(session, "hours", {"tue": "17:00-09:00"})


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            '[hours]\ntue = "9-5"\n[[services]]\ncode="a"\nname="A"\nprice_cents=1\nduration_min=5\n',
            "hours.tue",
        ),
        ('[[services]]\ncode="a"\nname="A"\nprice_cents=1\n', "duration_min"),
        ("[booking]\n", "no services"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
async def test_bad_catalog_is_refused(db: Database, tmp_path: Path, snippet: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(snippet)
    async with db.transaction() as session:
        with pytest.raises(CatalogError, match=message):
            await load_catalog(session, path)


async def test_start_up_keeps_the_stored_catalog_when_the_file_is_broken(
    catalog_db: Database, service: DefaultBookingService, tmp_path: Path
) -> None:
    from core.booking.catalog import apply_catalog_file
    from tests.booking.helpers import admin_events

    broken = tmp_path / "catalog.toml"
    broken.write_text("[hours]\ntue = 'nine to five'\n")
    async with catalog_db.transaction() as session:
        assert await apply_catalog_file(session, broken) is False
        assert await apply_catalog_file(session, tmp_path / "missing.toml") is False
    async with catalog_db.transaction() as session:
        assert (await service.quote(session, service_code="nail_trim")).price_min_cents == 1500
    alerts = [e for e in await admin_events(catalog_db) if e["type"] == "alert"]
    assert len(alerts) == 1 and "previous prices and hours stay in use" in alerts[0]["text"]


async def test_relative_catalog_path_falls_back_to_the_project(db: Database) -> None:
    from core.booking.catalog import apply_catalog_file, resolve_catalog_path

    assert resolve_catalog_path("catalog.toml").resolve() == CATALOG.resolve()
    async with db.transaction() as session:
        assert await apply_catalog_file(session, "catalog.toml") is True
