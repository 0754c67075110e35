"""Booking fixtures: a movable clock, the repository's catalog loaded, customers with pets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.booking.catalog import load_catalog
from core.booking.service import DefaultBookingService
from core.customers import get_or_create_conversation, get_or_create_identity, save_pet
from core.db.database import Database
from core.settings import Settings
from core.types import CoatType, SizeClass

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "catalog.toml"
# A Monday in a quiet week (no closures): Tue-Sat are open in catalog.toml.
T0 = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class Customer:
    client_id: int
    conversation_id: int
    pet_ids: list[int]


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def catalog_db(db: Database) -> Database:
    async with db.transaction() as session:
        await load_catalog(session, CATALOG)
    return db


@pytest.fixture
def service(settings: Settings, clock: Clock) -> DefaultBookingService:
    return DefaultBookingService(settings, now=clock)


async def make_customer(
    db: Database,
    external_id: str,
    *,
    channel: str = "telegram",
    pets: tuple[tuple[str, str | None, SizeClass | None, CoatType | None], ...] = (
        ("Biscuit", "cockapoo", None, None),
    ),
) -> Customer:
    async with db.transaction() as session:
        identity = await get_or_create_identity(session, channel, external_id, display_name=external_id)
        conversation = await get_or_create_conversation(session, identity)
        pet_ids = []
        for name, breed, size, coat in pets:
            pet = await save_pet(
                session, client_id=identity.client_id, name=name, breed=breed, size_class=size, coat_type=coat
            )
            pet_ids.append(pet.id)
        return Customer(identity.client_id, conversation.id, pet_ids)


def small_catalog(
    *,
    hours: dict[str, str],
    breaks: dict[str, list[str]] | None = None,
    booking: str = "slot_step_min = 30\nbuffer_min = 0\nmin_notice_hours = 0\nhorizon_days = 400\n",
) -> str:
    """A minimal catalog: one 60-minute service, the given hours."""
    lines = ["[booking]", booking, "[hours]"]
    lines += [f'{day} = "{span}"' for day, span in hours.items()]
    lines.append("[breaks]")
    lines += [f"{day} = {spans!r}".replace("'", '"') for day, spans in (breaks or {}).items()]
    lines += ["[[services]]", 'code = "groom"', 'name = "Groom"', "price_cents = 5000", "duration_min = 60"]
    return "\n".join(lines) + "\n"


async def load_text(db: Database, tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    async with db.transaction() as session:
        await load_catalog(session, path)
