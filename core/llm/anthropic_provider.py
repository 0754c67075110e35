"""Claude through the Messages API. The only module that imports `anthropic`.

Prompt caching: tools, then the stable system block, then the conversation, each ending in a cache
breakpoint. Anthropic caches the prefix up to a breakpoint, so everything that changes per turn (today's
date, this customer's pets and bookings) is a second system block *after* the stable one, and the newest
message carries the last breakpoint: the next turn (or tool round) reads the whole earlier conversation
from the cache. That is three breakpoints of the four allowed.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from core.llm.types import ChatMessage, ChatRequest, ChatResponse, ProviderError, ToolCall, Usage
from core.settings import Settings

if TYPE_CHECKING:
    import anthropic

PROVIDER = "anthropic"
_CACHE = {"type": "ephemeral"}


class AnthropicChatModel:
    name = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        max_retries: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        self.model = model
        # The SDK takes seconds and tens of MB to import: start-up does not wait for it. warm_up()
        # loads it once /healthz answers; the first call makes the client (or loads it, if first).
        self._options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": timeout_s,
        }
        self._loaded = False
        self._client: anthropic.AsyncAnthropic | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AnthropicChatModel | None:
        if settings.anthropic_api_key is None:
            return None
        return cls(
            api_key=settings.anthropic_api_key.get_secret_value(),
            model=settings.anthropic_model,
            base_url=settings.anthropic_base_url,
            max_retries=settings.llm_max_retries,
            timeout_s=settings.llm_turn_deadline_s,
        )

    async def warm_up(self) -> None:
        """Import the SDK off the event loop (once), so the first request does not wait for it."""
        if not self._loaded:
            await asyncio.to_thread(load_sdk)
            self._loaded = True

    def _sdk_client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            import anthropic

            self._client = anthropic.AsyncAnthropic(**self._options)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        body = build_request(request, model=self.model)
        import anthropic

        try:
            message = await self._sdk_client().messages.create(**body, timeout=timeout_s)
        except anthropic.APIStatusError as exc:
            raise ProviderError(
                PROVIDER,
                exc.status_code,
                _error_message(exc),
                error_type=_error_type(exc),
                request_id=exc.request_id,
            ) from None
        except anthropic.APITimeoutError:
            raise ProviderError(PROVIDER, None, "timed out", error_type="timeout") from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(PROVIDER, None, f"connection error: {exc}", error_type="connection") from None
        except anthropic.AnthropicError as exc:  # malformed response and the like
            raise ProviderError(
                PROVIDER, None, f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__
            ) from None
        return _parse(message, self.model)


def load_sdk() -> None:
    import anthropic  # noqa: F401 - loaded for its side effect: the next import is free


def build_request(request: ChatRequest, *, model: str) -> dict[str, Any]:
    """The Messages API body (without transport options). Public for the token bench."""
    system: list[dict[str, Any]] = [{"type": "text", "text": request.system.stable, "cache_control": _CACHE}]
    if request.system.context:
        system.append({"type": "text", "text": request.system.context})
    tools: list[dict[str, Any]] = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
    ]
    if tools:
        tools[-1]["cache_control"] = _CACHE
    messages = [_message(m) for m in request.messages]
    if messages:
        last_content = messages[-1]["content"]
        if last_content:
            last_content[-1]["cache_control"] = _CACHE
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_output_tokens,
        "system": system,
        "messages": messages,
    }
    if tools:
        body["tools"] = tools
        body["tool_choice"] = {"type": "auto"} if request.allow_tools else {"type": "none"}
    return body


def _message(message: ChatMessage) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    # Tool results must come first in a user turn.
    for result in message.tool_results:
        content.append(
            {
                "type": "tool_result",
                "tool_use_id": result.call_id,
                "content": result.content,
                "is_error": result.is_error,
            }
        )
    if message.text:
        content.append({"type": "text", "text": message.text})
    for call in message.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    if not content:
        content.append({"type": "text", "text": "(empty)"})
    return {"role": message.role, "content": content}


def _parse(message: Any, model: str) -> ChatResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content or []:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            arguments = block.input if isinstance(block.input, dict) else None
            calls.append(
                ToolCall(
                    id=block.id,
                    name=block.name,
                    arguments=arguments or {},
                    arguments_error=None if arguments is not None else "arguments must be a JSON object",
                )
            )
    usage = message.usage
    return ChatResponse(
        text="".join(texts).strip(),
        tool_calls=tuple(calls),
        stop_reason=str(message.stop_reason or "end_turn"),
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_input_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
            cache_creation_input_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
        ),
        provider=PROVIDER,
        model=str(message.model or model),
    )


def _error_type(exc: anthropic.APIStatusError) -> str | None:
    """The API's error type ("overloaded_error", "rate_limit_error", ...) from the error body."""
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else type(exc).__name__


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('type', 'error')}: {error.get('message', '')}"[:300]
        return json.dumps(body)[:300]
    return str(exc)[:300]
