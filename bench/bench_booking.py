"""Booking requests per second on PostgreSQL, and a check of zero double bookings.

    .venv/bin/python bench/bench_booking.py [--customers 200] [--pool 10]
                                            [--pg postgresql://postgres@127.0.0.1:5432/postgres]

A fresh database with the repository's catalog.toml and `--customers` customers, each with a dog.
Each customer asks for a different slot (a 15-minute nail trim; at most the catalog's daily limit per
day), one `request_booking` per unit of work, as the conversation tools do:

- floor: bare asyncpg, one transaction per request doing only the essential statements (day lock,
  overlap check, insert) one after the other: what this machine's PostgreSQL allows at all;
- reference: the same requests one after the other (no concurrency, no lock waits);
- ours: all of them at once (asyncio.gather; a pool of `--pool` + overflow connections), so the
  per-day advisory locks and the pool are what they contend on;
- contention: the customers again, ten per slot on a tenth as many slots: exactly one per slot wins.

After each round: no two live appointments overlap (a self-join over the table), and the number of
winners is what it must be. Prints requests per second for each round.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time as _time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.booking.api import BookingError
from core.booking.catalog import load_catalog
from core.booking.service import DefaultBookingService
from core.customers import get_or_create_conversation, get_or_create_identity, save_pet
from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.settings import Settings
from core.types import Booking, SizeClass

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
OVERLAPS = text(
    """
    SELECT count(*) FROM appointment a JOIN appointment b
      ON a.id < b.id AND a.start_at < b.end_at AND b.start_at < a.end_at
    WHERE a.status IN ('requested', 'confirmed') AND b.status IN ('requested', 'confirmed')
    """
)


async def round_trip(
    db: Database,
    service: DefaultBookingService,
    pairs: list[tuple[tuple[int, int], datetime]],
    *,
    concurrent: bool,
) -> tuple[float, int, int]:
    """Run the requests; returns (seconds, successes, refusals)."""

    async def one(customer: tuple[int, int], start: datetime) -> Booking | BookingError:
        try:
            async with db.transaction() as session:
                return await service.request_booking(
                    session,
                    client_id=customer[0],
                    service_code="nail_trim",
                    pet_ids=[customer[1]],
                    start=start,
                    source_channel=None,
                )
        except BookingError as exc:
            return exc

    t0 = _time.perf_counter()
    if concurrent:
        results = await asyncio.gather(*(one(c, s) for c, s in pairs))
    else:
        results = [await one(c, s) for c, s in pairs]
    elapsed = _time.perf_counter() - t0
    won = sum(1 for r in results if isinstance(r, Booking))
    return elapsed, won, len(results) - won


FLOOR_SQL = (
    "SELECT pg_advisory_xact_lock(17224, $1)",
    "SELECT count(*) FROM appointment WHERE status IN ('requested', 'confirmed') "
    "AND start_at < $2 AND end_at > $1",
    "INSERT INTO appointment (client_id, service_id, start_at, end_at, status, addon_codes, "
    "availability_verified) VALUES ($1, $2, $3, $4, 'requested', '[]', true) RETURNING id",
)


async def floor_round(pg_url: str, pairs: list[tuple[tuple[int, int], datetime]], service_id: int) -> float:
    conn = await asyncpg.connect(pg_url)
    try:
        t0 = _time.perf_counter()
        for (client_id, _pet), start in pairs:
            end = start + timedelta(minutes=15)
            async with conn.transaction():
                await conn.execute(FLOOR_SQL[0], start.toordinal())
                busy = await conn.fetchval(FLOOR_SQL[1], start, end)
                if not busy:
                    await conn.fetchval(FLOOR_SQL[2], client_id, service_id, start, end)
        return _time.perf_counter() - t0
    finally:
        await conn.close()


async def clear(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM job"))
        await session.execute(text("DELETE FROM appointment"))


async def overlaps(db: Database) -> int:
    async with db.transaction() as session:
        return int((await session.execute(OVERLAPS)).scalar_one())


async def main(args: argparse.Namespace) -> None:
    name = f"cheshire_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    db = Database(url, pool_size=args.pool)
    try:
        await upgrade_to_head(url)
        async with db.transaction() as session:
            await load_catalog(session, ROOT / "catalog.toml")
        customers: list[tuple[int, int]] = []
        async with db.transaction() as session:
            for n in range(args.customers):
                identity = await get_or_create_identity(session, "web", f"bench-{n}")
                await get_or_create_conversation(session, identity)
                pet = await save_pet(
                    session, client_id=identity.client_id, name=f"Dog{n}", size_class=SizeClass.TOY
                )
                customers.append((identity.client_id, pet.id))
        settings = Settings(_env_file=None, database_url=url, environment="bench")  # type: ignore[call-arg]
        service = DefaultBookingService(settings, now=lambda: NOW)

        async with db.transaction() as session:
            free = await service.find_slots(
                session, service_code="nail_trim", pet_ids=[customers[0][1]], limit=100_000
            )
        # Distinct slots, at most 8 a day (the catalog's max_appointments_per_day).
        per_day: dict[object, int] = {}
        slots: list[datetime] = []
        for slot in free:
            day = slot.start.astimezone(settings.tz).date()
            if per_day.get(day, 0) < 8:
                per_day[day] = per_day.get(day, 0) + 1
                slots.append(slot.start)
        if len(slots) < args.customers:
            raise SystemExit(
                f"only {len(slots)} distinct slots in the horizon for {args.customers} customers"
            )
        distinct = list(zip(customers, slots, strict=False))

        async with db.transaction() as session:
            service_id = int((await session.execute(text("SELECT id FROM service LIMIT 1"))).scalar_one())
        floor_s = await floor_round(args.pg.rsplit("/", 1)[0] + f"/{name}", distinct, service_id)
        await clear(db)
        seq_s, seq_won, seq_lost = await round_trip(db, service, distinct, concurrent=False)
        seq_overlaps = await overlaps(db)
        await clear(db)
        con_s, con_won, con_lost = await round_trip(db, service, distinct, concurrent=True)
        con_overlaps = await overlaps(db)
        await clear(db)
        hot_slots = slots[: max(1, args.customers // 10)]
        storm = [(c, hot_slots[n % len(hot_slots)]) for n, c in enumerate(customers)]
        storm_s, storm_won, storm_lost = await round_trip(db, service, storm, concurrent=True)
        storm_overlaps = await overlaps(db)

        n = args.customers
        print(f"{n} customers, PostgreSQL, pool {args.pool}+{args.pool} connections")
        print(f"{'':44} {'req/s':>8} {'booked':>7} {'refused':>8} {'overlaps':>9}")
        print(f"{'floor: bare asyncpg lock+check+insert':44} {n / floor_s:8.0f}")

        def row(label: str, seconds: float, won: int, lost: int, overlapping: int) -> None:
            print(f"{label:44} {n / seconds:8.0f} {won:7} {lost:8} {overlapping:9}")

        row("reference: ours one after the other", seq_s, seq_won, seq_lost, seq_overlaps)
        row("ours: all at once, distinct slots", con_s, con_won, con_lost, con_overlaps)
        row(
            f"contention: 10 per slot on {len(hot_slots)} slots",
            storm_s,
            storm_won,
            storm_lost,
            storm_overlaps,
        )
        ok = (
            seq_overlaps == con_overlaps == storm_overlaps == 0
            and con_won == n
            and storm_won == len(hot_slots)
        )
        print("double bookings: none" if ok else "DOUBLE BOOKING OR MISSING BOOKING: see the table above")
        if not ok:
            raise SystemExit(1)
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args()))
