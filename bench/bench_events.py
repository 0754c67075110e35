"""What the integration subscribers cost, and how fast one worker delivers events to n8n.

    .venv/bin/python bench/bench_events.py [--transitions 300] [--events 300] [--rounds 3] [--pg URL]

1. A booking transition's event: one transaction storing a `booking.confirmed` event row, with no
   subscribers (the reference) and with the n8n and Twenty subscribers (the same row plus their two
   jobs). Prints ms per transition for both and the difference.
2. Delivery: `--events` events queued for n8n, drained by one `Worker` loop (claim, load the event,
   check and write the delivery record, sign, POST, complete) against an instant fake n8n in the same
   process, beside a bare httpx loop POSTing the same signed bodies to the same fake. Prints events/s
   for both and the ratio, and the same jobs run by a no-op handler (the queue's own claim/complete
   floor), which says how much of the gap is the durable bookkeeping rather than the delivery.

SQLite in a temporary directory by default; `--pg postgresql://postgres@127.0.0.1:5432/postgres`
creates (and drops) a PostgreSQL database instead. Each number is the median of `--rounds`, with the
spread (min-max) beside it. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import delete, func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import events
from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.db.models import Client, DomainEvent, IntegrationDelivery, Job
from core.events import FollowUps
from core.integrations import n8n, no_count, twenty
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.settings import Settings

SECRET = "bench-secret"


async def instant_n8n() -> tuple[web.AppRunner, str]:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"message": "Workflow was started"})

    app = web.Application()
    app.router.add_post("/webhook/{path}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])  # the port the OS picked
    return runner, f"http://127.0.0.1:{port}"


def booking_facts(client_id: int, n: int) -> dict[str, Any]:
    return {
        "booking": {
            "id": n,
            "status": "confirmed",
            "client_id": client_id,
            "service": {"code": "full_groom", "name": "Full groom"},
            "pets": [{"id": 1, "name": "Biscuit"}],
            "start": "2027-03-10T14:00:00+00:00",
            "end": "2027-03-10T16:00:00+00:00",
            "start_local": "2027-03-10T09:00:00-05:00",
            "end_local": "2027-03-10T11:00:00-05:00",
            "timezone": "America/New_York",
            "price_min_cents": 8500,
            "price_max_cents": 9500,
        },
        "by": "kimmie",
    }


async def transitions(url: str, settings: Settings, count: int, subscribed: bool) -> float:
    """Seconds per transaction storing one booking event (and, subscribed, its jobs)."""
    subscribers = FollowUps()
    if subscribed:
        n8n.subscribe(subscribers, settings)
        twenty.subscribe(subscribers)
    db = Database(url, subscribers=subscribers)
    try:
        async with db.transaction() as session:
            client = Client(name="Ann Bench")
            session.add(client)
            await session.flush()
            client_id = client.id
        started = time.perf_counter()
        for n in range(count):
            async with db.transaction() as session:
                await events.emit(
                    session,
                    events.BOOKING_CONFIRMED,
                    subject=f"appointment:{n}",
                    data=booking_facts(client_id, n),
                )
        elapsed = time.perf_counter() - started
        async with db.transaction() as session:
            for table in (Job, DomainEvent, Client):
                await session.execute(delete(table))
        return elapsed / count
    finally:
        await db.dispose()


async def worker_delivery(
    url: str, settings: Settings, count: int, *, noop: bool = False
) -> tuple[float, list[bytes]]:
    """Events/s one worker loop delivers; returns the bodies it posted (for the reference). `noop`:
    the same jobs run by a handler that does nothing (the queue's own floor: claim + complete)."""
    subscribers = FollowUps()
    n8n.subscribe(subscribers, settings)
    db = Database(url, subscribers=subscribers)
    client = n8n.N8nClient(settings)
    registry = JobRegistry()
    if noop:

        async def nothing(job: ClaimedJob) -> None:
            return None

        registry.register(n8n.DELIVER_JOB, nothing)
    else:
        n8n.register_jobs(registry, db=db, client=client, on_call=no_count)
    try:
        async with db.transaction() as session:
            for n in range(count):
                await events.emit(
                    session,
                    events.CLIENT_UPDATED,
                    subject=f"client:{n}",
                    data={"client": {"id": n, "name": "Ann"}},
                )
        async with db.transaction() as session:
            rows = (await session.execute(select(DomainEvent).order_by(DomainEvent.id))).scalars().all()
            bodies = [
                n8n.envelope(events.Event(r.id, r.type, r.subject, r.occurred_at, r.data), r.data)
                for r in rows
            ]
        worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.01, lease_s=30.0))
        started = time.perf_counter()
        worker.start()
        while True:
            async with db.transaction() as session:
                left = await session.scalar(
                    select(func.count()).select_from(Job).where(Job.status.in_(("queued", "running")))
                )
            if not left:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        await worker.stop()
        async with db.transaction() as session:
            delivered = await session.scalar(select(func.count()).select_from(IntegrationDelivery))
            assert delivered == (0 if noop else count), delivered
            for table in (Job, DomainEvent, IntegrationDelivery):
                await session.execute(delete(table))
        return count / elapsed, bodies
    finally:
        await client.close()
        await db.dispose()


