"""Telegram bench: updates through long polling, the dispatcher, ingest, the engine (an instant scripted
model), the outbox and the Telegram sender, against the local fake Bot API server.

    .venv/bin/python bench/bench_bot.py [--updates 400] [--chats 100] [--paced 60] [--rate 3]
                                        [--workers 4] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Everything runs in this one process and event loop, as in production (bot, workers, fake server).
1. burst: `--updates` text messages from `--chats` chats pushed at once into getUpdates; the send
   limiter is opened wide so the pipeline's own capacity shows.
   - ingest rate: updates/s until the last one was stored (its "typing…" reached the server);
   - end-to-end rate: updates/s until the last reply's sendMessage reached the server.
2. paced: `--paced` updates, one per new chat, at `--rate`/s, with the production send limiter
   (30/s overall, 1/s per chat): latency from the update entering getUpdates to its reply's
   sendMessage reaching the fake server, median and p99.
References measured in the same run:
- a bare `bot.send_message` round trip to the same fake server (the last hop's floor);
- the same polling loop feeding a dispatcher whose only handler answers at once with sendMessage,
  no database (aiogram + HTTP floor, same paced rate and burst).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import Message

from channels.app import freeze_startup_heap
from tests.fakes.telegram_api import FakeTelegramAPI

TOKEN = "123456:BENCH"
JOB_TIMES: dict[str, list[float]] = {}
KIMMIE = 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Bench"},
            "text": text,
        },
    }


def new_bot(fake: FakeTelegramAPI) -> Bot:
    return Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))


def arrivals(fake: FakeTelegramAPI, method: str, since: int) -> list[tuple[int, float]]:
    """(chat id, monotonic arrival) of calls of `method` recorded after index `since`."""
    out = []
    for call, (name, at) in zip(fake.calls[since:], fake.call_times[since:], strict=True):
        if name == method and call.chat_id is not None and call.chat_id != KIMMIE:
            out.append((call.chat_id, at))
    return out


async def wait_until(check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("bench did not finish in time")
        await asyncio.sleep(0.005)


class Pipeline:
    """Polling + whatever answers; `run_burst` and `run_paced` push updates and time the replies."""

    def __init__(self, fake: FakeTelegramAPI, bot: Bot, dp: Dispatcher, first_chat: int) -> None:
        self.fake, self.bot, self.dp = fake, bot, dp
        self.next_update = first_chat * 10
        self.next_chat = first_chat
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(
            self.dp.start_polling(self.bot, handle_signals=False, close_bot_session=False, polling_timeout=5)
        )
        await self.fake.wait_for("getMe")

    async def stop(self) -> None:
        await self.dp.stop_polling()
        if self.task:
            await asyncio.gather(self.task, return_exceptions=True)

    async def run_burst(self, n: int, chats: int) -> dict[str, float]:
        since = len(self.fake.calls)
        base_chat = self.next_chat
        self.next_chat += chats
        t0 = time.monotonic()
        for i in range(n):
            self.next_update += 1
            self.fake.push_update(update(self.next_update, base_chat + i % chats, f"Hi, message {i}"))

        def replies() -> int:
            return len(arrivals(self.fake, "sendMessage", since))

        await wait_until(lambda: replies() >= n)
        typing = arrivals(self.fake, "sendChatAction", since)
        sent = arrivals(self.fake, "sendMessage", since)
        result = {"e2e_per_s": n / (sent[n - 1][1] - t0)}
        if len(typing) >= n:
            result["ingest_per_s"] = n / (typing[n - 1][1] - t0)
        return result

    async def run_ingest_only(self, n: int, chats: int) -> float:
        """Updates/s stored (typing sent) while no job worker runs: the Telegram side alone."""
        since = len(self.fake.calls)
        base_chat = self.next_chat
        self.next_chat += chats
        t0 = time.monotonic()
        for i in range(n):
            self.next_update += 1
            self.fake.push_update(update(self.next_update, base_chat + i % chats, f"Hello {i}"))
        await wait_until(lambda: len(arrivals(self.fake, "sendChatAction", since)) >= n)
        return n / (arrivals(self.fake, "sendChatAction", since)[n - 1][1] - t0)

    async def run_paced(self, n: int, rate: float) -> list[float]:
        since = len(self.fake.calls)
        pushed: dict[int, float] = {}
        start = time.monotonic()
        for i in range(n):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            chat = self.next_chat
            self.next_chat += 1
            self.next_update += 1
            pushed[chat] = time.monotonic()
            self.fake.push_update(update(self.next_update, chat, "Do you have time on Saturday?"))

        def done() -> bool:
            return len({c for c, _ in arrivals(self.fake, "sendMessage", since)}) >= n

        await wait_until(done)
        first: dict[int, float] = {}
        for chat, at in arrivals(self.fake, "sendMessage", since):
            first.setdefault(chat, at)
        return [(first[c] - pushed[c]) * 1000 for c in pushed]


async def reference(fake: FakeTelegramAPI, args: argparse.Namespace) -> dict[str, Any]:
    bot = new_bot(fake)
    times = []
    for i in range(200):
        t = time.monotonic()
        await bot.send_message(10_000 + i, "ping")
        times.append((time.monotonic() - t) * 1000)
    dp = Dispatcher(storage=MemoryStorage())

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer("pong")

    pipe = Pipeline(fake, bot, dp, first_chat=2_000_000)
    await pipe.start()
    burst = await pipe.run_burst(args.updates, args.chats)
    paced = await pipe.run_paced(args.paced, args.rate)
    await pipe.stop()
    await bot.session.close()
    return {"send_ms": statistics.median(times), "burst": burst, "paced": paced}


async def raw_ingest(url: str, n: int) -> float:
    """Core ingest alone (no Telegram, no aiogram), one transaction per message: the database's share."""
    from core.conversation.ingest import ingest
    from core.db.database import Database
    from core.types import Channel, InboundMessage

    db = Database(url)
    t = time.monotonic()
    for i in range(n):
        async with db.transaction() as session:
            await ingest(
                session,
                InboundMessage(
                    channel=Channel.WEB,
                    external_user_id=f"raw-{i % 50}",
                    platform_message_id=f"raw-{i}",
                    text="hi",
                ),
            )
    rate = n / (time.monotonic() - t)
    await db.dispose()
    return rate


