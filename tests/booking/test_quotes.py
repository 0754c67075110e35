"""Quotes from the catalog for a table of breeds, sizes, coats, weights, matting and add-ons."""

from __future__ import annotations

import pytest

from core.booking.api import NotFoundError
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.types import CoatType, SizeClass

pytestmark = pytest.mark.usefixtures("catalog_db")


@pytest.mark.parametrize(
    ("breed", "size", "coat", "weight", "price", "minutes"),
    [
        # full groom: $75 / 120 min; size and coat adjustments from catalog.toml
        ("Chihuahua", None, None, None, 6000, 90),  # toy -15, short +0
        ("Shih Tzu", None, None, None, 7500, 120),  # small -10, long +10
        ("Mini Goldendoodle", None, None, None, 9000, 150),  # medium, curly +15
        ("Golden Retriever", None, None, None, 10500, 165),  # large +20, double +10
        ("goldendoodle", None, None, None, 11000, 180),  # large +20, curly +15
        ("Bernese Mountain Dog", None, None, None, 13000, 195),  # giant +45, double +10
        ("Great Dane", None, None, None, 12000, 180),  # giant +45, short
        ("Sheepadoodle", None, None, None, 11000, 180),  # unknown doodle → large curly
        ("Labrador", SizeClass.GIANT, None, None, 13000, 195),  # an explicit size wins over the breed
        (None, None, CoatType.WIRE, 8.0, 7500, 120),  # weight 8 kg → small; wire +10
        (None, None, CoatType.SHORT, 50.0, 12000, 180),  # 50 kg → giant
        ("Beagle", None, CoatType.DOUBLE, None, 8500, 135),  # an explicit coat wins over the breed
    ],
)
async def test_full_groom_quotes(
    db: Database,
    service: DefaultBookingService,
    breed: str | None,
    size: SizeClass | None,
    coat: CoatType | None,
    weight: float | None,
    price: int,
    minutes: int,
) -> None:
    async with db.transaction() as session:
        quote = await service.quote(
            session, service_code="full_groom", breed=breed, size_class=size, coat_type=coat, weight_kg=weight
        )
    assert (quote.price_min_cents, quote.price_max_cents, quote.duration_min) == (price, price, minutes)
    assert quote.currency == "USD"


async def test_unknown_dog_gets_the_whole_range(db: Database, service: DefaultBookingService) -> None:
    async with db.transaction() as session:
        quote = await service.quote(session, service_code="full_groom", breed="something rare")
    assert quote.price_min_cents == 6000  # toy, short
    assert quote.price_max_cents == 13500  # giant, curly
    assert quote.duration_min == 210  # the longest: a slot found with it is long enough
    assert any("size unknown" in n for n in quote.notes)


async def test_matting_and_addons(db: Database, service: DefaultBookingService) -> None:
    async with db.transaction() as session:
        quote = await service.quote(
            session,
            service_code="bath_tidy",
            breed="cockapoo",
            matted=True,
            addon_codes=["teeth", "paw_balm"],
        )
    # bath & tidy $50 / 75: small -5/-10, curly +5/+15; matting +15..40 / +30; add-ons +10/10 and +8/5
    assert quote.price_min_cents == 5000 - 500 + 500 + 1500 + 1000 + 800
    assert quote.price_max_cents == 5000 - 500 + 500 + 4000 + 1000 + 800
    assert quote.duration_min == 75 - 10 + 15 + 30 + 10 + 5
    assert quote.service_name == "Bath & tidy + Teeth brushing + Paw balm"


async def test_unknown_codes(db: Database, service: DefaultBookingService) -> None:
    async with db.transaction() as session:
        with pytest.raises(NotFoundError):
            await service.quote(session, service_code="spa_day")
        with pytest.raises(NotFoundError):
            await service.quote(session, service_code="full_groom", addon_codes=["gold_leaf"])
        with pytest.raises(NotFoundError):  # an add-on is not bookable on its own
            await service.quote(session, service_code="teeth")
