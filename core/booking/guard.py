"""The slot guard: the one check that a time is free, used by request, approve and reschedule.

A check has two halves, always in this order:
1. `calendar()`, before any lock: Google Calendar's busy times (a cached network call) must never be
   waited for while holding the day lock or a row lock.
2. `lock_days()` then `ensure_free()`, inside the caller's transaction: a per-local-day
   `pg_advisory_xact_lock` on PostgreSQL (released at commit, so the next holder sees the winner's
   row; on SQLite `Database.transaction()` already serializes writes), then the appointments that
   are already there.

What differs between the three callers is data (`SlotCheck`): which appointments count (every live
one, or only confirmed ones when Kimmie approves a request that was already holding its slot), whether
the per-day limits apply, and which appointment is the one being moved. The PostgreSQL exclusion
constraint on confirmed appointments stays the last line (`flush_confirmed`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.alerts import raise_alert, resolve_alert
from core.booking import texts
from core.booking.api import PolicyError, SlotUnavailableError
from core.booking.availability import Span, overlaps_any, subtract
from core.booking.catalog import Rules
from core.booking.occupancy import day_has_room, read_occupancy, utc_span
from core.booking.records import CONFIRMED
from core.db.database import dialect_name
from core.db.models import Appointment
from core.ports import CalendarProvider, CalendarUnavailableError

log = logging.getLogger(__name__)

CALENDAR_FAULT = "calendar_unavailable"
_LOCK_NAMESPACE = 0x4348  # "CH": the first key of the two-int advisory lock; the second is the day


class Against(Enum):
    LIVE = "live"  # every confirmed appointment and every request still holding its slot
    CONFIRMED = "confirmed"  # approving a request: its own hold is what it competes with


@dataclass(frozen=True, slots=True)
class SlotCheck:
    start: datetime
    end: datetime
    buffer: timedelta
    against: Against = Against.LIVE
    exclude: int | None = None  # the appointment being moved or approved
    sizes: Counter[str] = field(default_factory=Counter)  # the pets it brings, for per-day size limits
    day_limits: bool = True
    taken: str = texts.TAKEN  # what the customer (or Kimmie) reads when it is not free


class SlotGuard:
    def __init__(self, tz: ZoneInfo, calendar: CalendarProvider | None) -> None:
        self.tz = tz
        self.provider = calendar
        self._calendar_down = False

    def local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    async def calendar(
        self, session: AsyncSession, start: datetime, end: datetime, *, own: Span | None = None
    ) -> tuple[list[Span], bool]:
        """Busy spans from Google Calendar (minus the appointment's `own` event), and whether it could
        be consulted. When it cannot, availability falls back to working hours and bookings, and
        Kimmie hears about it once."""
        if self.provider is None:
            return [], True
        try:
            intervals = await self.provider.busy(start, end)
        except (CalendarUnavailableError, TimeoutError, OSError) as exc:
            self._calendar_down = True
            await raise_alert(
                session,
                CALENDAR_FAULT,
                texts.CALENDAR_DOWN_ALERT.format(error=f"{type(exc).__name__}: {str(exc)[:200]}"),
            )
            return [], False
        if self._calendar_down:
            self._calendar_down = False
            await resolve_alert(session, CALENDAR_FAULT)
        busy = [(i.start, i.end) for i in intervals]
        return (subtract(busy, own) if own is not None else busy), True

    async def calendar_allows(
        self, session: AsyncSession, check: SlotCheck, *, refusal: str, own: Span | None = None
    ) -> bool:
        """Step 1: refuse a time the calendar is busy at. Returns whether the calendar was consulted."""
        busy, verified = await self.calendar(
            session, check.start - check.buffer, check.end + check.buffer, own=own
        )
        if overlaps_any(check.start, check.end, busy, check.buffer):
            raise SlotUnavailableError(refusal)
        return verified

    async def lock_days(self, session: AsyncSession, days: Iterable[date]) -> None:
        if dialect_name(session) != "postgresql":
            return  # SQLite: Database.transaction() already serializes every write
        for day in sorted(set(days)):  # one order everywhere: no deadlock between two days
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :day)"),
                {"ns": _LOCK_NAMESPACE, "day": day.toordinal()},
            )

    async def ensure_free(
        self, session: AsyncSession, check: SlotCheck, *, rules: Rules, now: datetime
    ) -> None:
        """Step 2 (under the day lock): no clash with the appointments that count, and room left in
        the day's limits."""
        if check.against is Against.CONFIRMED:
            clash = await self._confirmed_clash(session, check)
            if clash is not None:
                raise SlotUnavailableError(texts.overlaps_confirmed_on_approve(clash))
            return
        day = self.local_day(check.start)
        day_start, day_end = utc_span(day, day, self.tz)
        sizes = check.sizes if check.day_limits else Counter[str]()
        occupancy = await read_occupancy(
            session,
            min(day_start, check.start - check.buffer),
            max(day_end, check.end + check.buffer),
            rules=rules,
            now=now,
            tz=self.tz,
            sizes_needed=sizes,
            exclude=check.exclude,
        )
        if overlaps_any(check.start, check.end, occupancy.spans, check.buffer):
            raise SlotUnavailableError(check.taken)
        if check.day_limits and not day_has_room(rules, occupancy, day, sizes):
            raise PolicyError(texts.DAY_FULL)

    async def _confirmed_clash(self, session: AsyncSession, check: SlotCheck) -> int | None:
        conditions = [
            Appointment.status == CONFIRMED,
            Appointment.start_at < check.end + check.buffer,
            Appointment.end_at > check.start - check.buffer,
        ]
        if check.exclude is not None:
            conditions.append(Appointment.id != check.exclude)
        return await session.scalar(select(Appointment.id).where(*conditions).limit(1))


@asynccontextmanager
async def overlap_with_confirmed_refused(session: AsyncSession) -> AsyncIterator[None]:
    """Write a confirmed appointment's times inside this block (in a savepoint): the PostgreSQL
    exclusion constraint is the last word, and its refusal is the customer's "taken"."""
    try:
        async with session.begin_nested():
            yield
    except IntegrityError as exc:
        if "ex_appointment_no_overlap_confirmed" in str(exc.orig):
            raise SlotUnavailableError(texts.OVERLAPS_CONFIRMED) from None
        raise


async def flush_confirmed(session: AsyncSession) -> None:
    """Flush a confirmed appointment's times (see `overlap_with_confirmed_refused`)."""
    async with overlap_with_confirmed_refused(session):
        await session.flush()
