"""Tokens per turn over a scripted 8-turn booking conversation through the Anthropic adapter.

    .venv/bin/python bench/bench_tokens.py

The real `anthropic` SDK talks to the local fake server (tests/fakes/llm_server.py), whose prompt cache
is modelled honestly: it stores the prefix up to every cache breakpoint by hash and reports as
`cache_read_input_tokens` only a prefix that is byte-identical to an earlier request (tokens estimated
as bytes / 4). The conversation runs through the real engine (SQLite, the repository's catalog, the real
booking service), so the prompt, tools, history and tool results are exactly what production sends.

Printed per turn: uncached input, cache read, cache write, total input, and the share of input read
from the cache; then the share over turns 2-8 (goal: >= 70 %). As a reference from the same run, the
same conversation is replayed with caching disabled in the request (no breakpoints): its cache share
is 0 and its total input is what each turn would cost at full price.

A customer does not always answer within Anthropic's 5-minute cache TTL: the same conversation runs a
third time with a `GAP_S` (6-minute) pause before turn `GAP_BEFORE_TURN` (the fake server's cache
models TTL expiry on its own clock, which the bench advances), and its cache share is printed beside.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from core.booking.catalog import load_catalog  # noqa: E402
from core.booking.service import DefaultBookingService  # noqa: E402
from core.conversation.engine import ConversationEngine  # noqa: E402
from core.conversation.ingest import ingest  # noqa: E402
from core.db.database import Database  # noqa: E402
from core.db.migrate import upgrade_to_head  # noqa: E402
from core.llm import anthropic_provider  # noqa: E402
from core.llm.anthropic_provider import AnthropicChatModel  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.types import Channel, InboundMessage  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer, Reply  # noqa: E402

TURNS = [
    "Hi! Do you groom poodles?",
    "How much is a full groom for a medium poodle?",
    "Great. He's called Rex, a medium poodle with a curly coat, very friendly.",
    "What times do you have next week?",
    "Anything in the morning?",
    "The first morning one please.",
    "Thanks! What's your cancellation policy?",
    "Perfect, see you then.",
]
GAP_S = 6 * 60.0  # longer than the 5-minute ephemeral TTL
GAP_BEFORE_TURN = 6  # "The first morning one please.": the customer thought it over


def script() -> Any:
    """Decide the model's move from the request, like a model would from the conversation."""
    memory: dict[str, Any] = {}

    def respond(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        results = [b for b in last if b.get("type") == "tool_result"]
        if results:
            content = json.loads(results[0]["content"]) if not results[0].get("is_error") else {}
            if isinstance(content, dict) and content.get("slots"):
                memory["slots"] = content["slots"]
            return Reply(text="Here you go: " + results[0]["content"][:200])
        text = " ".join(b.get("text", "") for b in last if b.get("type") == "text")
        context = body["system"][-1]["text"]
        pet = re.search(r"pet_id (\d+)", context)
        pet_ids = [int(pet.group(1))] if pet else []
        if "How much" in text:
            return Reply(
                tool_calls=[
                    ("quote", {"service_code": "full_groom", "size_class": "medium", "coat_type": "curly"})
                ]
            )
        if "called Rex" in text:
            return Reply(
                tool_calls=[
                    (
                        "save_pet",
                        {
                            "name": "Rex",
                            "breed": "poodle",
                            "size_class": "medium",
                            "coat_type": "curly",
                            "temperament": "very friendly",
                        },
                    )
                ]
            )
        if "next week" in text:
            return Reply(tool_calls=[("find_slots", {"service_code": "full_groom", "pet_ids": pet_ids})])
        if "morning" in text and "first" not in text:
            return Reply(
                tool_calls=[
                    (
                        "find_slots",
                        {"service_code": "full_groom", "pet_ids": pet_ids, "time_of_day": "morning"},
                    )
                ]
            )
        if "first morning" in text and memory.get("slots"):
            start = memory["slots"][0]["start"]
            return Reply(
                tool_calls=[
                    ("request_booking", {"service_code": "full_groom", "pet_ids": pet_ids, "start": start})
                ]
            )
        return Reply(
            text="Happy to help! Rabies vaccination is required; free cancellation up to 24 hours before."
        )

    return respond


async def run(cache: bool, *, gap: bool = False) -> list[dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.sqlite3"
        await upgrade_to_head(url)
        db = Database(url)
        async with FakeLLMServer() as server:
            server.anthropic.responder = script()
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                database_url=url,
                environment="test",
                anthropic_api_key=SecretStr("sk-ant-bench"),
                anthropic_base_url=server.anthropic_base_url,
                llm_max_retries=0,
            )
            async with db.transaction() as session:
                await load_catalog(session, ROOT / "catalog.toml")
            claude = AnthropicChatModel.from_settings(settings)
            assert claude is not None
            engine = ConversationEngine(
                db=db, settings=settings, booking=DefaultBookingService(settings), model=claude
            )
            original = anthropic_provider._CACHE
            if not cache:
                anthropic_provider.build_request = _uncached(anthropic_provider.build_request)  # type: ignore[assignment]
            per_turn: list[dict[str, int]] = []
            try:
                for n, text in enumerate(TURNS):
                    if gap and n + 1 == GAP_BEFORE_TURN:
                        server.anthropic_cache.advance(GAP_S)
                    before = len(server.anthropic.usages)
                    async with db.transaction() as session:
                        result = await ingest(
                            session, InboundMessage(Channel.WEB, "visitor", f"w{n}", text=text)
                        )
                    assert result.message_id is not None
                    await engine.process(result.message_id, result.conversation_id)
                    used = server.anthropic.usages[before:]
                    per_turn.append(
                        {
                            "calls": len(used),
                            "input": sum(u["input_tokens"] for u in used),
                            "read": sum(u["cache_read_input_tokens"] for u in used),
                            "write": sum(u["cache_creation_input_tokens"] for u in used),
                        }
                    )
            finally:
                anthropic_provider._CACHE = original
                anthropic_provider.build_request = _ORIGINAL_BUILD
                await claude.close()
        await db.dispose()
    return per_turn


_ORIGINAL_BUILD = anthropic_provider.build_request


def _uncached(build: Any) -> Any:
    def strip(request: Any, *, model: str) -> dict[str, Any]:
        body = build(request, model=model)
        for block in [*body.get("tools", []), *body["system"]]:
            block.pop("cache_control", None)
        for message in body["messages"]:
            for block in message["content"]:
                block.pop("cache_control", None)
        return dict(body)

    return strip


def report(title: str, turns: list[dict[str, int]]) -> float:
    print(title)
    print(f"{'turn':>4}{'calls':>7}{'uncached':>10}{'read':>8}{'write':>8}{'total':>8}{'read %':>8}")
    for n, t in enumerate(turns, 1):
        total = t["input"] + t["read"] + t["write"]
        share = 100 * t["read"] / total if total else 0.0
        print(f"{n:>4}{t['calls']:>7}{t['input']:>10}{t['read']:>8}{t['write']:>8}{total:>8}{share:>7.1f}%")
    later = turns[1:]
    total = sum(t["input"] + t["read"] + t["write"] for t in later)
    read = sum(t["read"] for t in later)
    cacheable = sum(t["read"] + t["write"] for t in later)
    print(
        f"turns 2-8: {total} input tokens, {100 * read / total:.1f}% read from cache, "
        f"{100 * cacheable / total:.1f}% sent as cacheable prefix (read + write)"
    )
    return total


async def main() -> None:
    cached = await run(cache=True)
    paused = await run(cache=True, gap=True)
    plain = await run(cache=False)
    total_cached = report("With cache breakpoints (what Cheshire sends), turns back to back:", cached)
    print()
    total_paused = report(
        f"The same, with a {GAP_S / 60:.0f}-minute pause before turn {GAP_BEFORE_TURN} (cache TTL 5 min):",
        paused,
    )
    print()
    total_plain = report("Reference, same run, no breakpoints:", plain)
    print()

    def share(turns: list[dict[str, int]], total: float) -> float:
        return 100 * sum(t["read"] for t in turns[1:]) / total

    print(f"cache read share turns 2-8, back to back: {share(cached, total_cached):.1f}% (goal >= 70 %)")
    print(
        f"cache read share turns 2-8, with the pause: {share(paused, total_paused):.1f}% "
        f"(turn {GAP_BEFORE_TURN} pays a cache write again)"
    )
    print(f"cache read share, no breakpoints (reference): {share(plain, total_plain):.1f}%")
    print(f"total input tokens equal in all three runs: {total_cached == total_paused == total_plain}")


if __name__ == "__main__":
    asyncio.run(main())
