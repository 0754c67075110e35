"""Looking Glass previews: what Cheshire adds around FAL, with an instant fake FAL.

    .venv/bin/python bench/bench_previews.py [--runs 30] [--concurrent 10]

The whole runtime (cheshire/runtime.py: routes, worker, real fal-client, Pillow, local storage) on a
fresh SQLite file, FAL being tests/fakes/fal.py answering at once (finished at submit). Printed:

- reference: the same fake called directly through the adapter (submit → status → result → download
  of the image), per preview: the floor any implementation pays to this fake in this run;
- photo → buttons: a photo POSTed to /api/chat/<session>/photos until the style buttons are stored
  and delivered (check with Pillow, EXIF strip, resize, store, link to a pet, reply);
- tap → preview: the style button POSTed until the preview message is delivered (request row, job,
  submit with the request id stored first, status, result, copy to storage, reply, delivery);
- overhead: the two legs together minus the reference (the customer's own time between them excluded);
- peak RSS: the process's resident peak before and while `--concurrent` customers each upload a photo
  and tap a style at the same moment (all previews delivered).

Delivery is observed by polling the message table every 2 ms (±2 ms of noise on each figure).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from PIL import Image
from pydantic import SecretStr
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cheshire.runtime import build_runtime
from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.db.models import ChannelIdentity, Conversation, Message
from core.previews.fal import FalEditor
from core.settings import Settings
from tests.fakes.fal import FakeFal

MODEL = "fal-ai/nano-banana-2/edit"


def photo(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1600, 1200), (seed % 255, 120, 80)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def reference(fal: FakeFal, runs: int) -> list[float]:
    editor = FalEditor(
        key=SecretStr("bench"), model=MODEL, queue_base=fal.base, jwks_url=fal.base + "/.well-known/jwks.json"
    )
    data_uri = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="
    times = []
    try:
        for _ in range(runs + 2):
            start = time.perf_counter()
            request_id = await editor.submit(
                prompt="teddy bear", image_url=data_uri, seed=1, webhook_url=None
            )
            assert (await editor.status(request_id)).done
            result = await editor.result(request_id)
            await editor.download(result.image_urls[0], max_bytes=10_000_000)
            times.append(time.perf_counter() - start)
    finally:
        await editor.close()
    return times[2:]  # two warm-ups: connections, first-call imports


async def delivered(db: Database, session_id: str, *, after: int, has: str) -> int:
    """Poll until an outbound message of the web session (id > `after`) is sent: with images
    (`has="image"`) or with buttons and no image (`has="buttons"`). Its id."""
    query = (
        select(Message.id, Message.quick_replies, Message.image_urls)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
        .where(
            ChannelIdentity.channel == "web",
            ChannelIdentity.external_id == session_id,
            Message.direction == "out",
            Message.id > after,
            Message.delivery_status == "sent",
        )
        .order_by(Message.id)
    )
    while True:
        async with db.transaction() as session:
            rows = list(await session.execute(query))
        for message_id, replies, images in rows:
            if (has == "image" and images) or (has == "buttons" and replies and not images):
                return int(message_id)
        await asyncio.sleep(0.002)


async def one_preview(http: aiohttp.ClientSession, base: str, db: Database, n: int) -> tuple[float, float]:
    session_id = f"bench-session-{n:05d}"
    form = aiohttp.FormData()
    form.add_field("photo", photo(n), filename="dog.jpg", content_type="image/jpeg")
    start = time.perf_counter()
    async with http.post(f"{base}/api/chat/{session_id}/photos", data=form) as response:
        assert response.status == 202, await response.text()
        after = int((await response.json())["message_id"])
    buttons = await delivered(db, session_id, after=after, has="buttons")
    leg1 = time.perf_counter() - start
    start = time.perf_counter()
    body = {"session_id": session_id, "message": "Teddy bear", "payload": "PV:s:teddy_bear"}
    async with http.post(f"{base}/api/chat", json=body) as response:
        assert response.status in (200, 202)
    await delivered(db, session_id, after=buttons, has="image")
    leg2 = time.perf_counter() - start
    return leg1, leg2


async def main(runs: int, concurrent: int, poll_s: float) -> None:
    fal = FakeFal()  # finished at submit: FAL's own time is zero here
    await fal.start()
    direct = await reference(fal, runs)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.sqlite3"
        await upgrade_to_head(url)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=url,
            environment="bench",
            fal_ai_key="bench-key",
            fal_queue_base=fal.base,
            fal_jwks_url=fal.base + "/.well-known/jwks.json",
            media_dir=f"{tmp}/media",
            chat_sync_wait_s=0.0,
            rate_limit_per_minute=100_000,
            chat_ip_rate_limit_per_minute=100_000,
            preview_daily_limit=100,
            preview_monthly_budget_usd=1000.0,
            job_poll_interval_s=poll_s,
        )
        rt = build_runtime(settings)
        runner = web.AppRunner(rt.app, access_log=None)
        await runner.setup()
        for hook in rt.on_startup:
            await hook()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        rt.worker.start()
        try:
            async with aiohttp.ClientSession() as http:
                for n in range(2):  # warm-up
                    await one_preview(http, base, rt.db, 90_000 + n)
                legs = [await one_preview(http, base, rt.db, n) for n in range(runs)]
                before = rss_mb()
                start = time.perf_counter()
                await asyncio.gather(*(one_preview(http, base, rt.db, 50_000 + n) for n in range(concurrent)))
                burst = time.perf_counter() - start
                peak = rss_mb()
        finally:
            await rt.worker.stop()
            await runner.cleanup()
            for hook in reversed(rt.on_shutdown):
                await hook()
            await rt.db.dispose()
    await fal.stop()
    photo_leg = [a * 1000 for a, _ in legs]
    tap_leg = [b * 1000 for _, b in legs]
    ref = [d * 1000 for d in direct]
    overhead = [(a + b) * 1000 - statistics.median(ref) for a, b in legs]
    poll = settings.job_poll_interval_s
    print(f"runs={runs} SQLite, worker poll {poll}s, {len(fal.submissions)} submits to the fake")
    print(f"{'':28}{'median ms':>10}{'p99 ms':>10}")
    for name, values in (
        ("reference (fake, direct)", ref),
        ("photo -> style buttons", photo_leg),
        ("tap -> preview delivered", tap_leg),
        ("overhead (both - ref)", overhead),
    ):
        print(f"{name:28}{statistics.median(values):10.1f}{pct(values, 0.99):10.1f}")
    print(
        f"peak RSS: {before:.0f} MB before, {peak:.0f} MB with {concurrent} previews at once ({burst:.2f} s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.5, help="JOB_POLL_INTERVAL_S (default: production's)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrent, args.poll))
