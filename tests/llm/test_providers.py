"""The real anthropic and openai SDKs against the local fake server: tool use, caching, fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.llm.anthropic_provider import AnthropicChatModel
from core.llm.chain import FallbackChatModel
from core.llm.openai_provider import OpenAIChatModel
from core.llm.types import (
    AllProvidersFailedError,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    SystemPrompt,
    ToolResult,
    ToolSpec,
)
from tests.fakes.llm_server import Fail, FakeLLMServer, Hang, Reply

TOOLS = (
    ToolSpec("list_services", "List the salon's services.", {"type": "object", "properties": {}}),
    ToolSpec(
        "quote",
        "Price for a service.",
        {"type": "object", "properties": {"service_code": {"type": "string"}}, "required": ["service_code"]},
    ),
)
SYSTEM = SystemPrompt(stable="You are Cheshire. " * 400, context="Today is Tuesday.")


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


def _claude(server: FakeLLMServer, model: str = "claude-sonnet-4-6") -> AnthropicChatModel:
    return AnthropicChatModel(
        api_key="sk-ant-test", model=model, base_url=server.anthropic_base_url, max_retries=0
    )


def _gpt(server: FakeLLMServer) -> OpenAIChatModel:
    return OpenAIChatModel(
        api_key="sk-test",
        model="gpt-6.1-sol",
        base_url=server.openai_base_url,
        max_retries=0,
        reasoning_effort="low",
    )


def _ask(text: str = "How much is a bath?") -> ChatRequest:
    return ChatRequest(system=SYSTEM, messages=(ChatMessage("user", text),), tools=TOOLS)


async def test_anthropic_tool_use_round_trip(server: FakeLLMServer) -> None:
    server.anthropic.queue += [
        Reply(text="Let me check.", tool_calls=[("quote", {"service_code": "bath"})]),
        Reply(text="A bath is $40."),
    ]
    model = _claude(server)
    first = await model.complete(_ask(), timeout_s=5)
    assert first.text == "Let me check."
    [call] = first.tool_calls
    assert (call.name, call.arguments) == ("quote", {"service_code": "bath"})

    follow_up = ChatRequest(
        system=SYSTEM,
        tools=TOOLS,
        messages=(
            ChatMessage("user", "How much is a bath?"),
            ChatMessage("assistant", first.text, tool_calls=first.tool_calls),
            ChatMessage("user", tool_results=(ToolResult(call.id, '{"price": "$40"}'),)),
        ),
    )
    second = await model.complete(follow_up, timeout_s=5)
    await model.close()
    assert second.text == "A bath is $40." and second.provider == "anthropic"

    sent = server.anthropic.requests[1]
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": '{"price": "$40"}',
        "is_error": False,
        "cache_control": {"type": "ephemeral"},
    }
    # Breakpoints: last tool, the stable system block; the per-turn context comes after, uncached.
    assert sent["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in sent["tools"][0]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["system"][1] == {"type": "text", "text": "Today is Tuesday."}
    assert {k.lower() for k in server.anthropic.headers[0]} >= {"anthropic-version", "authorization"}
    # The second round re-reads the first round's prefix from the cache.
    assert first.usage.cache_creation_input_tokens > 1024
    assert second.usage.cache_read_input_tokens >= first.usage.cache_creation_input_tokens


async def test_the_fake_prompt_cache_expires_after_five_idle_minutes(server: FakeLLMServer) -> None:
    server.anthropic.queue += [Reply(text="one"), Reply(text="two"), Reply(text="three"), Reply(text="four")]
    model = _claude(server)
    first = await model.complete(_ask(), timeout_s=5)
    server.anthropic_cache.advance(240)  # within the TTL: read, and the read refreshes the entry
    second = await model.complete(_ask(), timeout_s=5)
    server.anthropic_cache.advance(240)  # 8 minutes after the write, 4 after the last read
    third = await model.complete(_ask(), timeout_s=5)
    server.anthropic_cache.advance(301)  # idle longer than 5 minutes: gone, written again
    fourth = await model.complete(_ask(), timeout_s=5)
    await model.close()
    assert first.usage.cache_creation_input_tokens > 1024
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert third.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert fourth.usage.cache_read_input_tokens == 0
    assert fourth.usage.cache_creation_input_tokens == first.usage.cache_creation_input_tokens


async def test_openai_tool_use_round_trip(server: FakeLLMServer) -> None:
    server.openai.queue += [Reply(tool_calls=[("quote", {"service_code": "bath"})]), Reply(text="$40.")]
    model = _gpt(server)
    first = await model.complete(_ask(), timeout_s=5)
    [call] = first.tool_calls
    assert (call.name, call.arguments, first.stop_reason) == ("quote", {"service_code": "bath"}, "tool_use")
    second = await model.complete(
        ChatRequest(
            system=SYSTEM,
            tools=TOOLS,
            messages=(
                ChatMessage("user", "How much is a bath?"),
                ChatMessage("assistant", "", tool_calls=first.tool_calls),
                ChatMessage("user", tool_results=(ToolResult(call.id, "$40"),)),
            ),
        ),
        timeout_s=5,
    )
    await model.close()
    assert second.text == "$40." and second.provider == "openai"
    sent = server.openai.requests[1]
    assert sent["messages"][0]["role"] == "system" and sent["messages"][0]["content"].endswith(
        "Today is Tuesday."
    )
    assert sent["messages"][2]["tool_calls"][0]["function"] == {
        "name": "quote",
        "arguments": '{"service_code": "bath"}',
    }
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": call.id, "content": "$40"}
    assert sent["tools"][0]["type"] == "function" and sent["reasoning_effort"] == "low"
    assert "max_completion_tokens" in sent
    assert second.usage.cache_read_input_tokens > 0  # the first request's prefix was seen


async def test_openai_malformed_arguments_become_a_tool_error_not_a_crash(server: FakeLLMServer) -> None:
    server.openai.queue.append(Reply(tool_calls=[("quote", {})], raw_arguments="{not json"))
    response = await _gpt(server).complete(_ask(), timeout_s=5)
    [call] = response.tool_calls
    assert call.arguments == {} and call.arguments_error == "arguments are not valid JSON"


@pytest.mark.parametrize("status", [529, 429, 500])
async def test_claude_down_openai_answers_the_same_turn(server: FakeLLMServer, status: int) -> None:
    server.anthropic.outage = status
    server.openai.queue.append(Reply(text="OpenAI here."))
    chain = FallbackChatModel([_claude(server), _gpt(server)])
    response = await chain.complete(_ask(), timeout_s=5)
    assert (response.text, response.provider) == ("OpenAI here.", "openai")
    assert [(f.provider, f.status, f.kind) for f in response.faults] == [("anthropic", status, "transient")]
    # The same question reached OpenAI.
    assert server.openai.requests[0]["messages"][-1] == {"role": "user", "content": "How much is a bath?"}


async def test_claude_time_out_falls_through_within_the_turn_deadline(server: FakeLLMServer) -> None:
    server.anthropic.queue.append(Hang(30))
    server.openai.queue.append(Reply(text="OpenAI here."))
    claude = AnthropicChatModel(
        api_key="k", model="claude-sonnet-4-6", base_url=server.anthropic_base_url, max_retries=0
    )

    class ShortFuse:
        """Claude gets a small share of the turn, as a tight deadline would leave it."""

        name = "anthropic"

        async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
            return await claude.complete(request, timeout_s=0.3)

    response = await FallbackChatModel([ShortFuse(), _gpt(server)]).complete(_ask(), timeout_s=5)
    assert response.provider == "openai"
    assert [(f.provider, f.status) for f in response.faults] == [("anthropic", None)]


async def test_retired_model_is_a_configuration_fault(server: FakeLLMServer) -> None:
    server.openai.queue.append(Reply(text="OpenAI here."))
    chain = FallbackChatModel([_claude(server, model="claude-sonnet-4-20250514"), _gpt(server)])
    response = await chain.complete(_ask(), timeout_s=5)
    [fault] = response.faults
    assert (fault.provider, fault.status, fault.kind) == ("anthropic", 404, "configuration")
    assert "not_found_error" in fault.message


async def test_both_down_raises_with_every_fault(server: FakeLLMServer) -> None:
    server.anthropic.outage = 529
    server.openai.queue.append(Fail(401, "invalid_api_key"))
    with pytest.raises(AllProvidersFailedError) as caught:
        await FallbackChatModel([_claude(server), _gpt(server)]).complete(_ask(), timeout_s=5)
    assert [(f.provider, f.status, f.kind) for f in caught.value.faults] == [
        ("anthropic", 529, "transient"),
        ("openai", 401, "configuration"),
    ]


async def test_sdk_retries_are_bounded_by_settings(server: FakeLLMServer) -> None:
    server.anthropic.outage = 529
    model = AnthropicChatModel(
        api_key="k", model="claude-sonnet-4-6", base_url=server.anthropic_base_url, max_retries=1
    )
    with pytest.raises(Exception, match="529"):
        await model.complete(_ask(), timeout_s=5)
    assert len(server.anthropic.requests) == 2  # one try + one retry, then the chain moves on


async def test_the_chain_bounds_a_provider_that_ignores_its_timeout() -> None:
    """SDK retries multiply the per-attempt timeout; the chain still keeps to the turn deadline."""

    class Stuck:
        name = "stuck"

        async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
            await asyncio.Event().wait()  # never answers, whatever timeout it was given
            raise AssertionError("unreachable: nothing sets the event")

    with pytest.raises(AllProvidersFailedError) as caught:
        await asyncio.wait_for(FallbackChatModel([Stuck()]).complete(_ask(), timeout_s=0.2), timeout=10)
    assert [(f.provider, f.status, f.message) for f in caught.value.faults] == [("stuck", None, "timed out")]


async def test_a_hung_primary_still_leaves_the_fallback_time_to_answer(server: FakeLLMServer) -> None:
    server.anthropic.queue.append(Hang(30))
    server.openai.queue.append(Reply(text="OpenAI here."))
    response = await FallbackChatModel([_claude(server), _gpt(server)]).complete(_ask(), timeout_s=1.0)
    assert response.provider == "openai"
    assert [(f.provider, f.status) for f in response.faults] == [("anthropic", None)]


async def test_a_failed_provider_goes_to_the_back_of_the_line_for_a_while(server: FakeLLMServer) -> None:
    now = [0.0]
    chain = FallbackChatModel([_claude(server), _gpt(server)], clock=lambda: now[0])
    server.anthropic.outage = 529
    server.openai.responder = lambda body: Reply(text="OpenAI here.")
    first = await chain.complete(_ask(), timeout_s=5)
    second = await chain.complete(_ask(), timeout_s=5)
    assert [f.status for f in first.faults] == [529] and second.faults == ()
    assert len(server.anthropic.requests) == 1  # the second message did not wait for a dead Claude
    server.anthropic.outage = None
    server.anthropic.responder = lambda body: Reply(text="Claude is back.")
    now[0] += 31
    third = await chain.complete(_ask(), timeout_s=5)
    assert (third.provider, third.text) == ("anthropic", "Claude is back.")
