"""Stripe webhook bench: verify + store + 200 (Cheshire) beside verify + 200 (a bare handler), same run.

    .venv/bin/python bench/bench_stripe_webhook.py [--rate 100] [--seconds 5] [--rounds 2]
                                                   [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Two servers, each in its own process (the load generator is this process):
- "cheshire": the production app (channels/app.py's middlewares) with the route `wire_payments`
  (cheshire/wiring.py) adds: the stripe SDK's signature check on the raw body, the event's fields,
  the event id stored once in `processed_event` with its `stripe_event` job in one transaction, 200.
  On a fresh migrated database: SQLite by default, PostgreSQL with --pg.
- "reference": a bare aiohttp handler that only verifies the signature with the same SDK call and
  answers 200: the floor.
Open loop: `--rate` events/s offered (each a distinct signed checkout.session.completed), 0.5 s of
warm-up, then `--seconds` measured; latency from each request's scheduled send time, so a server that
falls behind is not flattered. The servers alternate over `--rounds` rounds (machine load hits both
alike). Afterwards the stored events must equal the distinct events sent (nothing lost or doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "whsec_bench_0123456789"
PATH = "/webhook/stripe"


# --- servers (child processes) ----------------------------------------------------------------------


def serve_cheshire(url: str, port: int) -> None:
    from aiohttp import web

    from channels.app import create_app
    from cheshire.wiring import wire_payments
    from core.db.database import Database
    from core.events import FollowUps
    from core.jobs.worker import JobRegistry
    from core.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        environment="bench",
        stripe_secret_key="sk_test_bench",
        stripe_webhook_secret=SECRET,
        stripe_api_base="http://127.0.0.1:9",  # never called: the webhook path makes no API call
    )
    db = Database(settings.database_url)
    app = create_app(settings, db)
    wire_payments(settings=settings, db=db, registry=JobRegistry(), app=app, subscribers=FollowUps())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_reference(port: int) -> None:
    import stripe
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            stripe.WebhookSignature.verify_header(
                raw.decode(), request.headers.get("Stripe-Signature"), SECRET, 300
            )
        except stripe.SignatureVerificationError:
            return web.json_response({"error": "bad signature"}, status=400)
        return web.json_response({"received": True})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(PATH, handler)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- load -------------------------------------------------------------------------------------------------


def signed_event(n: int, tag: str) -> tuple[bytes, str]:
    import hashlib
    import hmac

    event = {
        "id": f"evt_{tag}_{n}_{uuid.uuid4().hex[:8]}",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": f"cs_test_{tag}_{n}",
                "object": "checkout.session",
                "payment_status": "paid",
                "payment_intent": f"pi_test_{tag}_{n}",
                "metadata": {"payment_id": str(n), "appointment_id": str(n)},
            }
        },
    }
    raw = json.dumps(event).encode()
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return raw, f"t={t},v1={mac}"


async def open_loop(url: str, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    import aiohttp

    warm = [signed_event(i, tag + "w") for i in range(int(rate * 0.5))]
    bodies = [signed_event(i, tag) for i in range(int(rate * seconds))]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:

        async def one(body: tuple[bytes, str], scheduled: float, counted: bool) -> None:
            async with http.post(url + PATH, data=body[0], headers={"Stripe-Signature": body[1]}) as response:
                await response.read()
                if counted:
                    latencies.append(time.perf_counter() - scheduled)
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        tasks = []
        t0 = time.perf_counter()
        for i, body in enumerate([*warm, *bodies]):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, scheduled, i >= len(warm))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "sent": len(bodies),
        "achieved_rps": (len(warm) + len(bodies)) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "statuses": statuses,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(port: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def fresh_database(pg_admin: str | None, workdir: Path) -> str:
    from core.db.migrate import upgrade_to_head

    if pg_admin:
        import asyncpg

        name = f"bench_stripe_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(pg_admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = pg_admin.rsplit("/", 1)[0] + f"/{name}"
        url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
    await upgrade_to_head(url)
    return url


async def stored(url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        n = (
            await conn.execute(text("SELECT count(*) FROM processed_event WHERE source = 'stripe'"))
        ).scalar_one()
        jobs = (await conn.execute(text("SELECT count(*) FROM job WHERE kind = 'stripe_event'"))).scalar_one()
    await engine.dispose()
    assert n == jobs, (n, jobs)
    return int(n)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = await fresh_database(args.pg, Path(tmp))
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        for kind in ("cheshire", "reference"):
            port = free_port()
            cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--url", url]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            procs[kind] = (
                subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                port,
            )
        try:
            for _, port in procs.values():
                await wait_ready(port)
            results: dict[str, list[dict[str, Any]]] = {"cheshire": [], "reference": []}
            for r in range(args.rounds):
                for kind, (_, port) in procs.items():
                    run = await open_loop(
                        f"http://127.0.0.1:{port}", args.rate, args.seconds, f"{kind[0]}{r}"
                    )
                    results[kind].append(run)
            sent = sum(run["sent"] for run in results["cheshire"]) + int(args.rate * 0.5) * args.rounds
            kept = await stored(url)
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(timeout=10)
    backend = "postgresql" if args.pg else "sqlite"
    print(
        f"stripe webhook, open loop {args.rate:g} events/s offered, "
        f"{args.seconds:g} s x {args.rounds} rounds, {backend}"
    )
    for kind, runs in results.items():
        p99 = [run["p99_ms"] for run in runs]
        p50 = [run["p50_ms"] for run in runs]
        print(
            f"  {kind:10s} p50 {statistics.median(p50):6.2f} ms  p99 {statistics.median(p99):6.2f} ms "
            f"(rounds: {', '.join(f'{x:.2f}' for x in p99)})  achieved {runs[-1]['achieved_rps']:.0f}/s  "
            f"statuses {runs[-1]['statuses']}"
        )
    print(f"  stored events {kept} of {sent} distinct sent (each with one stripe_event job)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg", default=None)
    parser.add_argument("--serve", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url", default="")
    parsed = parser.parse_args()
    if parsed.serve == "cheshire":
        serve_cheshire(parsed.url, parsed.port)
    elif parsed.serve == "reference":
        serve_reference(parsed.port)
    else:
        asyncio.run(main(parsed))
