"""Older turns summarized by the model: memory folds them (extractive at once) and queues
`summarize_conversation`, which the model's text replaces later, off the customer's turn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from core.conversation.engine import ConversationEngine, register_jobs
from core.conversation.memory import SUMMARIZE_JOB
from core.conversation.summarize import SUMMARY_MAX_TOKENS, summarize_conversation
from core.db.database import Database
from core.db.models import Conversation, Job
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.llm.factory import build_chat_model, close_chat_model
from core.llm.scripted import Say, ScriptedChatModel
from core.llm.types import ChatRequest, ChatResponse, ProviderError
from tests.conversation.conftest import send
from tests.fakes.llm_server import FakeLLMServer, Reply

MODEL_SUMMARY = "Alice's dog Rex: medium poodle, curly coat, nervous with dryers.\nWants a Tuesday morning."


@dataclass
class _Routed:
    """The engine's model: chat turns (with tools) to one script, summary requests (no tools) to
    another, so each side's requests can be read apart."""

    summaries: ScriptedChatModel
    chat: ScriptedChatModel = field(default_factory=lambda: ScriptedChatModel(when_exhausted=Say("ok " * 40)))
    name: str = "routed"

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        target = self.chat if request.tools else self.summaries
        return await target.complete(request, timeout_s=timeout_s)


async def _noop(job: ClaimedJob) -> None:
    return None


async def _run_jobs(db: Database, engine: ConversationEngine) -> None:
    """Run every due job once through the wiring the runtime uses (register_jobs)."""
    registry = JobRegistry()
    register_jobs(registry, engine=engine)
    registry.register("deliver_message", _noop)
    worker = Worker(db, registry, WorkerConfig(concurrency=1))
    while await worker.run_once():
        pass


async def _long_chat(db: Database, engine: ConversationEngine, turns: int = 30) -> int:
    conversation_id = 0
    for n in range(turns):
        sent = await send(db, f"message {n} " + "blah " * 60)
        await engine.process(sent.message_id, sent.conversation_id)
        conversation_id = sent.conversation_id
    return conversation_id


async def _conversation(db: Database, conversation_id: int) -> Conversation:
    async with db.transaction() as session:
        return await session.get_one(Conversation, conversation_id)


async def _summary_jobs(db: Database) -> list[Job]:
    async with db.transaction() as session:
        rows = await session.execute(select(Job).where(Job.kind == SUMMARIZE_JOB).order_by(Job.id))
        return list(rows.scalars())


