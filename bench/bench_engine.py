"""Engine overhead per message on PostgreSQL, with an instant fake model.

    .venv/bin/python bench/bench_engine.py [--customers 20] [--messages 10] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

For each inbound message (stored by ingest beforehand, not timed) we time `ConversationEngine.process`:
read the conversation, build the prompt and history, call the model, write the reply through the outbox
with its usage. The model answers at once (a scripted text, no tools). The reference, in the same run,
is the same model object called directly with the same kind of request. Overhead = engine - direct.
Goal: under 10 ms median overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.booking.catalog import load_catalog  # noqa: E402
from core.booking.service import DefaultBookingService  # noqa: E402
from core.conversation.engine import ConversationEngine  # noqa: E402
from core.conversation.ingest import ingest  # noqa: E402
from core.db.database import Database  # noqa: E402
from core.db.migrate import upgrade_to_head  # noqa: E402
from core.db.models import Conversation  # noqa: E402
from core.llm.scripted import Say, ScriptedChatModel  # noqa: E402
from core.llm.types import ChatMessage, ChatRequest, SystemPrompt  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.types import Channel, InboundMessage  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    name = f"cheshire_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    try:
        await upgrade_to_head(url)
        db = Database(url)
        settings = Settings(_env_file=None, database_url=url, environment="test")  # type: ignore[call-arg]
        async with db.transaction() as session:
            await load_catalog(session, ROOT / "catalog.toml")
        model = ScriptedChatModel(when_exhausted=Say("Sure, happy to help with that!"))
        engine = ConversationEngine(
            db=db, settings=settings, booking=DefaultBookingService(settings), model=model
        )

        # Warm-up: connections, statement caches, the stable prompt.
        async with db.transaction() as session:
            warm = await ingest(session, InboundMessage(Channel.WEB, "warm", "warm-0", text="hi"))
        assert warm.message_id is not None
        await engine.process(warm.message_id, warm.conversation_id)

        engine_ms: list[float] = []
        engine_cpu_ms: list[float] = []
        for turn in range(args.messages):
            for customer in range(args.customers):
                async with db.transaction() as session:
                    result = await ingest(
                        session,
                        InboundMessage(
                            Channel.MESSENGER,
                            f"psid-{customer}",
                            f"m-{customer}-{turn}",
                            text=f"Question {turn}: how much is a bath for my dog?",
                            display_name=f"Customer {customer}",
                        ),
                    )
                assert result.message_id is not None
                started, cpu_started = time.perf_counter(), time.process_time()
                await engine.process(result.message_id, result.conversation_id)
                engine_ms.append((time.perf_counter() - started) * 1000)
                engine_cpu_ms.append((time.process_time() - cpu_started) * 1000)

        # Reference: the same model, called directly with a comparable request.
        request = (
            model.requests[-1]
            if model.requests
            else ChatRequest(system=SystemPrompt("x"), messages=(ChatMessage("user", "hi"),))
        )
        direct_ms: list[float] = []
        for _ in range(len(engine_ms)):
            started = time.perf_counter()
            await model.complete(request, timeout_s=30)
            direct_ms.append((time.perf_counter() - started) * 1000)
        # Floor reference: the same shape of database work with no logic around it, 2 transactions
        # and 6 small ORM statements (the engine's count), on the same pool.
        floor_ms: list[float] = []
        floor_cpu_ms: list[float] = []
        conversation_id = result.conversation_id
        for _ in range(len(engine_ms)):
            started, cpu_started = time.perf_counter(), time.process_time()
            for statements in (3, 3):
                async with db.transaction() as session:
                    for _ in range(statements):
                        query = select(Conversation).where(Conversation.id == conversation_id)
                        (await session.execute(query)).scalars().all()
            floor_ms.append((time.perf_counter() - started) * 1000)
            floor_cpu_ms.append((time.process_time() - cpu_started) * 1000)

        # Machine reference: one bare asyncpg round trip to the same server.
        conn = await asyncpg.connect(args.pg)
        roundtrip_ms: list[float] = []
        for _ in range(200):
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            roundtrip_ms.append((time.perf_counter() - started) * 1000)
        await conn.close()
        await db.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    med_e, p99_e = statistics.median(engine_ms), pct(engine_ms, 0.99)
    med_d, p99_d = statistics.median(direct_ms), pct(direct_ms, 0.99)
    print(f"messages: {len(engine_ms)} ({args.customers} customers x {args.messages}), PostgreSQL")
    print(f"{'':28}{'median ms':>12}{'p99 ms':>12}")
    print(f"{'engine.process (per msg)':28}{med_e:12.3f}{p99_e:12.3f}")
    print(f"{'model called directly':28}{med_d:12.3f}{p99_d:12.3f}")
    print(f"{'engine overhead':28}{med_e - med_d:12.3f}{p99_e - p99_d:12.3f}   (goal: median < 10 ms)")
    print(
        f"{'(floor: 2 txns, 6 ORM stmts)':28}{statistics.median(floor_ms):12.3f}{pct(floor_ms, 0.99):12.3f}"
        "   the database work alone, no engine logic"
    )
    print(
        f"{'(engine CPU time, this process)':28}{statistics.median(engine_cpu_ms):12.3f}"
        f"{pct(engine_cpu_ms, 0.99):12.3f}   the rest is waiting for PostgreSQL"
    )
    print(f"{'(floor CPU time)':28}{statistics.median(floor_cpu_ms):12.3f}{pct(floor_cpu_ms, 0.99):12.3f}")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"{'(load average at the end)':28}{' '.join(load):>24}   (2 cores)")
    rt_med, rt_p99 = statistics.median(roundtrip_ms), pct(roundtrip_ms, 0.99)
    print(f"{'(one SELECT 1 round trip)':28}{rt_med:12.3f}{rt_p99:12.3f}   (2 transactions, 6 statements)")


if __name__ == "__main__":
    asyncio.run(main())
