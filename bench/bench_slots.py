"""find_slots over a 60-day horizon on PostgreSQL: our sweep vs a naive reference, same run, same data.

    .venv/bin/python bench/bench_slots.py [--appointments 2000] [--busy 500] [--runs 200]
                                          [--pg postgresql://postgres@127.0.0.1:5432/postgres]

A fresh database gets the catalog (open 07:00-21:00 every day, no per-day limits, so free gaps remain
all over the horizon), `--appointments` live appointments at random times across the 60 days, and a
calendar stub answering `--busy` random busy intervals (what the cached Google freeBusy gives).

- ours: `DefaultBookingService.find_slots` end to end (rules, pets, the appointments query, calendar,
  the sorted-interval sweep, spreading), asking for every slot in the horizon.
- naive: the same rows loaded by the same query, then every candidate slot checked against every
  appointment and busy interval (`naive_free_starts`).
- floor: the same appointment rows fetched with bare asyncpg (no SQLAlchemy, no computing): the whole
  horizon, and the first 6 days alone (what the limit=6 search could at best get away with).
Both must return the same starts. Prints median and p99 in ms (goal: ours < 20 ms median with
limit=6). With many appointments the horizon fills up: the bench says how many days have a slot.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time as _time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import cast

import asyncpg
from sqlalchemy import Table, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.booking.availability import day_windows, local_to_utc, naive_free_starts
from core.booking.catalog import load_catalog, read_rules
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.db.models import Appointment, Client, Service
from core.settings import Settings
from core.types import Interval

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CATALOG = """
[booking]
slot_step_min = 15
buffer_min = 10
min_notice_hours = 12
horizon_days = 60
[hours]
mon = "07:00-21:00"
tue = "07:00-21:00"
wed = "07:00-21:00"
thu = "07:00-21:00"
fri = "07:00-21:00"
sat = "07:00-21:00"
sun = "07:00-21:00"
[breaks]
mon = ["12:30-13:00"]
wed = ["12:30-13:00"]
fri = ["12:30-13:00"]
[[services]]
code = "nail_trim"
name = "Nail trim"
price_cents = 1500
duration_min = 30
"""


class StubCalendar:
    def __init__(self, intervals: list[Interval]) -> None:
        self.intervals = intervals

    async def busy(self, start: datetime, end: datetime) -> list[Interval]:
        return [i for i in self.intervals if i.start < end and i.end > start]

    async def upsert_event(self, booking: object, *, summary: str, description: str) -> str:
        return "x"

    async def delete_event(self, booking_id: int, event_id: str | None) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    name = f"cheshire_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    db = Database(url)
    try:
        await upgrade_to_head(url)
        rng = random.Random(7)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "catalog.toml"
            path.write_text(CATALOG)
            async with db.transaction() as session:
                await load_catalog(session, path)
        horizon_start = NOW
        horizon_minutes = 61 * 24 * 60
        async with db.transaction() as session:
            client = Client(name="bench")
            session.add(client)
            await session.flush()
            service_id = (await session.scalars(select(Service.id).limit(1))).one()
            rows = []
            for _ in range(args.appointments):
                start = horizon_start + timedelta(minutes=rng.randrange(0, horizon_minutes, 5))
                rows.append(
                    {
                        "client_id": client.id,
                        "service_id": service_id,
                        "start_at": start,
                        "end_at": start + timedelta(minutes=rng.choice((15, 30, 45, 60))),
                        # Requested rows with a long hold: overlapping ones are allowed (unlike
                        # confirmed), so the random placement needs no packing.
                        "status": "requested",
                        "hold_expires_at": NOW + timedelta(days=365),
                        "addon_codes": [],
                        "availability_verified": True,
                    }
                )
            await session.execute(cast(Table, Appointment.__table__).insert(), rows)
        busy = []
        for _ in range(args.busy):
            start = horizon_start + timedelta(minutes=rng.randrange(0, horizon_minutes, 5))
            busy.append(Interval(start, start + timedelta(minutes=rng.choice((30, 60, 90, 120)))))
        busy.sort(key=lambda i: i.start)

        settings = Settings(_env_file=None, database_url=url, environment="bench")  # type: ignore[call-arg]
        service = DefaultBookingService(settings, StubCalendar(busy), now=lambda: NOW)
        tz = settings.tz
        today = NOW.astimezone(tz).date()

        async def ours() -> list[datetime]:
            async with db.transaction() as session:
                slots = await service.find_slots(session, service_code="nail_trim", limit=100_000)
            return [s.start for s in slots]

        async def naive() -> list[datetime]:
            async with db.transaction() as session:
                rules = await read_rules(session)
                last: date = today + timedelta(days=rules.horizon_days)
                lo = local_to_utc(today, time(0), tz) - timedelta(minutes=rules.buffer_min)
                hi = local_to_utc(last + timedelta(days=1), time(0), tz) + timedelta(minutes=rules.buffer_min)
                rows = await session.execute(
                    Appointment.__table__.select()
                    .with_only_columns(Appointment.start_at, Appointment.end_at)
                    .where(
                        Appointment.status.in_(("requested", "confirmed")),
                        Appointment.start_at < hi,
                        Appointment.end_at > lo,
                    )
                )
                spans = [(s, e) for s, e in rows]
            assert service.calendar is not None  # the bench wires its fake calendar
            cal = await service.calendar.busy(lo, hi)
            spans += [(i.start, i.end) for i in cal]
            windows = []
            day = today
            while day <= last:
                windows.extend(day_windows(rules, day, tz))
                day += timedelta(days=1)
            return naive_free_starts(
                windows,
                spans,
                duration=timedelta(minutes=30),
                step=timedelta(minutes=rules.slot_step_min),
                earliest=NOW + timedelta(hours=rules.min_notice_hours),
                buffer=timedelta(minutes=rules.buffer_min),
            )

        a, b = await ours(), await naive()
        assert a == b, f"results differ: {len(a)} vs {len(b)}"

        cpu: dict[str, float] = {}

        async def timed(fn: Callable[[], Awaitable[object]], runs: int) -> list[float]:
            out = []
            c0 = _time.process_time()
            for _ in range(runs):
                t0 = _time.perf_counter()
                await fn()
                out.append((_time.perf_counter() - t0) * 1000)
            cpu[fn.__name__] = (_time.process_time() - c0) * 1000 / runs
            return out

        await timed(ours, 5)
        ours_ms = await timed(ours, args.runs)
        naive_ms = await timed(naive, max(5, args.runs // 10))

        async def six() -> None:
            async with db.transaction() as session:
                await service.find_slots(session, service_code="nail_trim", limit=6)

        six_ms = await timed(six, args.runs)

        # Floor: the same appointment rows fetched with bare asyncpg (no SQLAlchemy, no computing).
        raw = await asyncpg.connect(args.pg.rsplit("/", 1)[0] + f"/{name}")
        floor_sql = (
            "SELECT extract(epoch FROM start_at)::float8, extract(epoch FROM end_at)::float8 "
            "FROM appointment WHERE status IN ('requested', 'confirmed') AND start_at < $2 AND end_at > $1 "
            "AND (status = 'confirmed' OR hold_expires_at IS NULL OR hold_expires_at > $3)"
        )

        async def floor() -> None:
            await raw.fetch(floor_sql, NOW - timedelta(days=1), NOW + timedelta(days=62), NOW)

        floor_ms = await timed(floor, args.runs)

        async def floor6() -> None:
            await raw.fetch(floor_sql, NOW - timedelta(days=1), NOW + timedelta(days=7), NOW)

        floor6_ms = await timed(floor6, args.runs)
        await raw.close()
        print(
            f"data: {args.appointments} appointments, {args.busy} calendar busy intervals, 60-day horizon, "
            f"{len(a)} free slots (identical in both) on {len({t.astimezone(tz).date() for t in a})} days"
        )

        def row(label: str, values: list[float], fn: str) -> None:
            print(
                f"{label:38} {statistics.median(values):10.2f} {pct(values, 0.99):10.2f} "
                f"{cpu[fn]:13.2f} {len(values):6}"
            )

        print(f"{'':38} {'median ms':>10} {'p99 ms':>10} {'our CPU ms/run':>13} {'runs':>6}")
        row("ours: find_slots, every slot", ours_ms, "ours")
        row("ours: find_slots, limit=6 (default)", six_ms, "six")
        row("naive: every slot x every interval", naive_ms, "naive")
        row("floor: bare asyncpg fetch, 60 days", floor_ms, "floor")
        row("floor: bare asyncpg fetch, first 6 days", floor6_ms, "floor6")
        speedup = statistics.median(naive_ms) / statistics.median(ours_ms)
        print(f"speed-up on every slot (median): {speedup:.1f}x; goal: ours < 20 ms median")
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appointments", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args()))
