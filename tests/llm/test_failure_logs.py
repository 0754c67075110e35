"""LLM failures are logged with the provider, status, error type and request id (issue 15.7): the
log said `anthropic:None; openai:None`. Never the prompt, never a key. The real SDKs talk to the
fake server (tests/fakes/llm_server.py), which sends each provider's request-id header."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from core.llm.anthropic_provider import AnthropicChatModel
from core.llm.chain import FallbackChatModel
from core.llm.openai_provider import OpenAIChatModel
from core.llm.types import AllProvidersFailedError, ChatMessage, ChatRequest, SystemPrompt
from tests.fakes.llm_server import Fail, FakeLLMServer, Hang, Reply

ANTHROPIC_KEY = "sk-ant-secret-key-0001"
OPENAI_KEY = "sk-openai-secret-key-0002"
PROMPT = "My dog Biscuit bites; how much is a bath?"
SYSTEM = "You are Cheshire, the salon's assistant."


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as fake:
        yield fake


def _chain(server: FakeLLMServer, *, claude_timeout_s: float = 10.0) -> FallbackChatModel:
    claude = AnthropicChatModel(
        api_key=ANTHROPIC_KEY,
        model="claude-sonnet-4-6",
        base_url=server.anthropic_base_url,
        max_retries=0,
        timeout_s=claude_timeout_s,
    )
    gpt = OpenAIChatModel(
        api_key=OPENAI_KEY, model="gpt-6.1-sol", base_url=server.openai_base_url, max_retries=0
    )
    return FallbackChatModel([claude, gpt])


def _ask() -> ChatRequest:
    return ChatRequest(system=SystemPrompt(stable=SYSTEM), messages=(ChatMessage("user", PROMPT),))


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("core."))


def _assert_nothing_secret(text: str) -> None:
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, PROMPT, "Biscuit", SYSTEM):
        assert secret not in text


async def test_both_failing_log_provider_status_type_and_request_id(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server.anthropic.queue.append(Fail(529, "overloaded_error", "Overloaded", request_id="req_011CX529"))
    server.openai.queue.append(Fail(500, "server_error", "The server had an error", request_id="req_oa500"))
    with pytest.raises(AllProvidersFailedError) as caught:
        await _chain(server).complete(_ask(), timeout_s=5)
    logged = _logged(caplog)
    assert "anthropic status=529 error=overloaded_error request_id=req_011CX529" in logged
    assert "openai status=500 error=server_error request_id=req_oa500" in logged
    # What the engine logs when the offline responder takes over: the same, not "anthropic:None".
    assert str(caught.value) == (
        "anthropic status=529 error=overloaded_error request_id=req_011CX529; "
        "openai status=500 error=server_error request_id=req_oa500"
    )
    _assert_nothing_secret(logged + str(caught.value))


async def test_a_time_out_is_logged_as_one(server: FakeLLMServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server.anthropic.queue.append(Hang(30))
    server.openai.queue.append(Reply(text="OpenAI here."))
    response = await _chain(server, claude_timeout_s=0.2).complete(_ask(), timeout_s=5)
    assert response.provider == "openai"
    [fault] = response.faults
    assert (fault.provider, fault.status, fault.error_type) == ("anthropic", None, "timeout")
    logged = _logged(caplog)
    assert "anthropic status=no status error=timeout request_id=-" in logged
    _assert_nothing_secret(logged)


async def test_a_refused_key_names_the_type_and_request_id(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server.anthropic.queue.append(Fail(401, "authentication_error", "invalid x-api-key", request_id="req_k"))
    server.openai.queue.append(Reply(text="OpenAI here."))
    response = await _chain(server).complete(_ask(), timeout_s=5)
    [fault] = response.faults
    assert (fault.status, fault.kind, fault.error_type, fault.request_id) == (
        401,
        "configuration",
        "authentication_error",
        "req_k",
    )
    logged = _logged(caplog)
    assert "anthropic status=401 error=authentication_error request_id=req_k" in logged
    _assert_nothing_secret(logged)