async def which_database(url: str) -> str:
    """The database the run used, asked of the server itself (not inferred from the arguments)."""
    from sqlalchemy import text

    from core.db.database import Database

    db = Database(url)
    try:
        async with db.transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                version = (await session.execute(text("SHOW server_version"))).scalar_one()
                return f"PostgreSQL {version}"
            version = (await session.execute(text("SELECT sqlite_version()"))).scalar_one()
            return f"SQLite {version}"
    finally:
        await db.dispose()


async def cheshire(fake: FakeTelegramAPI, args: argparse.Namespace, url: str) -> dict[str, Any]:
    from bot.sender import SendLimiter, TelegramSender
    from bot.setup import build_dispatcher
    from bot.setup import register_jobs as register_bot_jobs
    from core.booking.catalog import load_catalog
    from core.booking.service import DefaultBookingService
    from core.conversation.engine import ConversationEngine
    from core.conversation.engine import register_jobs as register_engine
    from core.db.database import Database
    from core.db.migrate import upgrade_to_head
    from core.delivery import register_jobs as register_delivery
    from core.jobs.worker import JobRegistry, Worker, WorkerConfig
    from core.llm.scripted import Say, ScriptedChatModel
    from core.settings import Settings

    await upgrade_to_head(url)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        environment="bench",
        telegram_bot_token=TOKEN,
        telegram_kimmie_chat_id=KIMMIE,
        anthropic_api_key="bench-not-used",
    )
    db = Database(url)
    async with db.transaction() as session:
        await load_catalog(session, Path(__file__).resolve().parents[1] / "catalog.toml")
    bot = new_bot(fake)
    booking = DefaultBookingService(settings)
    wide = SendLimiter(global_rate=1e6, global_burst=1e6, chat_rate=1e6, chat_burst=1e6)
    sender = TelegramSender(bot, limiter=wide)

    class TimedRegistry(JobRegistry):
        """Records each handler's wall time per job kind, to show where an update's time goes."""

        def register(self, kind: str, handler: Any) -> None:
            async def timed(job: Any) -> None:
                t = time.monotonic()
                try:
                    await handler(job)
                finally:
                    JOB_TIMES.setdefault(kind, []).append((time.monotonic() - t) * 1000)

            super().register(kind, timed)

    registry = TimedRegistry()
    register_delivery(registry, db=db, senders={"telegram": sender}, settings=settings)
    register_bot_jobs(registry, db=db, bot=bot, settings=settings, booking=booking)
    model = ScriptedChatModel(when_exhausted=Say("Happy to help! Kimmie grooms Tuesday to Saturday."))
    engine = ConversationEngine(db=db, settings=settings, booking=booking, model=model)
    register_engine(registry, engine=engine, db=db)
    dp = build_dispatcher(
        db=db, settings=settings, booking=booking, sender=sender, fsm_storage=MemoryStorage()
    )
    worker = Worker(db, registry, WorkerConfig(concurrency=args.workers, poll_interval_s=0.05, lease_s=60))
    pipe = Pipeline(fake, bot, dp, first_chat=1_000)
    await pipe.start()
    freeze_startup_heap()  # as `python -m bot` does once started (cheshire/runtime.py)
    try:
        mark = len(fake.calls)
        alone = await pipe.run_ingest_only(200, 50)
        worker.start()  # drain that backlog before the timed burst
        await wait_until(lambda: len(arrivals(fake, "sendMessage", mark)) >= 200)
        burst = await pipe.run_burst(args.updates, args.chats)
        burst["ingest_alone_per_s"] = alone
        sender.limiter = SendLimiter()  # production limits for the latency run
        paced = await pipe.run_paced(args.paced, args.rate)
    finally:
        await pipe.stop()
        await worker.stop()
        await bot.session.close()
        await db.dispose()
    return {"burst": burst, "paced": paced}


