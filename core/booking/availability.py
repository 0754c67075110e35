"""Free slots: pure interval arithmetic, no database, no clock.

Working windows are local wall-clock times in the business time zone, turned into UTC per day (so
a spring-forward or fall-back day gets its real offsets); everything after that is UTC.

`free_starts` is a sorted-interval sweep: windows and merged busy intervals are both walked once in
time order, so the cost is O(windows + busy + slots), not slots × appointments. `naive_free_starts`
checks every candidate against every busy interval; it is the reference for tests and the bench.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.booking.catalog import Rules

Span = tuple[datetime, datetime]


def local_to_utc(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """A local wall-clock time on a day, in UTC. A time skipped by spring-forward resolves with the
    offset before the change (02:30 becomes 03:30 local), an ambiguous fall-back time to its first
    occurrence (fold=0)."""
    local = datetime.combine(day, wall, tzinfo=tz)
    return local.astimezone(UTC)


def day_windows(rules: Rules, day: date, tz: ZoneInfo) -> list[Span]:
    return [(local_to_utc(day, w.start, tz), local_to_utc(day, w.end, tz)) for w in rules.windows(day)]


Seconds = tuple[float, float]  # a span as POSIX seconds: what the hot path sorts and sweeps


def to_seconds(spans: Iterable[Span]) -> list[Seconds]:
    return [(s.timestamp(), e.timestamp()) for s, e in spans]


def from_seconds(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def merge_s(spans: Iterable[Seconds], pad: float = 0.0) -> list[Seconds]:
    """Sort, grow by `pad` on both sides, and merge overlapping or touching spans (seconds)."""
    out: list[Seconds] = []
    last_end = float("-inf")
    for start, end in sorted(spans):
        if end <= start:
            continue
        start -= pad
        end += pad
        if out and start <= last_end:
            if end > last_end:
                last_end = end
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
            last_end = end
    return out


def free_starts_s(
    windows: Sequence[Seconds], busy: Sequence[Seconds], *, duration: float, step: float, earliest: float
) -> list[float]:
    """Start times on each window's grid (window start + k·step) where [t, t+duration) lies inside
    the window, at or after `earliest`, and overlaps no busy span. `windows` sorted and disjoint;
    `busy` merged and sorted (see `merge_s`). One pass over both lists."""
    out: list[float] = []
    j = 0
    n = len(busy)
    for w_start, w_end in windows:
        while j < n and busy[j][1] <= w_start:
            j += 1
        cursor = w_start
        k = j
        while cursor < w_end:
            blocked = k < n and busy[k][0] < w_end
            gap_end = min(busy[k][0], w_end) if blocked else w_end
            gap_start = max(cursor, earliest)
            t = w_start if gap_start <= w_start else w_start - ((w_start - gap_start) // step) * step
            while t + duration <= gap_end:
                out.append(t)
                t += step
            if not blocked:
                break
            cursor = max(cursor, busy[k][1])
            k += 1
    return out


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sort and merge overlapping or touching spans."""
    return [(from_seconds(s), from_seconds(e)) for s, e in merge_s(to_seconds(spans))]


def widen(spans: Iterable[Span], buffer: timedelta) -> list[Span]:
    """Busy spans grown by the buffer on both sides, merged: a slot must not touch them."""
    pad = buffer.total_seconds()
    return [(from_seconds(s), from_seconds(e)) for s, e in merge_s(to_seconds(spans), pad)]


def subtract(spans: Sequence[Span], hole: Span) -> list[Span]:
    """Spans minus one span (an appointment's own calendar event when it is being moved)."""
    out: list[Span] = []
    hs, he = hole
    for s, e in spans:
        if e <= hs or s >= he:
            out.append((s, e))
            continue
        if s < hs:
            out.append((s, hs))
        if e > he:
            out.append((he, e))
    return out


def free_starts(
    windows: Sequence[Span],
    busy: Sequence[Span],
    *,
    duration: timedelta,
    step: timedelta,
    earliest: datetime,
) -> list[datetime]:
    """`free_starts_s` on datetimes (busy merged and sorted, see `widen`)."""
    found = free_starts_s(
        to_seconds(windows),
        to_seconds(busy),
        duration=duration.total_seconds(),
        step=step.total_seconds(),
        earliest=earliest.timestamp(),
    )
    return [from_seconds(t) for t in found]


def naive_free_starts(
    windows: Sequence[Span],
    busy: Sequence[Span],
    *,
    duration: timedelta,
    step: timedelta,
    earliest: datetime,
    buffer: timedelta = timedelta(0),
) -> list[datetime]:
    """Reference: every candidate against every busy span (un-merged, buffer applied here)."""
    out: list[datetime] = []
    for w_start, w_end in windows:
        t = w_start
        while t + duration <= w_end:
            end = t + duration
            if t >= earliest and all(not (t < e + buffer and s - buffer < end) for s, e in busy):
                out.append(t)
            t += step
    return out


def overlaps_any(start: datetime, end: datetime, spans: Iterable[Span], buffer: timedelta) -> bool:
    return any(start < e + buffer and s - buffer < end for s, e in spans)


def inside_windows(start: datetime, end: datetime, windows: Sequence[Span]) -> bool:
    return any(ws <= start and end <= we for ws, we in windows)


def spread(starts: Sequence[datetime], tz: ZoneInfo, limit: int) -> list[datetime]:
    """Pick `limit` starts spread over days (a customer wants a choice of days, not six times on
    the first morning): a round over days taking the earliest unused start of each, repeated."""
    if limit <= 0:
        return []
    by_day: dict[date, list[datetime]] = {}
    for t in starts:
        by_day.setdefault(t.astimezone(tz).date(), []).append(t)
    days = sorted(by_day)
    picked: list[datetime] = []
    per_day = max(1, limit // max(len(days), 1))
    for day in days:  # first pass: the earliest days first, a few each
        take = by_day[day][: min(per_day, 2)]
        picked.extend(take)
        by_day[day] = by_day[day][len(take) :]
        if len(picked) >= limit:
            return sorted(picked[:limit])
    for day in days:
        for t in by_day[day]:
            if len(picked) >= limit:
                return sorted(picked)
            picked.append(t)
    return sorted(picked)
