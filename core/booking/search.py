"""Free slots: working hours minus breaks and closures, minus live appointments and Google Calendar's
busy times (with the buffer around each), within notice and horizon, spread over several days.

The hot path sweeps POSIX seconds, not datetimes, and reads appointments by window: the first
`FIRST_WINDOW_DAYS`, then windows twice as long each time (after a window with no free day, the
whole rest at once), only while fewer than `limit` days have a free slot. A customer's "when can
you fit us in?" is answered from the first days, not the whole horizon. A later window reads only
the appointments starting in it and carries over the earlier windows' spans that reach into it, so
a horizon with no free day is read once, not window over window from the start. On PostgreSQL the
database merges the appointments into busy blocks (`read_busy_blocks`), so a crowded window is a
few rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from core.booking.api import TimeOfDay
from core.booking.availability import Seconds, day_windows, free_starts_s, from_seconds, merge_s, spread
from core.booking.catalog import Rules, read_rules
from core.booking.guard import SlotGuard
from core.booking.occupancy import day_has_room, read_busy_blocks, read_occupancy, utc_span
from core.booking.records import load_addons, load_pets, load_service
from core.booking.sizing import quote_pets, size_counts
from core.db.database import dialect_name
from core.types import Slot

FIRST_WINDOW_DAYS = 3  # then 6, 12, 24...: a window grows only when the earlier ones had too few days


class SlotSearch:
    def __init__(self, tz: ZoneInfo, guard: SlotGuard, *, now: Callable[[], datetime]) -> None:
        self.tz = tz
        self.guard = guard
        self.now = now

    async def find_slots(
        self,
        session: AsyncSession,
        *,
        service_code: str,
        pet_ids: Sequence[int] = (),
        client_id: int | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
        time_of_day: TimeOfDay = "any",
        limit: int = 6,
        addon_codes: Sequence[str] = (),
    ) -> list[Slot]:
        rules = await read_rules(session)
        now = self.now()
        service = await load_service(session, service_code)
        addons = await load_addons(session, addon_codes)
        pets = await load_pets(session, pet_ids, client_id)
        duration = timedelta(minutes=quote_pets(rules, service, addons, pets).duration_min)
        sizes = size_counts(rules, pets)

        today = now.astimezone(self.tz).date()
        last_allowed = today + timedelta(days=rules.horizon_days)
        first = max(date_from or today, today)
        last = min(date_to or last_allowed, last_allowed)
        if first > last:
            return []
        range_start, range_end = utc_span(first, last, self.tz)
        # Calendar once for the whole range (one cached freeBusy call), before any day is computed.
        calendar_busy, verified = await self.guard.calendar(session, range_start, range_end)
        calendar_s = [(s.timestamp(), e.timestamp()) for s, e in calendar_busy]
        earliest = (now + timedelta(hours=rules.min_notice_hours)).timestamp()
        starts: list[datetime] = []
        days_found: set[date] = set()
        chunk_first = first
        # Stopping once `limit` different days have slots gives exactly what `spread` would pick from
        # the whole horizon (it takes one start from each of the first `limit` days). No window is
        # shorter than `limit` days, so a long list (Kimmie's "show me everything") is one read.
        chunk_days = max(FIRST_WINDOW_DAYS, limit)
        carried: list[Seconds] | None = None  # None: the first window, which reads from the start
        while chunk_first <= last and len(days_found) < limit:
            chunk_last = min(chunk_first + timedelta(days=chunk_days - 1), last)
            chunk, carried = await self._free_in(
                session,
                rules,
                chunk_first,
                chunk_last,
                sizes=sizes,
                now=now,
                duration=duration,
                calendar_s=calendar_s,
                earliest=earliest,
                carried=carried,
            )
            if time_of_day in ("morning", "afternoon"):
                want_morning = time_of_day == "morning"
                chunk = [t for t in chunk if (t.astimezone(self.tz).hour < 12) == want_morning]
            starts.extend(chunk)
            days_before = len(days_found)
            days_found.update(t.astimezone(self.tz).date() for t in chunk)
            chunk_first = chunk_last + timedelta(days=1)
            # A window with no free day at all says the horizon is crowded: read the rest at once
            # (a full horizon costs two reads, not one per doubling); else the next window doubles.
            chunk_days = (last - chunk_first).days + 1 if len(days_found) == days_before else chunk_days * 2
        return [Slot(start=t, end=t + duration, verified=verified) for t in spread(starts, self.tz, limit)]

    async def _free_in(
        self,
        session: AsyncSession,
        rules: Rules,
        first: date,
        last: date,
        *,
        sizes: Counter[str],
        now: datetime,
        duration: timedelta,
        calendar_s: list[Seconds],
        earliest: float,
        carried: list[Seconds] | None,
    ) -> tuple[list[datetime], list[Seconds]]:
        """Every free start between two local dates (inclusive), and the busy spans the next window
        still needs (those reaching past this window's end, less the buffer).

        After the first window only appointments starting at or after the window's start less the
        buffer are read: an earlier one that reaches in was read by an earlier window and arrives in
        `carried`. Spans are merged by what they cover, so a span read twice changes nothing."""
        buffer = timedelta(minutes=rules.buffer_min)
        pad = buffer.total_seconds()
        range_start, range_end = utc_span(first, last, self.tz)
        lo, hi = range_start - buffer, range_end + buffer
        starts_from = None if carried is None else lo
        if not sizes and dialect_name(session) == "postgresql":
            occupancy = await read_busy_blocks(
                session, lo, hi, rules=rules, now=now, tz=self.tz, pad_s=pad, starts_from=starts_from
            )
        else:
            occupancy = await read_occupancy(
                session,
                lo,
                hi,
                rules=rules,
                now=now,
                tz=self.tz,
                sizes_needed=sizes,
                as_seconds=True,
                starts_from=starts_from,
            )
        spans = [*(carried or ()), *occupancy.seconds]
        next_lo = range_end.timestamp() - pad
        carry = [span for span in spans if span[1] > next_lo]
        windows: list[Seconds] = []
        day = first
        while day <= last:
            if day_has_room(rules, occupancy, day, sizes):
                windows.extend((s.timestamp(), e.timestamp()) for s, e in day_windows(rules, day, self.tz))
            day += timedelta(days=1)
        if not windows:
            return [], carry
        busy = merge_s([*spans, *calendar_s], pad)
        found = free_starts_s(
            windows,
            busy,
            duration=duration.total_seconds(),
            step=rules.slot_step_min * 60.0,
            earliest=earliest,
        )
        return [from_seconds(t) for t in found], carry