async def test_the_model_summary_replaces_the_extractive_one_and_reaches_the_next_turn(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    later = "Rex (medium poodle) is booked Tuesday 10:00, requested. Asked about nail trims: open."
    model = _Routed(ScriptedChatModel([Say(MODEL_SUMMARY), Say(later)]))
    engine = make_engine(model)
    conversation_id = await _long_chat(catalog_db, engine)

    extractive = (await _conversation(catalog_db, conversation_id)).summary
    assert extractive and "- Customer: message" in extractive
    jobs = await _summary_jobs(catalog_db)
    assert jobs and {j.queue_key for j in jobs} == {f"summarize:{conversation_id}"}
    assert model.summaries.requests == []  # the customer's turns did not wait for it

    await _run_jobs(catalog_db, engine)
    assert (await _conversation(catalog_db, conversation_id)).summary == MODEL_SUMMARY
    assert {j.status for j in await _summary_jobs(catalog_db)} == {"done"}
    [request] = model.summaries.requests
    assert request.tools == () and f"At most {SUMMARY_MAX_TOKENS} tokens" in request.system.stable
    assert "Newer messages, oldest first:\n- Customer: message 0" in request.messages[0].text

    sent = await send(catalog_db, "Can we do Tuesday?")
    await engine.process(sent.message_id, sent.conversation_id)
    assert MODEL_SUMMARY in model.chat.requests[-1].system.context

    # The next fold merges the model's summary with the newly folded messages.
    await _long_chat(catalog_db, engine)
    await _run_jobs(catalog_db, engine)
    merge = model.summaries.requests[-1].messages[0].text
    assert merge.startswith(f"Previous summary:\n{MODEL_SUMMARY}\n\nNewer messages")
    assert (await _conversation(catalog_db, conversation_id)).summary == later


async def test_a_failing_model_keeps_the_extractive_summary_and_the_job_finishes(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    model = _Routed(ScriptedChatModel(when_exhausted=Say("unused")))
    engine = make_engine(model)
    conversation_id = await _long_chat(catalog_db, engine)
    extractive = (await _conversation(catalog_db, conversation_id)).summary
    model.summaries.add(ProviderError("scripted", 529, "overloaded"))

    await _run_jobs(catalog_db, engine)
    assert (await _conversation(catalog_db, conversation_id)).summary == extractive
    assert {(j.status, j.attempts) for j in await _summary_jobs(catalog_db)} == {("done", 1)}
    assert len(model.summaries.requests) == 1

    # No model configured at all: nothing to ask, the extractive summary stays too.
    until = (await _conversation(catalog_db, conversation_id)).summary_until_message_id
    assert until is not None
    stored = await summarize_conversation(
        catalog_db, None, conversation_id=conversation_id, until=until, previous="", lines=["x"], deadline_s=5
    )
    assert not stored and (await _conversation(catalog_db, conversation_id)).summary == extractive


@dataclass
class _FoldsMeanwhile:
    """A summarizing model that is slow enough for a customer turn to fold newer messages before it
    answers (the turn is simulated by moving the conversation's summary mark)."""

    db: Database
    conversation_id: int
    name: str = "slow"
    calls: int = 0

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        self.calls += 1
        async with self.db.transaction() as session:
            conversation = await session.get_one(Conversation, self.conversation_id)
            assert conversation.summary_until_message_id is not None
            conversation.summary = "newer summary"
            conversation.summary_until_message_id += 2
        return await ScriptedChatModel(when_exhausted=Say("stale summary")).complete(request, timeout_s=1)


async def test_a_stale_job_does_not_overwrite_a_newer_summary(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(_Routed(ScriptedChatModel()))
    conversation_id = await _long_chat(catalog_db, engine)
    slow = _FoldsMeanwhile(catalog_db, conversation_id)
    engine.model = slow

    await _run_jobs(catalog_db, engine)
    conversation = await _conversation(catalog_db, conversation_id)
    assert conversation.summary == "newer summary"
    assert slow.calls == 1  # the job ran its model call, then found the mark had moved
    assert {j.status for j in await _summary_jobs(catalog_db)} == {"done"}

    # A job for a mark already passed does not even ask the model.
    stale = await summarize_conversation(
        catalog_db,
        slow,
        conversation_id=conversation_id,
        until=(conversation.summary_until_message_id or 0) - 2,
        previous="",
        lines=["Customer: hi"],
        deadline_s=5,
    )
    assert not stale and slow.calls == 1


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


async def test_claude_writes_the_summary_through_the_real_sdk(
    server: FakeLLMServer, catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(
        None,
        anthropic_api_key=SecretStr("sk-ant-test"),
        anthropic_base_url=server.anthropic_base_url,
        llm_max_retries=0,
    )
    engine.model = build_chat_model(engine.settings)
    # Chat turns carry the tools; the summary request carries none.
    server.anthropic.responder = lambda body: Reply(text="ok " * 40 if body.get("tools") else MODEL_SUMMARY)
    try:
        conversation_id = await _long_chat(catalog_db, engine)
        before = len(server.anthropic.requests)
        await _run_jobs(catalog_db, engine)
    finally:
        await close_chat_model(engine.model)

    assert (await _conversation(catalog_db, conversation_id)).summary == MODEL_SUMMARY
    [body] = server.anthropic.requests[before:]
    assert "tools" not in body and body["max_tokens"] > SUMMARY_MAX_TOKENS
    assert "keep what matters for booking" in body["system"][0]["text"]
    assert "Newer messages, oldest first:" in body["messages"][0]["content"][0]["text"]
