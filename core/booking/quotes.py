"""Prices and durations from the catalog. Pure functions: no database, no clock.

A quote is a range: whatever is unknown (size, coat, how matted) widens it. Size comes from an
explicit size class, else from the weight, else from the breed hint; coat from an explicit coat type,
else from the breed hint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.booking.catalog import Rules
from core.booking.texts import money
from core.db.models import Service
from core.types import CoatType, Quote, SizeClass

_SPACES = re.compile(r"[^a-z0-9]+")
MATTING_PRONE = frozenset({CoatType.CURLY, CoatType.LONG, CoatType.DOUBLE})


@dataclass(frozen=True, slots=True)
class PriceSpec:
    code: str
    name: str
    price_cents: int
    duration_min: int
    size_adjustments: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    coat_adjustments: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    is_addon: bool = False

    @classmethod
    def of(cls, row: Service) -> PriceSpec:
        return cls(
            code=row.code,
            name=row.name,
            price_cents=row.base_price_cents,
            duration_min=row.base_duration_min,
            size_adjustments=dict(row.size_adjustments or {}),
            coat_adjustments=dict(row.coat_adjustments or {}),
            is_addon=row.is_addon,
        )

    def cost(self, size: SizeClass | None, coat: CoatType | None) -> tuple[int, int]:
        """(price cents, minutes) for one pet of this size and coat."""
        price, minutes = self.price_cents, self.duration_min
        for table, key in ((self.size_adjustments, size), (self.coat_adjustments, coat)):
            adj: Mapping[str, Any] = table.get(key.value, {}) if key is not None else {}
            price += int(adj.get("price_cents", 0))
            minutes += int(adj.get("minutes", 0))
        return max(price, 0), max(minutes, 5)


@dataclass(frozen=True, slots=True)
class PetTraits:
    size: SizeClass | None
    coat: CoatType | None
    size_source: str | None = None  # "given", "weight", "breed"


def breed_hint(rules: Rules, breed: str | None) -> tuple[SizeClass | None, CoatType | None]:
    """The longest catalog breed name contained in what was written ("mini goldendoodle" wins over
    "goldendoodle" and "doodle")."""
    if not breed:
        return None, None
    text = f" {_SPACES.sub(' ', breed.lower()).strip()} "
    best: str | None = None
    for name in rules.breeds:
        key = f" {_SPACES.sub(' ', name).strip()} "
        if key in text and (best is None or len(name) > len(best)):
            best = name
    if best is None:
        # Doodle mixes are written a hundred ways ("goldendoodle", "golden-doodle", "sheepadoodle").
        if "doodle" in text or "poo" in text:
            return rules.breeds.get("doodle", (None, CoatType.CURLY))
        return None, None
    return rules.breeds[best]


def size_from_weight(rules: Rules, weight_kg: float | None) -> SizeClass | None:
    if weight_kg is None or weight_kg <= 0 or not rules.size_max_kg:
        return None
    for size in (SizeClass.TOY, SizeClass.SMALL, SizeClass.MEDIUM, SizeClass.LARGE):
        limit = rules.size_max_kg.get(size.value)
        if limit is not None and weight_kg <= limit:
            return size
    return SizeClass.GIANT


def traits(
    rules: Rules,
    *,
    breed: str | None,
    size_class: SizeClass | None,
    coat_type: CoatType | None,
    weight_kg: float | None,
) -> PetTraits:
    hint_size, hint_coat = breed_hint(rules, breed)
    if size_class is not None:
        size, source = size_class, "given"
    elif (by_weight := size_from_weight(rules, weight_kg)) is not None:
        size, source = by_weight, "weight"
    elif hint_size is not None:
        size, source = hint_size, "breed"
    else:
        size, source = None, None
    return PetTraits(size=size, coat=coat_type or hint_coat, size_source=source)


def quote_pet(
    rules: Rules,
    service: PriceSpec,
    addons: Sequence[PriceSpec],
    pet: PetTraits,
    *,
    matted: bool,
) -> Quote:
    """Price range and duration for one pet. Unknown size or coat: the range over every value,
    and the longest duration (so a slot found with it is long enough)."""
    sizes: list[SizeClass | None] = [pet.size] if pet.size else list(SizeClass)
    coats: list[CoatType | None] = [pet.coat] if pet.coat else [None, *CoatType]
    totals: list[tuple[int, int]] = []
    for size in sizes:
        for coat in coats:
            price, minutes = service.cost(size, coat)
            for addon in addons:
                a_price, a_minutes = addon.cost(size, coat)
                price += a_price
                minutes += a_minutes
            totals.append((price, minutes))
    low = min(p for p, _ in totals)
    high = max(p for p, _ in totals)
    minutes = max(m for _, m in totals)
    notes: list[str] = []
    if matted:
        low += rules.matting_min_cents
        high += rules.matting_max_cents
        minutes += rules.matting_minutes
        notes.append("includes a matting surcharge; the final amount depends on the coat on the day")
    elif pet.coat in MATTING_PRONE or pet.coat is None:
        notes.append("a matting surcharge may apply if the coat is matted")
    if pet.size is None:
        notes.append("size unknown: the breed or weight narrows the price")
    if pet.coat is None:
        notes.append("coat type unknown")
    if pet.size_source == "breed":
        notes.append(f"priced as a {pet.size.value if pet.size else '?'} dog from the breed")
    deposit = deposit_note(rules, pet.size)
    if deposit:
        notes.append(deposit)
    name = service.name + "".join(f" + {a.name}" for a in addons)
    return Quote(
        service_code=service.code,
        service_name=name,
        price_min_cents=low,
        price_max_cents=high,
        duration_min=minutes,
        currency=rules.currency,
        notes=tuple(notes),
    )


def deposit_note(rules: Rules, size: SizeClass | None) -> str | None:
    """The deposit rules that could apply to a pet of this size (who the client is, the request
    decides): "a $20 deposit may be asked (first visit, giant breed), taken off the final price"."""
    shown = []
    for rule in rules.deposits.rules:
        if rule.sizes and (size is None or size.value not in rule.sizes):
            continue
        amount = money(rule.amount_cents) if rule.amount_cents is not None else f"{rule.percent:g}%"
        shown.append(f"{amount} ({rule.name})")
    if not shown:
        return None
    return f"a deposit may be asked: {'; '.join(shown)}, taken off the final price"


def combine(quotes: Sequence[Quote]) -> Quote:
    """Several pets, one after the other: prices and durations add up."""
    first = quotes[0]
    notes: list[str] = []
    for q in quotes:
        notes.extend(n for n in q.notes if n not in notes)
    return Quote(
        service_code=first.service_code,
        service_name=first.service_name,
        price_min_cents=sum(q.price_min_cents for q in quotes),
        price_max_cents=sum(q.price_max_cents for q in quotes),
        duration_min=sum(q.duration_min for q in quotes),
        currency=first.currency,
        notes=tuple(notes),
    )