async def fresh_url(args: argparse.Namespace) -> tuple[str, Callable[[], Awaitable[None]]]:
    if not args.pg:
        path = Path(tempfile.mkdtemp(dir=args.sqlite_dir)) / "bench_bot.sqlite3"

        async def nothing() -> None:
            return None

        return f"sqlite+aiosqlite:///{path}", nothing
    import os

    from tests.support import databases

    os.environ["CHESHIRE_TEST_PG_ADMIN_URL"] = args.pg
    url = await databases.create_pg_database()
    return url, lambda: databases.drop_pg_database(url)


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiogram").setLevel(logging.WARNING)
    url, drop = await fresh_url(args)
    fake = FakeTelegramAPI()
    await fake.start()
    try:
        ref = await reference(fake, args)
        ours = await cheshire(fake, args, url)
        raw = await raw_ingest(url, 200)
        backend = await which_database(url)
    finally:
        await fake.stop()
        await drop()
    print(f"bench_bot (database: {backend}, {args.workers} job workers; fake Bot API on 127.0.0.1)")
    print(f"{'':44}{'cheshire':>14}{'reference':>14}")
    print(f"{'burst ' + str(args.updates) + ' updates / ' + str(args.chats) + ' chats':44}")
    ingest_rate = ours["burst"].get("ingest_per_s", 0)
    label = "  ingest (stored, typing sent) updates/s"
    print(f"{label:44}{ingest_rate:>14.0f}{'—':>14}  (job workers running)")
    label = "  ingest, job workers paused, updates/s"
    print(
        f"{label:44}{ours['burst']['ingest_alone_per_s']:>14.0f}{raw:>14.0f}  (reference: core ingest alone)"
    )
    e2e, ref_e2e = ours["burst"]["e2e_per_s"], ref["burst"]["e2e_per_s"]
    print(f"{'  end-to-end (reply sent) updates/s':44}{e2e:>14.0f}{ref_e2e:>14.0f}")
    print(f"{'paced ' + str(args.paced) + ' updates at ' + str(args.rate) + '/s, production limiter':44}")
    for label, q in (("  update → sendMessage p50 ms", 0.5), ("  update → sendMessage p99 ms", 0.99)):
        print(f"{label:44}{pct(ours['paced'], q):>14.1f}{pct(ref['paced'], q):>14.1f}")
    print(f"{'bare sendMessage round trip p50 ms':44}{'':>14}{ref['send_ms']:>14.2f}")
    print("reference = polling + a dispatcher answering at once, no database, no engine, no outbox")
    print("job handler wall time (both runs), median / p99 ms:")
    for kind, times in sorted(JOB_TIMES.items()):
        print(f"  {kind:30} {statistics.median(times):8.1f} / {pct(times, 0.99):8.1f}   (n={len(times)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--paced", type=int, default=60)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sqlite-dir", default=None, help="where the SQLite file goes (default: $TMPDIR)")
    parser.add_argument("--pg", default=None, help="admin URL of a PostgreSQL server (default: SQLite)")
    asyncio.run(main(parser.parse_args()))
