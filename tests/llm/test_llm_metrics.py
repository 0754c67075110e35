"""LLM calls counted for GET /metrics by provider and outcome: the real SDKs against the local fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.db.models import utcnow
from core.llm.anthropic_provider import AnthropicChatModel
from core.llm.chain import FallbackChatModel
from core.llm.openai_provider import OpenAIChatModel
from core.llm.types import AllProvidersFailedError, ChatMessage, ChatRequest, SystemPrompt
from core.metrics import Metrics
from tests.fakes.llm_server import FakeLLMServer, Reply


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


def chain(
    server: FakeLLMServer, metrics: Metrics, *, claude_model: str = "claude-sonnet-4-6"
) -> FallbackChatModel:
    claude = AnthropicChatModel(
        api_key="sk-ant-test", model=claude_model, base_url=server.anthropic_base_url, max_retries=0
    )
    gpt = OpenAIChatModel(
        api_key="sk-test",
        model="gpt-6.1-sol",
        base_url=server.openai_base_url,
        max_retries=0,
        reasoning_effort="low",
    )
    return FallbackChatModel([claude, gpt], on_call=metrics.llm_call)


def ask() -> ChatRequest:
    return ChatRequest(
        system=SystemPrompt(stable="You are Cheshire.", context=""), messages=(ChatMessage("user", "Hi"),)
    )


def llm_calls(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = metrics.render(None, now=utcnow()).decode()
    return {
        (s.labels["provider"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cheshire_llm_calls_total"
    }


async def test_a_fallback_counts_the_failed_primary_and_the_answering_fallback(server: FakeLLMServer) -> None:
    metrics = Metrics()
    server.anthropic.outage = 529
    server.openai.queue.append(Reply(text="OpenAI here."))
    response = await chain(server, metrics).complete(ask(), timeout_s=5)
    assert response.provider == "openai"
    assert llm_calls(metrics) == {("anthropic", "transient"): 1, ("openai", "ok"): 1}


async def test_a_retired_model_is_a_configuration_outcome(server: FakeLLMServer) -> None:
    metrics = Metrics()
    server.openai.outage = 500
    with pytest.raises(AllProvidersFailedError):
        await chain(server, metrics, claude_model="claude-sonnet-4-20250514").complete(ask(), timeout_s=5)
    assert llm_calls(metrics) == {("anthropic", "configuration"): 1, ("openai", "transient"): 1}
