"""OpenAI chat completions with tools: the fallback. The only module that imports `openai`.

OpenAI caches long prompt prefixes by itself, so the stable system text goes first and the per-turn
context after it, in the same order as for Claude. `usage.prompt_tokens_details.cached_tokens` is
reported as `cache_read_input_tokens`; `input_tokens` is the uncached rest (Anthropic's meaning).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from core.llm.types import ChatMessage, ChatRequest, ChatResponse, ProviderError, ToolCall, Usage
from core.settings import Settings

if TYPE_CHECKING:
    import openai

PROVIDER = "openai"


class OpenAIChatModel:
    name = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        max_retries: int = 1,
        timeout_s: float = 30.0,
        reasoning_effort: str | None = None,
    ) -> None:
        self.model = model
        self.reasoning_effort = reasoning_effort
        # The SDK takes seconds and tens of MB to import: start-up does not wait for it. warm_up()
        # loads it once /healthz answers; the first call makes the client (or loads it, if first).
        self._options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": timeout_s,
        }
        self._loaded = False
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChatModel | None:
        if settings.openai_api_key is None:
            return None
        return cls(
            api_key=settings.openai_api_key.get_secret_value(),
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            max_retries=settings.llm_max_retries,
            timeout_s=settings.llm_turn_deadline_s,
            reasoning_effort=_effort(settings.openai_reasoning_effort),
        )

    async def warm_up(self) -> None:
        """Import the SDK off the event loop (once), so the first request does not wait for it."""
        if not self._loaded:
            await asyncio.to_thread(load_sdk)
            self._loaded = True

    def _sdk_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(**self._options)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        body = build_request(request, model=self.model)
        if self.reasoning_effort:
            body["reasoning_effort"] = self.reasoning_effort
        import openai

        try:
            completion = await self._sdk_client().chat.completions.create(**body, timeout=timeout_s)
        except openai.APIStatusError as exc:
            raise ProviderError(
                PROVIDER,
                exc.status_code,
                _error_message(exc),
                error_type=_error_type(exc),
                request_id=exc.request_id,
            ) from None
        except openai.APITimeoutError:
            raise ProviderError(PROVIDER, None, "timed out", error_type="timeout") from None
        except openai.APIConnectionError as exc:
            raise ProviderError(PROVIDER, None, f"connection error: {exc}", error_type="connection") from None
        except openai.OpenAIError as exc:
            raise ProviderError(
                PROVIDER, None, f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__
            ) from None
        return _parse(completion, self.model)


def load_sdk() -> None:
    import openai  # noqa: F401 - loaded for its side effect: the next import is free


def build_request(request: ChatRequest, *, model: str) -> dict[str, Any]:
    system = request.system.stable
    if request.system.context:
        system = f"{system}\n\n{request.system.context}"
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in request.messages:
        messages.extend(_messages(message))
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        # Reasoning models count their thinking here; max_tokens is refused by them.
        "max_completion_tokens": request.max_output_tokens,
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
        body["tool_choice"] = "auto" if request.allow_tools else "none"
    return body


def _messages(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": message.text or None}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ]
        return [out]
    result: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": r.call_id, "content": ("ERROR: " if r.is_error else "") + r.content}
        for r in message.tool_results
    ]
    if message.text or not result:
        result.append({"role": "user", "content": message.text or "(empty)"})
    return result


def _parse(completion: Any, model: str) -> ChatResponse:
    if not completion.choices:
        raise ProviderError(PROVIDER, None, "response without choices", error_type="no_choices")
    choice = completion.choices[0]
    message = choice.message
    calls: list[ToolCall] = []
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)
        if function is None:  # a custom (non-function) tool call: not ours
            continue
        error: str | None = None
        try:
            arguments = json.loads(function.arguments or "{}")
        except json.JSONDecodeError:
            arguments, error = {}, "arguments are not valid JSON"
        if not isinstance(arguments, dict):
            arguments, error = {}, "arguments must be a JSON object"
        calls.append(ToolCall(id=call.id, name=function.name, arguments=arguments, arguments_error=error))
    usage = completion.usage
    prompt = (usage.prompt_tokens if usage else 0) or 0
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
    finish = str(choice.finish_reason or "stop")
    return ChatResponse(
        text=(message.content or "").strip(),
        tool_calls=tuple(calls),
        stop_reason="tool_use" if calls else ("max_tokens" if finish == "length" else "end_turn"),
        usage=Usage(
            input_tokens=max(prompt - cached, 0),
            output_tokens=(usage.completion_tokens if usage else 0) or 0,
            cache_read_input_tokens=cached,
            cache_creation_input_tokens=0,
        ),
        provider=PROVIDER,
        model=str(completion.model or model),
    )


def _error_type(exc: openai.APIStatusError) -> str | None:
    """The API's error type or code ("server_error", "rate_limit_exceeded", ...) from the error body
    (the SDK hands over the body's "error" object; older ones the whole body)."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        for field in ("type", "code"):
            if isinstance(kind := error.get(field), str) and kind:
                return kind
    return type(exc).__name__


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return f"{error.get('type') or error.get('code') or 'error'}: {error.get('message', '')}"[:300]
    return str(exc)[:300]


def _effort(value: str | None) -> str | None:
    """`off` (or empty) sends no reasoning_effort at all: needed for non-reasoning models."""
    if value is None or value.strip().lower() in {"", "off", "default"}:
        return None
    return value.strip().lower()
