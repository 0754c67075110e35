"""The catalog: services, prices, hours, closures and policies.

`catalog.toml` is the editable source. `load_catalog` applies it to the database (service rows and
`business_config` rows) when the file's content changed since it was last applied, so edits made in
the database meanwhile survive restarts until the file itself is edited. A service missing from the
file is deactivated, never deleted (appointments keep pointing at it).

At run time everything is read back from the database (`read_rules`), never from the file.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.alerts import raise_alert
from core.db.models import BusinessConfig, Service, utcnow
from core.payments.policy import DepositPolicy, PolicyConfigError, parse_policy
from core.types import CoatType, SizeClass

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
SOURCE_KEY = "catalog_source"
CONFIG_KEYS = ("booking", "sizes", "matting", "hours", "breaks", "closures", "policies", "breeds", "deposits")


class CatalogError(ValueError):
    """The catalog file is malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class Window:
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Rules:
    """Business rules as stored in the database, parsed and typed."""

    currency: str = "USD"
    slot_step_min: int = 30
    buffer_min: int = 15
    min_notice_hours: float = 12.0
    horizon_days: int = 60
    hold_hours: float | None = None  # None: settings.booking_hold_hours
    max_appointments_per_day: int | None = None
    max_pets_per_day_by_size: Mapping[str, int] = field(default_factory=dict)
    rebooking_weeks: int | None = None  # None: settings.rebooking_weeks
    rebooking_weeks_by_coat: Mapping[str, int] = field(default_factory=dict)
    cancellation_notice_hours: float = 24.0
    size_max_kg: Mapping[str, float] = field(default_factory=dict)
    matting_min_cents: int = 0
    matting_max_cents: int = 0
    matting_minutes: int = 0
    hours: Mapping[int, Window] = field(default_factory=dict)  # weekday (Mon=0) → opening window
    breaks: Mapping[int, tuple[Window, ...]] = field(default_factory=dict)
    closures: frozenset[date] = frozenset()
    policies: tuple[tuple[str, str], ...] = ()
    breeds: Mapping[str, tuple[SizeClass | None, CoatType | None]] = field(default_factory=dict)
    deposits: DepositPolicy = field(default_factory=DepositPolicy)  # [deposits] (core/payments/policy.py)

    def windows(self, day: date) -> list[Window]:
        """Open windows of a local day: opening hours minus breaks, in order (empty when closed)."""
        if day in self.closures:
            return []
        opening = self.hours.get(day.weekday())
        if opening is None:
            return []
        pieces = [opening]
        for brk in sorted(self.breaks.get(day.weekday(), ()), key=lambda w: w.start):
            nxt: list[Window] = []
            for piece in pieces:
                if brk.end <= piece.start or brk.start >= piece.end:
                    nxt.append(piece)
                    continue
                if brk.start > piece.start:
                    nxt.append(Window(piece.start, brk.start))
                if brk.end < piece.end:
                    nxt.append(Window(brk.end, piece.end))
            pieces = nxt
        return pieces