async def bare_loop(url: str, bodies: list[bytes]) -> float:
    """Events/s of httpx alone: the same signed bodies, one after the other, on one client."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        started = time.perf_counter()
        for body in bodies:
            response = await http.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Cheshire-Event-Id": "x",
                    "X-Cheshire-Event-Type": "client.updated",
                    "X-Cheshire-Signature": n8n.sign(body, SECRET),
                },
            )
            response.raise_for_status()
        return len(bodies) / (time.perf_counter() - started)


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=300)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=None, help="admin URL: run on a fresh PostgreSQL database")
    args = parser.parse_args()

    cleanup: Any = None
    if args.pg:
        import asyncpg

        name = f"cheshire_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.pg)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = f"{args.pg.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)

        async def drop() -> None:
            conn = await asyncpg.connect(args.pg)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()

        cleanup = drop
    else:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    await upgrade_to_head(url)
    runner, base = await instant_n8n()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=url,
        n8n_base_url=base,
        n8n_webhook_secret=SecretStr(SECRET),
        twenty_base_url="http://127.0.0.1:9",
        twenty_api_key=SecretStr("unused"),
    )
    try:
        plain, subscribed, ours, bare, floor = [], [], [], [], []
        for _ in range(args.rounds):
            plain.append(await transitions(url, settings, args.transitions, subscribed=False) * 1000)
            subscribed.append(await transitions(url, settings, args.transitions, subscribed=True) * 1000)
            rate, bodies = await worker_delivery(url, settings, args.events)
            ours.append(rate)
            bare.append(await bare_loop(n8n.webhook_url(settings), bodies))
            floor.append((await worker_delivery(url, settings, args.events, noop=True))[0])
        backend = "postgresql" if args.pg else "sqlite"
        extra = [s - p for s, p in zip(subscribed, plain, strict=True)]
        print(f"database: {backend}, rounds: {args.rounds}, median (min-max)")
        print(f"booking event, no subscribers      : {spread(plain, '{:.2f}')} ms/transition")
        print(f"booking event + n8n and Twenty jobs: {spread(subscribed, '{:.2f}')} ms/transition")
        print(f"  cost of the subscribers          : {spread(extra, '{:+.2f}')} ms/transition")
        print(f"n8n delivery, one worker           : {spread(ours, '{:.0f}')} events/s")
        print(f"bare httpx loop, same bodies       : {spread(bare, '{:.0f}')} events/s")
        print(f"queue floor (same jobs, no-op)     : {spread(floor, '{:.0f}')} events/s")
        ratios = [o / b for o, b in zip(ours, bare, strict=True)]
        print(f"  worker / bare                    : {spread([r * 100 for r in ratios], '{:.0f}')} %")
    finally:
        await runner.cleanup()
        if cleanup is not None:
            await cleanup()


if __name__ == "__main__":
    asyncio.run(main())
