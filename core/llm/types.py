"""Neutral LLM vocabulary: what the engine speaks, whatever the provider.

Adapters (anthropic_provider, openai_provider) translate these to and from their SDK; no SDK object
ever leaves an adapter. A request carries the system prompt in two parts: `stable` (persona, rules,
catalog: identical for every customer, so providers can cache it) and `context` (today's date, this
customer's pets and bookings, the conversation summary), which goes after the cache breakpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments object


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    # Set when the provider sent arguments that are not a JSON object: reported back as a tool error.
    arguments_error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn. A user turn carries text and/or tool results; an assistant turn text and/or calls."""

    role: Role
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True, slots=True)
class SystemPrompt:
    stable: str
    context: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. `input_tokens` counts only uncached input, as Anthropic reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass(frozen=True, slots=True)
class ChatRequest:
    system: SystemPrompt
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_output_tokens: int = 1024
    allow_tools: bool = True  # False: the model must answer in text (the tool loop hit its bound)


@dataclass(frozen=True, slots=True)
class ChatResponse:
    text: str
    tool_calls: tuple[ToolCall, ...]
    stop_reason: str  # "end_turn" | "tool_use" | "max_tokens" | provider-specific
    usage: Usage
    provider: str
    model: str
    # Providers that failed before this one answered (filled in by the fallback chain).
    faults: tuple[ProviderFault, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderFault:
    """A failed attempt: which provider, which HTTP status (None: time-out / connection), the error's
    type (the API's, e.g. "overloaded_error", or ours: "timeout", "connection") and the provider's
    request id, which its support asks for."""

    provider: str
    status: int | None
    kind: Literal["transient", "configuration"]
    message: str = ""
    error_type: str | None = None
    request_id: str | None = None

    def describe(self) -> str:
        """One log-safe phrase: provider, status, error type, request id; never the prompt or a key
        (the API's message can quote the request, so it stays out)."""
        status = str(self.status) if self.status is not None else "no status"
        return (
            f"{self.provider} status={status} error={self.error_type or 'unknown'}"
            f" request_id={self.request_id or '-'}"
        )


class ChatModel(Protocol):
    """One provider (or a chain of them) that can answer a chat request."""

    name: str

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse: ...


@runtime_checkable
class Loadable(Protocol):
    """A provider whose SDK is loaded on demand (seconds, once per process): `warm_up` loads it."""

    async def warm_up(self) -> None: ...


# --- errors ---------------------------------------------------------------------------------------

CONFIGURATION_STATUSES = frozenset({400, 401, 403, 404, 422})


class ProviderError(Exception):
    """A provider could not answer this request. Adapters raise only this (never SDK errors)."""

    def __init__(
        self,
        provider: str,
        status: int | None,
        message: str,
        *,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{provider}: {status or 'no status'}: {message}")
        self.provider = provider
        self.status = status
        self.message = message
        self.error_type = _token(error_type)
        self.request_id = _token(request_id)

    @property
    def is_configuration(self) -> bool:
        """Bad key, no permission, retired model, a request the API refuses: Kimmie must act."""
        return self.status in CONFIGURATION_STATUSES

    def fault(self) -> ProviderFault:
        kind: Literal["transient", "configuration"] = (
            "configuration" if self.is_configuration else "transient"
        )
        return ProviderFault(
            self.provider,
            self.status,
            kind,
            self.message[:300],
            error_type=self.error_type,
            request_id=self.request_id,
        )


_TOKEN = re.compile(r"[^A-Za-z0-9_.:-]")


def _token(value: str | None) -> str | None:
    """A short plain token (error types and request ids come from a response: keep them log-safe)."""
    return _TOKEN.sub("", value)[:80] or None if value else None


@dataclass
class AllProvidersFailedError(Exception):
    """Every provider in the chain failed (or none is configured): the offline responder answers."""

    faults: list[ProviderFault] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f.describe() for f in self.faults) or "no provider configured"
