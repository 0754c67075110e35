"""What a booking's pets mean for the schedule: their traits, the combined quote, how many of each size
a day takes, and how soon their coats need the next groom."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from core.booking.catalog import Rules
from core.booking.quotes import PetTraits, PriceSpec, combine, quote_pet, traits
from core.db.models import Pet, Service
from core.types import CoatType, Quote, SizeClass


def pet_traits(rules: Rules, pet: Pet) -> PetTraits:
    return traits(
        rules,
        breed=pet.breed,
        size_class=SizeClass(pet.size_class) if pet.size_class else None,
        coat_type=CoatType(pet.coat_type) if pet.coat_type else None,
        weight_kg=pet.weight_kg,
    )


def quote_pets(rules: Rules, service: Service, addons: list[PriceSpec], pets: list[Pet]) -> Quote:
    spec = PriceSpec.of(service)
    if not pets:
        return quote_pet(rules, spec, addons, PetTraits(None, None), matted=False)
    # One groomer: several pets are done back to back, so durations and prices add up.
    return combine([quote_pet(rules, spec, addons, pet_traits(rules, p), matted=False) for p in pets])


def size_counts(rules: Rules, pets: Iterable[Pet]) -> Counter[str]:
    """Pets per size class, for the sizes the catalog limits per day."""
    counts: Counter[str] = Counter()
    for pet in pets:
        size = pet_traits(rules, pet).size
        if size is not None and size.value in rules.max_pets_per_day_by_size:
            counts[size.value] += 1
    return counts


def cadence_weeks(rules: Rules, pets: list[Pet], default_weeks: int) -> int:
    """Weeks until the next groom: the shortest of the pets' coats, else the catalog's or the default."""
    weeks = [
        rules.rebooking_weeks_by_coat[t.coat.value]
        for t in (pet_traits(rules, p) for p in pets)
        if t.coat is not None and t.coat.value in rules.rebooking_weeks_by_coat
    ]
    return min(weeks) if weeks else (rules.rebooking_weeks or default_weeks)
