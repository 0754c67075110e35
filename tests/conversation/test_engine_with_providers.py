"""The whole chain through the engine: real SDKs, the fake server, the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from core.conversation.engine import ConversationEngine
from core.db.database import Database
from core.db.models import AdminAlert, Conversation, Job
from core.llm.chain import FallbackChatModel
from core.llm.factory import build_chat_model, close_chat_model
from core.llm.types import ChatRequest, ChatResponse
from tests.conversation.conftest import replies, send
from tests.fakes.llm_server import FakeLLMServer, Hang, Reply


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def chain_engine(
    server: FakeLLMServer, make_engine: Callable[..., ConversationEngine]
) -> Callable[..., ConversationEngine]:
    built: list[ConversationEngine] = []

    def _make(**overrides: object) -> ConversationEngine:
        options: dict[str, object] = {
            "anthropic_api_key": SecretStr("sk-ant-test"),
            "anthropic_base_url": server.anthropic_base_url,
            "openai_api_key": SecretStr("sk-test"),
            "openai_base_url": server.openai_base_url,
            "llm_max_retries": 0,
        } | overrides
        engine = make_engine(None, **options)
        engine.model = build_chat_model(engine.settings)
        built.append(engine)
        return engine

    return _make


async def _alerts(db: Database) -> list[tuple[str, int]]:
    async with db.transaction() as session:
        rows = (await session.execute(select(AdminAlert).order_by(AdminAlert.id))).scalars().all()
        return [(a.fault_key, a.occurrences) for a in rows]


async def _notify_jobs(db: Database) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        jobs = (
            await session.execute(select(Job).where(Job.kind == "notify_admin").order_by(Job.id))
        ).scalars()
        return [j.payload for j in jobs]


async def test_claude_tool_use_through_the_engine_stores_usage_and_cache_tokens(
    server: FakeLLMServer, catalog_db: Database, chain_engine: Callable[..., ConversationEngine]
) -> None:
    engine = chain_engine()
    server.anthropic.queue += [
        Reply(
            text="Let me check.",
            tool_calls=[("quote", {"service_code": "full_groom", "size_class": "small"})],
        ),
        Reply(text="A full groom for a small dog is about $65.", output_tokens=20),
    ]
    sent = await send(catalog_db, "How much for a small dog's full groom?")
    assert (await engine.process(sent.message_id, sent.conversation_id)).status == "llm"
    [reply] = await replies(catalog_db, sent.conversation_id)
    assert reply.text == "Let me check.\n\nA full groom for a small dog is about $65."
    first, second = server.anthropic.usages
    assert (reply.llm_provider, reply.llm_model) == ("anthropic", "claude-sonnet-4-6")
    assert reply.input_tokens == first["input_tokens"] + second["input_tokens"]
    assert reply.output_tokens == 12 + 20
    assert (
        reply.cache_creation_input_tokens
        == first["cache_creation_input_tokens"] + second["cache_creation_input_tokens"]
    )
    assert reply.cache_read_input_tokens == second["cache_read_input_tokens"] > 1024
    # The tool really ran against the catalog and its result went back to Claude.
    tool_result = server.anthropic.requests[1]["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result" and '"price_min"' in tool_result["content"]
    assert not tool_result["is_error"]
    await close_chat_model(engine.model)


@pytest.mark.parametrize("status", [529, 429, 500])
async def test_claude_unavailable_openai_answers_through_the_engine(
    status: int, server: FakeLLMServer, catalog_db: Database, chain_engine: Callable[..., ConversationEngine]
) -> None:
    engine = chain_engine()
    server.anthropic.outage = status
    server.openai.queue.append(Reply(text="Hi! OpenAI speaking."))
    sent = await send(catalog_db, "hello")
    assert (await engine.process(sent.message_id, sent.conversation_id)).status == "llm"
    [reply] = await replies(catalog_db, sent.conversation_id)
    assert (reply.text, reply.llm_provider, reply.llm_model) == (
        "Hi! OpenAI speaking.",
        "openai",
        "gpt-6.1-sol",
    )
    assert reply.input_tokens and reply.output_tokens
    assert await _alerts(catalog_db) == []  # transient: nothing for Kimmie to fix
    await close_chat_model(engine.model)


async def test_claude_time_out_then_openai_answers(
    server: FakeLLMServer, catalog_db: Database, chain_engine: Callable[..., ConversationEngine]
) -> None:
    # A 1 s turn deadline: Claude hangs past it, the SDK times out, OpenAI gets the rest of the turn.
    engine = chain_engine(llm_turn_deadline_s=1.0)
    server.anthropic.queue.append(Hang(10))
    server.openai.responder = lambda body: Reply(text="OpenAI in time.")
    chain = engine.model
    assert isinstance(chain, FallbackChatModel)
    claude, gpt = chain.providers

    class Share:
        name = "anthropic"

        async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
            return await claude.complete(request, timeout_s=timeout_s / 2)

    chain.providers = [Share(), gpt]
    sent = await send(catalog_db, "hello?")
    await engine.process(sent.message_id, sent.conversation_id)
    [reply] = await replies(catalog_db, sent.conversation_id)
    assert (reply.text, reply.llm_provider) == ("OpenAI in time.", "openai")
    await close_chat_model(engine.model)


async def test_both_down_the_offline_responder_answers_and_flags_the_chat(
    server: FakeLLMServer, catalog_db: Database, chain_engine: Callable[..., ConversationEngine]
) -> None:
    engine = chain_engine()
    server.anthropic.outage = 529
    server.openai.outage = 503
    sent = await send(catalog_db, "What are your prices?")
    assert (await engine.process(sent.message_id, sent.conversation_id)).status == "fallback"
    [reply] = await replies(catalog_db, sent.conversation_id)
    assert "Full groom: $" in reply.text and reply.llm_provider is None
    async with catalog_db.transaction() as session:
        assert (await session.get_one(Conversation, sent.conversation_id)).needs_attention
    assert [(p["type"], p.get("conversation_id")) for p in await _notify_jobs(catalog_db)] == [
        ("handover", sent.conversation_id)
    ]
    await close_chat_model(engine.model)


async def test_retired_model_alerts_kimmie_once_not_per_message(
    server: FakeLLMServer, catalog_db: Database, chain_engine: Callable[..., ConversationEngine]
) -> None:
    server.openai.responder = lambda body: Reply(text="Fallback answer.")
    # A fresh engine per message (as after restarts): Claude answers 404 every time, Kimmie hears once.
    for n in range(3):
        engine = chain_engine(anthropic_model="claude-sonnet-4-20250514")
        sent = await send(catalog_db, f"question {n}", user=f"user-{n}")
        await engine.process(sent.message_id, sent.conversation_id)
        [reply] = await replies(catalog_db, sent.conversation_id)
        assert reply.llm_provider == "openai"
        await close_chat_model(engine.model)
    assert len(server.anthropic.requests) == 3
    assert await _alerts(catalog_db) == [("llm:anthropic:404", 3)]
    alerts = [p for p in await _notify_jobs(catalog_db) if p["type"] == "alert"]
    assert len(alerts) == 1 and "404" in alerts[0]["text"] and "model" in alerts[0]["text"]

    # One long-lived engine does not even ask the retired model again for a while.
    engine = chain_engine(anthropic_model="claude-sonnet-4-20250514")
    for n in range(3):
        sent = await send(catalog_db, f"again {n}", user=f"user-{n}")
        await engine.process(sent.message_id, sent.conversation_id)
    assert len(server.anthropic.requests) == 4
    assert len([p for p in await _notify_jobs(catalog_db) if p["type"] == "alert"]) == 1
    await close_chat_model(engine.model)


async def test_no_keys_means_offline_only_and_no_network(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine], server: FakeLLMServer
) -> None:
    engine = make_engine(None)
    assert build_chat_model(engine.settings) is None
    sent = await send(catalog_db, "hello")
    assert (await engine.process(sent.message_id, sent.conversation_id)).status == "offline"
    assert server.anthropic.requests == [] and server.openai.requests == []


async def test_openai_tool_use_through_the_engine_when_claude_is_down(
    server: FakeLLMServer, catalog_db: Database, chain_engine: Callable[..., ConversationEngine]
) -> None:
    engine = chain_engine()
    server.anthropic.outage = 529
    server.openai.queue += [
        Reply(tool_calls=[("quote", {"service_code": "bath_tidy", "size_class": "large"})]),
        Reply(text="A bath & tidy for a large dog is about $60."),
    ]
    sent = await send(catalog_db, "Bath for my big dog?")
    await engine.process(sent.message_id, sent.conversation_id)
    [reply] = await replies(catalog_db, sent.conversation_id)
    assert (reply.text, reply.llm_provider) == ("A bath & tidy for a large dog is about $60.", "openai")
    tool_message = server.openai.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and '"price_min"' in tool_message["content"]
    # Claude was tried once; the second round went straight to OpenAI (the cooldown).
    assert len(server.anthropic.requests) == 1
    await close_chat_model(engine.model)