def parse_window(text: str, where: str) -> Window:
    match = _RANGE.match(text)
    if not match:
        raise CatalogError(f"{where}: expected 'HH:MM-HH:MM', got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        window = Window(time(h1, m1), time(h2, m2))
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    if window.end <= window.start:
        raise CatalogError(f"{where}: the end must be after the start")
    return window


def _weekday(key: str, where: str) -> int:
    try:
        return WEEKDAYS.index(key.strip().lower()[:3])
    except ValueError:
        raise CatalogError(f"{where}: unknown weekday {key!r}") from None


def rules_from_config(config: Mapping[str, Any]) -> Rules:
    """Build `Rules` from the business_config values (the same shapes as the TOML tables)."""
    booking = dict(config.get("booking") or {})
    matting = dict(config.get("matting") or {})
    hours = {
        _weekday(day, "hours"): parse_window(str(text), f"hours.{day}")
        for day, text in (config.get("hours") or {}).items()
        if text
    }
    breaks = {
        _weekday(day, "breaks"): tuple(parse_window(str(t), f"breaks.{day}") for t in texts)
        for day, texts in (config.get("breaks") or {}).items()
    }
    closures_raw = (config.get("closures") or {}).get("dates", [])
    closures = frozenset(d if isinstance(d, date) else date.fromisoformat(str(d)) for d in closures_raw)
    breeds: dict[str, tuple[SizeClass | None, CoatType | None]] = {}
    for name, hint in (config.get("breeds") or {}).items():
        size = SizeClass(hint["size"]) if hint.get("size") else None
        coat = CoatType(hint["coat"]) if hint.get("coat") else None
        breeds[str(name).strip().lower()] = (size, coat)
    policies = tuple((str(k), str(v)) for k, v in (config.get("policies") or {}).items())
    try:
        deposits = parse_policy(config.get("deposits"))
    except PolicyConfigError as exc:
        raise CatalogError(str(exc)) from None
    return Rules(
        currency=str(booking.get("currency", "USD")),
        slot_step_min=int(booking.get("slot_step_min", 30)),
        buffer_min=int(booking.get("buffer_min", 15)),
        min_notice_hours=float(booking.get("min_notice_hours", 12)),
        horizon_days=int(booking.get("horizon_days", 60)),
        hold_hours=float(booking["hold_hours"]) if booking.get("hold_hours") else None,
        max_appointments_per_day=(
            int(booking["max_appointments_per_day"]) if booking.get("max_appointments_per_day") else None
        ),
        max_pets_per_day_by_size={
            str(k): int(v) for k, v in (booking.get("max_pets_per_day_by_size") or {}).items()
        },
        rebooking_weeks=int(booking["rebooking_weeks"]) if booking.get("rebooking_weeks") else None,
        rebooking_weeks_by_coat={
            str(k): int(v) for k, v in (booking.get("rebooking_weeks_by_coat") or {}).items()
        },
        cancellation_notice_hours=float(booking.get("cancellation_notice_hours", 24)),
        size_max_kg={str(k): float(v) for k, v in (config.get("sizes") or {}).items()},
        matting_min_cents=int(matting.get("surcharge_min_cents", 0)),
        matting_max_cents=int(matting.get("surcharge_max_cents") or matting.get("surcharge_min_cents") or 0),
        matting_minutes=int(matting.get("extra_minutes", 0)),
        hours=hours,
        breaks=breaks,
        closures=closures,
        policies=policies,
        breeds=breeds,
        deposits=deposits,
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def parse_catalog(text: str) -> dict[str, Any]:
    """Parse and validate the TOML text; raises CatalogError naming the bad entry."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog is not valid TOML: {exc}") from None
    data = _json_safe(data)
    rules_from_config(data)  # validates hours, breaks, closures, breeds
    codes: set[str] = set()
    for n, svc in enumerate(data.get("services") or []):
        where = f"services[{n}]"
        for key in ("code", "name", "price_cents", "duration_min"):
            if key not in svc:
                raise CatalogError(f"{where}: missing {key}")
        if svc["code"] in codes:
            raise CatalogError(f"{where}: duplicate code {svc['code']!r}")
        codes.add(svc["code"])
        for key in svc.get("size") or {}:
            SizeClass(key)
        for key in svc.get("coat") or {}:
            CoatType(key)
    if not codes:
        raise CatalogError("catalog has no services")
    return data


async def load_catalog(session: AsyncSession, path: str | Path, *, force: bool = False) -> bool:
    """Apply the catalog file to the database. Returns True when it was applied, False when the
    database already holds this exact file (unless `force`). Never commits."""
    text = Path(path).read_text(encoding="utf-8")  # noqa: ASYNC240 - a few KB, once at start
    digest = hashlib.sha256(text.encode()).hexdigest()
    source = await session.get(BusinessConfig, SOURCE_KEY)
    if source is not None and source.value.get("sha256") == digest and not force:
        return False
    data = parse_catalog(text)

    existing = {s.code: s for s in (await session.execute(select(Service))).scalars()}
    seen: set[str] = set()
    for svc in data.get("services") or []:
        code = str(svc["code"])
        seen.add(code)
        row = existing.get(code)
        if row is None:
            row = Service(code=code)
            session.add(row)
        row.name = str(svc["name"])
        row.description = svc.get("description")
        row.base_price_cents = int(svc["price_cents"])
        row.base_duration_min = int(svc["duration_min"])
        row.size_adjustments = dict(svc.get("size") or {})
        row.coat_adjustments = dict(svc.get("coat") or {})
        row.is_addon = bool(svc.get("addon", False))
        row.sort_order = int(svc.get("sort_order", 0))
        row.active = bool(svc.get("active", True))
    for code, row in existing.items():
        if code not in seen and row.active:
            row.active = False
            log.info("service deactivated: no longer in the catalog file", extra={"service": code})

    for key in CONFIG_KEYS:
        await _put_config(session, key, dict(data.get(key) or {}))
    await _put_config(session, SOURCE_KEY, {"sha256": digest, "path": str(path)})
    await session.flush()
    return True


PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_catalog_path(path: str | Path) -> Path:
    """A relative CATALOG_FILE is looked up in the working directory, then in the project root (so
    `python -m bot` finds the repository's catalog.toml from anywhere)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    in_project = PROJECT_ROOT / candidate
    return in_project if in_project.exists() else candidate


async def apply_catalog_file(session: AsyncSession, path: str | Path) -> bool:
    """Start-up: apply the file when it changed. A missing or broken file keeps the catalog already
    in the database; either way the process keeps running and Kimmie is told once (without a
    catalog there are no services or hours to offer, but chats still reach her)."""
    resolved = resolve_catalog_path(path)
    try:
        return await load_catalog(session, resolved)
    except (OSError, CatalogError) as exc:
        stored = await session.get(BusinessConfig, SOURCE_KEY) is not None
        consequence = (
            "the previous prices and hours stay in use" if stored else "no services or hours are set up"
        )
        log.error("catalog file not applied", extra={"path": str(resolved), "error": str(exc)[:300]})
        await raise_alert(
            session,
            "catalog_file",
            f"The catalog file ({resolved}) could not be applied, so {consequence}: {str(exc)[:300]}",
        )
        return False


async def _put_config(session: AsyncSession, key: str, value: dict[str, Any]) -> None:
    row = await session.get(BusinessConfig, key)
    if row is None:
        session.add(BusinessConfig(key=key, value=value, updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()


# Built once (every booking request and search reads the config); plain rows, no ORM objects.
_READ_CONFIG = select(BusinessConfig.key, BusinessConfig.value).where(BusinessConfig.key.in_(CONFIG_KEYS))


async def read_config(session: AsyncSession) -> dict[str, Any]:
    rows = await session.execute(_READ_CONFIG)
    return {key: value for key, value in rows}


# What the stored config looked like when it was last parsed: (rows, latest change) and its rules.
_CONFIG_STAMP = select(func.count(), func.max(BusinessConfig.updated_at)).where(
    BusinessConfig.key.in_(CONFIG_KEYS)
)
_last_parsed: tuple[tuple[Any, ...], Rules] | None = None


async def read_rules(session: AsyncSession) -> Rules:
    """The rules as stored now. Every change of a config row sets its `updated_at`
    (`_put_config`), so when the rows' count and latest change are what they were at the last call,
    the rules parsed then still hold: one small row read instead of reading and parsing every
    value (the breeds table is most of the config), which every booking request and search does."""
    global _last_parsed
    stamp = tuple((await session.execute(_CONFIG_STAMP)).one())
    cached = _last_parsed
    if cached is not None and cached[0] == stamp:
        return cached[1]
    rules = rules_from_config(await read_config(session))
    _last_parsed = (stamp, rules)
    return rules


async def set_config(session: AsyncSession, key: str, value: dict[str, Any]) -> None:
    """Change one business_config entry (Kimmie's edits); validated before it is stored."""
    if key not in CONFIG_KEYS:
        raise CatalogError(f"unknown config key {key!r}")
    config = await read_config(session)
    config[key] = value
    rules_from_config(config)
    await _put_config(session, key, value)
