"""What is already booked in a time range: the live appointments' spans and what they use up per
local day (count, and pets per size class), read with Core statements (thousands of rows over a
60-day horizon, no ORM identity map needed).

"Live" is confirmed, or requested with a hold that has not run out (its expiry job may lag).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Float, and_, cast, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.booking.availability import Seconds, Span, from_seconds, local_to_utc
from core.booking.catalog import Rules
from core.booking.quotes import breed_hint, traits
from core.booking.records import CONFIRMED, LIVE, REQUESTED
from core.db.database import dialect_name
from core.db.models import Appointment, AppointmentPet, Pet
from core.types import SizeClass


@dataclass(slots=True)
class Occupancy:
    """Live appointments in a time range: their spans and what they use up per local day."""

    spans: list[Span] = field(default_factory=list)
    seconds: list[Seconds] = field(default_factory=list)  # the same spans as POSIX seconds (find_slots)
    per_day: Counter[date] = field(default_factory=Counter)
    sizes_per_day: dict[date, Counter[str]] = field(default_factory=dict)


def live_condition(now: datetime) -> ColumnElement[bool]:
    """Confirmed, or requested with a hold that has not run out (its expiry job may lag)."""
    return or_(
        Appointment.status == CONFIRMED,
        and_(
            Appointment.status == REQUESTED,
            or_(Appointment.hold_expires_at.is_(None), Appointment.hold_expires_at > now),
        ),
    )


def utc_span(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """From local midnight of `first` to local midnight after `last`, in UTC (DST-aware)."""
    return local_to_utc(first, time(0), tz), local_to_utc(last + timedelta(days=1), time(0), tz)


def local_day_edges(start: datetime, end: datetime, tz: ZoneInfo) -> tuple[list[date], list[float]]:
    """Local dates around [start, end) and the POSIX second each one begins (sorted)."""
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    days: list[date] = []
    edges: list[float] = []
    while day <= last:
        days.append(day)
        edges.append(local_to_utc(day, time(0), tz).timestamp())
        day += timedelta(days=1)
    return days, edges


def local_day_lookup(start: datetime, end: datetime, tz: ZoneInfo) -> Callable[[datetime], date]:
    """Local business date of a UTC instant in [start, end) by bisecting precomputed local
    midnights: one zone conversion per day instead of one per appointment."""
    days, edges = local_day_edges(start, end, tz)

    def day_of(instant: datetime) -> date:
        n = bisect_right(edges, instant.timestamp()) - 1
        return days[n] if 0 <= n < len(days) else instant.astimezone(tz).date()

    return day_of


def day_has_room(rules: Rules, occupancy: Occupancy, day: date, sizes: Counter[str]) -> bool:
    """The per-day limits: appointments per day, and pets per size class per day."""
    if (
        rules.max_appointments_per_day is not None
        and occupancy.per_day[day] >= rules.max_appointments_per_day
    ):
        return False
    used = occupancy.sizes_per_day.get(day, Counter())
    for size, n in sizes.items():
        limit = rules.max_pets_per_day_by_size.get(size)
        if limit is not None and used[size] + n > limit:
            return False
    return True


async def read_occupancy(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    rules: Rules,
    now: datetime,
    tz: ZoneInfo,
    sizes_needed: Counter[str],
    exclude: int | None = None,
    as_seconds: bool = False,
    starts_from: datetime | None = None,
) -> Occupancy:
    """`starts_from` leaves out what starts earlier: find_slots' later windows, whose caller already
    holds the appointments that began in the earlier ones (an index range, not every row since the
    beginning of time). The per-day counts stay whole for days from `starts_from` on."""
    conditions = _live_in(start, end, now, starts_from)
    if exclude is not None:
        conditions.append(Appointment.id != exclude)
    if sizes_needed:
        return await _with_sizes(session, conditions, start, end, rules=rules, tz=tz, as_seconds=as_seconds)
    if as_seconds:
        return await _as_seconds(session, conditions, start, end, rules=rules, tz=tz)
    occupancy = Occupancy()
    conn = await session.connection()
    rows = (await conn.execute(select(Appointment.start_at, Appointment.end_at).where(*conditions))).all()
    occupancy.spans.extend((s, e) for s, e in rows)
    if rules.max_appointments_per_day is not None:
        day_of = local_day_lookup(start, end, tz)
        for s, _ in occupancy.spans:
            occupancy.per_day[day_of(s)] += 1
    return occupancy


async def _as_seconds(
    session: AsyncSession,
    conditions: list[ColumnElement[bool]],
    start: datetime,
    end: datetime,
    *,
    rules: Rules,
    tz: ZoneInfo,
) -> Occupancy:
    """The find_slots hot path: spans as POSIX seconds, no datetime objects on PostgreSQL."""
    occupancy = Occupancy()
    conn = await session.connection()
    if dialect_name(session) == "postgresql":
        columns: tuple[Any, Any] = (
            cast(func.extract("epoch", Appointment.start_at), Float),
            cast(func.extract("epoch", Appointment.end_at), Float),
        )
        result = (await conn.execute(select(*columns).where(*conditions))).all()
        occupancy.seconds = [(r[0], r[1]) for r in result]
    else:
        result = (
            await conn.execute(select(Appointment.start_at, Appointment.end_at).where(*conditions))
        ).all()
        occupancy.seconds = [(r[0].timestamp(), r[1].timestamp()) for r in result]
    if rules.max_appointments_per_day is not None:
        days, edges = local_day_edges(start, end, tz)
        for begin, _ in occupancy.seconds:
            n = bisect_right(edges, begin) - 1
            occupancy.per_day[days[n] if 0 <= n < len(days) else from_seconds(begin).date()] += 1
    return occupancy


def _live_in(
    start: datetime, end: datetime, now: datetime, starts_from: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        Appointment.status.in_(LIVE),
        Appointment.start_at < end,
        Appointment.end_at > start,
        live_condition(now),
    ]
    if starts_from is not None:
        conditions.append(Appointment.start_at >= starts_from)
    return conditions


# Gaps and islands in one sort: a row starts a block when it begins more than `gap` after the
# furthest end before it; that furthest end is also where the previous block stops. The sentinel row
# at infinity starts the last "block", so its reach is where the real last block stops: one window
# pass, no second sort and grouping. Plain text, built once: it runs in every find_slots window.
_BLOCKS_SQL = f"""
SELECT extract(epoch FROM s)::float8, extract(epoch FROM reach)::float8 FROM (
    SELECT s, max(e) OVER (ORDER BY s ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM (
        SELECT start_at AS s, end_at AS e FROM {Appointment.__tablename__}
        WHERE status IN ('{REQUESTED}', '{CONFIRMED}') AND start_at < :hi AND end_at > :lo {{since}}
            AND (status = '{CONFIRMED}' OR hold_expires_at IS NULL OR hold_expires_at > :now)
        UNION ALL SELECT 'infinity'::timestamptz, 'infinity'::timestamptz
    ) live
) flagged
WHERE reach IS NULL OR s > reach + CAST(:gap AS interval)
"""
_BLOCKS = text(_BLOCKS_SQL.format(since=""))
_BLOCKS_SINCE = text(_BLOCKS_SQL.format(since="AND start_at >= :since"))


def blocks_from_starts(rows: Iterable[Sequence[Any]]) -> list[Seconds]:
    """(block start, furthest end before it) rows, the sentinel's last, into (start, end) blocks:
    each block ends where the next one's "furthest end before it" says."""
    ordered = sorted((r[0], r[1]) for r in rows)  # block starts are distinct: never compares None
    return [(ordered[i][0], ordered[i + 1][1]) for i in range(len(ordered) - 1)]


async def read_busy_blocks(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    rules: Rules,
    now: datetime,
    tz: ZoneInfo,
    pad_s: float,
    starts_from: datetime | None = None,
) -> Occupancy:
    """find_slots on PostgreSQL: the live appointments already merged into busy blocks by the
    database (gaps and islands), as POSIX seconds; `.seconds` holds the blocks, not the appointments.

    Two appointments whose gap is at most 2 x `pad_s` (the buffer on both sides) are one block, which
    is what `merge_s(spans, pad_s)` makes of them, so `merge_s(blocks + calendar, pad_s)` equals
    `merge_s(appointments + calendar, pad_s)`. A crowded window is then a handful of rows, not one
    per appointment. `.per_day` is counted by the database too (one row per local day), only when the
    rules limit appointments per day. `starts_from` as in `read_occupancy`."""
    params: dict[str, Any] = {"lo": start, "hi": end, "now": now, "gap": timedelta(seconds=2 * pad_s)}
    if starts_from is not None:
        params["since"] = starts_from
    conn = await session.connection()
    occupancy = Occupancy()
    rows = await conn.execute(_BLOCKS if starts_from is None else _BLOCKS_SINCE, params)
    occupancy.seconds = blocks_from_starts(rows)
    if rules.max_appointments_per_day is not None:
        local_day = func.date(func.timezone(str(tz), Appointment.start_at))
        conditions = _live_in(start, end, now, starts_from)
        per_day = select(local_day, func.count()).where(*conditions).group_by(local_day)
        for day, count in await conn.execute(per_day):
            occupancy.per_day[day] = count
    return occupancy


async def _with_sizes(
    session: AsyncSession,
    conditions: list[ColumnElement[bool]],
    start: datetime,
    end: datetime,
    *,
    rules: Rules,
    tz: ZoneInfo,
    as_seconds: bool,
) -> Occupancy:
    """Spans plus the pets per size class each day already holds (the size limits need them)."""
    occupancy = Occupancy()
    day_of = local_day_lookup(start, end, tz)
    conn = await session.connection()
    rows = (
        await conn.execute(
            select(
                Appointment.id,
                Appointment.start_at,
                Appointment.end_at,
                Pet.size_class,
                Pet.breed,
                Pet.weight_kg,
            )
            .outerjoin(AppointmentPet, AppointmentPet.appointment_id == Appointment.id)
            .outerjoin(Pet, Pet.id == AppointmentPet.pet_id)
            .where(*conditions)
        )
    ).all()
    seen: set[int] = set()
    hints: dict[str | None, SizeClass | None] = {}
    for appt_id, s, e, size_class, breed, weight in rows:
        day = day_of(s)
        if appt_id not in seen:
            seen.add(appt_id)
            occupancy.spans.append((s, e))
            if as_seconds:
                occupancy.seconds.append((s.timestamp(), e.timestamp()))
            occupancy.per_day[day] += 1
        size = size_class
        if size is None and (breed or weight):
            if breed not in hints:
                hints[breed] = breed_hint(rules, breed)[0]
            t = traits(rules, breed=None, size_class=hints[breed], coat_type=None, weight_kg=weight)
            size = t.size.value if t.size else None
        if size is not None:
            occupancy.sizes_per_day.setdefault(day, Counter())[size] += 1
    return occupancy
