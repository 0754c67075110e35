"""A local fake of the Anthropic Messages API and the OpenAI chat-completions API (CONTRACTS.md §1-2).

The real `anthropic` and `openai` SDKs are pointed at it through their base URLs:
    anthropic: base_url = server.anthropic_base_url   (the SDK appends /v1/messages)
    openai:    base_url = server.openai_base_url      (…/v1; the SDK appends /chat/completions)

Each provider has a `ProviderScript`: a queue of actions (`Reply`, `Fail`, `Hang`), an optional
`responder(body) -> action` used when the queue is empty, an `outage` status that fails every request,
and the set of `served_models` (anything else is a 404 `not_found_error`, as for a retired model).

Prompt caching is modelled honestly for Anthropic: the request is flattened into blocks in cache order
(tools → system → messages), each block's tokens are estimated from its bytes (4 bytes ≈ 1 token), and
the prefix ending at every `cache_control` breakpoint (at least `min_cacheable_tokens` long) is stored by
hash. A later request reads the longest stored prefix found at one of its breakpoints or up to 20 block
boundaries before one — the documented look-back — so `cache_read_input_tokens` is exactly the part of
the prompt that is byte-identical to an earlier request up to a breakpoint. `cache_control` markers
themselves are not part of the hashed content. An entry lives `CACHE_TTL_S` (5 minutes, Anthropic's
ephemeral TTL) after it was last written or read, on the cache's own `clock` (seconds): a test or bench
moves it with `advance(seconds)` to model a customer who answers after the cache expired.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Action = "Reply | Fail | Hang"
LOOKBACK_BLOCKS = 20
CACHE_TTL_S = 300.0  # Anthropic's ephemeral cache: 5 minutes, refreshed by every hit


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    output_tokens: int = 12
    # OpenAI only: send this string as `arguments` verbatim (to test malformed JSON).
    raw_arguments: str | None = None


@dataclass
class Fail:
    status: int
    error_type: str = "api_error"
    message: str = "fake failure"
    # Sent as the provider's request-id header (Anthropic `request-id`, OpenAI `x-request-id`).
    request_id: str = "req_fake"


@dataclass
class Hang:
    seconds: float
    then: Reply | None = None


@dataclass
class ProviderScript:
    served_models: set[str]
    queue: list[Reply | Fail | Hang] = field(default_factory=list)
    responder: Callable[[dict[str, Any]], Reply | Fail | Hang] | None = None
    outage: int | None = None  # every request fails with this status while set
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    usages: list[dict[str, Any]] = field(default_factory=list)  # each response's `usage`, as sent

    def next_action(self, body: dict[str, Any]) -> Reply | Fail | Hang:
        if self.outage is not None:
            return Fail(self.outage, _error_type(self.outage), "fake outage")
        if body.get("model") not in self.served_models:
            return Fail(404, "not_found_error", f"model: {body.get('model')}")
        if self.queue:
            return self.queue.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return Reply(text="Hello from the fake model.")


def _error_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")


def estimate_tokens(data: Any) -> int:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return max(1, math.ceil(len(raw) / 4))


def _strip_cache_control(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


class AnthropicPromptCache:
    def __init__(self, min_cacheable_tokens: int = 1024, ttl_s: float = CACHE_TTL_S) -> None:
        self.min_cacheable_tokens = min_cacheable_tokens
        self.ttl_s = ttl_s
        self.clock = 0.0  # model time in seconds; only `advance` moves it
        self.entries: dict[str, int] = {}
        self.used_at: dict[str, float] = {}

    def advance(self, seconds: float) -> None:
        """Let model time pass (a customer thinking it over): entries idle longer than the TTL expire."""
        self.clock += seconds
        for key in [k for k, t in self.used_at.items() if self.clock - t > self.ttl_s]:
            del self.entries[key], self.used_at[key]

    @staticmethod
    def blocks(body: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
        out: list[tuple[dict[str, Any], bool]] = []
        for tool in body.get("tools") or []:
            out.append(({"tool": _strip_cache_control(tool)}, "cache_control" in tool))
        system = body.get("system") or []
        if isinstance(system, str):
            system = [{"type": "text", "text": system}]
        for block in system:
            out.append(({"system": _strip_cache_control(block)}, "cache_control" in block))
        for message in body.get("messages") or []:
            content = message["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            for block in content:
                out.append(
                    (
                        {"role": message["role"], "block": _strip_cache_control(block)},
                        "cache_control" in block,
                    )
                )
        return out

    def account(self, body: dict[str, Any]) -> dict[str, int]:
        blocks = self.blocks(body)
        hashes: list[str] = []
        cumulative: list[int] = []
        digest = hashlib.sha256(json.dumps({"model": body.get("model")}).encode())
        total = 0
        for block, _ in blocks:
            digest.update(json.dumps(block, sort_keys=True).encode())
            hashes.append(digest.copy().hexdigest())
            total += estimate_tokens(block)
            cumulative.append(total)
        breakpoints = [i for i, (_, marked) in enumerate(blocks) if marked]
        read = 0
        for b in breakpoints:
            for j in range(b, max(-1, b - LOOKBACK_BLOCKS - 1), -1):
                if hashes[j] in self.entries:
                    read = max(read, cumulative[j])
                    self.used_at[hashes[j]] = self.clock  # a hit refreshes the entry's TTL
                    break
        creation = 0
        if breakpoints:
            last = breakpoints[-1]
            if cumulative[last] >= self.min_cacheable_tokens:
                creation = max(cumulative[last] - read, 0)
            for b in breakpoints:
                if cumulative[b] >= self.min_cacheable_tokens:
                    self.entries[hashes[b]] = cumulative[b]
                    self.used_at[hashes[b]] = self.clock
        return {
            "input_tokens": max(total - read - creation, 0),
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": creation,
        }


class OpenAIPromptCache:
    """Automatic prefix caching: whole leading messages seen before, if the prefix is >= 1024 tokens."""

    def __init__(self) -> None:
        self.entries: set[str] = set()

    def account(self, body: dict[str, Any]) -> tuple[int, int]:
        digest = hashlib.sha256(json.dumps({"model": body.get("model"), "tools": body.get("tools")}).encode())
        total = estimate_tokens(body.get("tools") or [])
        cached = 0
        for message in body.get("messages") or []:
            digest.update(json.dumps(message, sort_keys=True).encode())
            total += estimate_tokens(message)
            key = digest.hexdigest()
            if key in self.entries and total >= 1024:
                cached = total
            self.entries.add(key)
        return total, cached


class FakeLLMServer:
    def __init__(self, *, min_cacheable_tokens: int = 1024) -> None:
        self.anthropic = ProviderScript(served_models={"claude-sonnet-4-6"})
        self.openai = ProviderScript(served_models={"gpt-6.1-sol"})
        self.anthropic_cache = AnthropicPromptCache(min_cacheable_tokens)
        self.openai_cache = OpenAIPromptCache()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeLLMServer:
        app = web.Application()
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/chat/completions", self._openai)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the port the OS picked
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- Anthropic -------------------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.anthropic.requests.append(body)
        self.anthropic.headers.append(dict(request.headers))
        # Older SDKs send X-Api-Key, newer ones a bearer token; both name an API version.
        has_key = request.headers.get("x-api-key") or request.headers.get("authorization", "").startswith(
            "Bearer "
        )
        if not has_key or not request.headers.get("anthropic-version"):
            return _anthropic_error(401, "authentication_error", "missing API key or anthropic-version")
        problem = _check_anthropic_tool_pairs(body)
        if problem:
            return _anthropic_error(400, "invalid_request_error", problem)
        action = self.anthropic.next_action(body)
        if isinstance(action, Hang):
            await asyncio.sleep(action.seconds)
            action = action.then or Reply(text="late answer")
        if isinstance(action, Fail):
            return _anthropic_error(action.status, action.error_type, action.message, action.request_id)
        usage = self.anthropic_cache.account(body) | {"output_tokens": action.output_tokens}
        self.anthropic.usages.append(usage)
        content: list[dict[str, Any]] = []
        if action.text:
            content.append({"type": "text", "text": action.text})
        for name, arguments in action.tool_calls:
            content.append(
                {"type": "tool_use", "id": f"toolu_{next(self._ids)}", "name": name, "input": arguments}
            )
        return web.json_response(
            {
                "id": f"msg_{next(self._ids)}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "tool_use" if action.tool_calls else "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        )

    # --- OpenAI ----------------------------------------------------------------------------------
    async def _openai(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.openai.requests.append(body)
        self.openai.headers.append(dict(request.headers))
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _openai_error(401, "invalid_api_key", "missing bearer token")
        problem = _check_openai_tool_pairs(body)
        if problem:
            return _openai_error(400, "invalid_request_error", problem)
        action = self.openai.next_action(body)
        if isinstance(action, Hang):
            await asyncio.sleep(action.seconds)
            action = action.then or Reply(text="late answer")
        if isinstance(action, Fail):
            return _openai_error(action.status, action.error_type, action.message, action.request_id)
        prompt_tokens, cached = self.openai_cache.account(body)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": action.output_tokens,
            "total_tokens": prompt_tokens + action.output_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        self.openai.usages.append(usage)
        message: dict[str, Any] = {"role": "assistant", "content": action.text or None}
        if action.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": action.raw_arguments
                        if action.raw_arguments is not None
                        else json.dumps(arguments),
                    },
                }
                for name, arguments in action.tool_calls
            ]
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if action.tool_calls else "stop",
                        "message": message,
                    }
                ],
                "usage": usage,
            }
        )


def _anthropic_error(
    status: int, error_type: str, message: str, request_id: str = "req_fake"
) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id},
        status=status,
        headers={"retry-after-ms": "1", "request-id": request_id},
    )


def _openai_error(status: int, code: str, message: str, request_id: str = "req_fake") -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": code, "param": None, "code": code}},
        status=status,
        headers={"retry-after-ms": "1", "x-request-id": request_id},
    )


def _check_anthropic_tool_pairs(body: dict[str, Any]) -> str | None:
    """A tool_use must be answered by a tool_result in the very next user turn (else the API says 400)."""
    messages = body.get("messages") or []
    if not messages or messages[0]["role"] != "user":
        return "messages: first message must use the user role"
    for i, message in enumerate(messages):
        content = message["content"] if isinstance(message["content"], list) else []
        if i and messages[i - 1]["role"] == message["role"]:
            return "messages: roles must alternate"
        uses = [b["id"] for b in content if b.get("type") == "tool_use"]
        if uses:
            following = messages[i + 1]["content"] if i + 1 < len(messages) else None
            if following is None:
                return "messages: tool_use without tool_result"
            results = [b.get("tool_use_id") for b in following if b.get("type") == "tool_result"]
            if sorted(results) != sorted(uses):
                return "messages: tool_use ids without matching tool_result blocks"
    return None


def _check_openai_tool_pairs(body: dict[str, Any]) -> str | None:
    pending: list[str] = []
    for message in body.get("messages") or []:
        if message["role"] == "tool":
            if message.get("tool_call_id") not in pending:
                return "messages with role 'tool' must be a response to a preceding 'tool_calls'"
            pending.remove(message["tool_call_id"])
            continue
        if pending:
            return "an assistant message with 'tool_calls' must be followed by tool messages"
        for call in message.get("tool_calls") or []:
            pending.append(call["id"])
    return None
