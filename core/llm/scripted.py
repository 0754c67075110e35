"""A scripted ChatModel for tests and benches: it answers from a list of steps and records requests.

A step is a `Say` (text and/or tool calls), a `ProviderError` to raise, or a function of the request
returning either (to answer from what the tools said). When the script runs out it repeats
`when_exhausted` (default: a short text), so a test that asks one question too many still gets an answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.llm.types import ChatRequest, ChatResponse, ProviderError, ToolCall, Usage


@dataclass(frozen=True)
class Say:
    text: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))


Step = Say | ProviderError | Callable[[ChatRequest], "Say | ProviderError"]


class ScriptedChatModel:
    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        name: str = "scripted",
        model: str = "scripted-1",
        when_exhausted: Say | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.steps: list[Step] = list(steps)
        self.when_exhausted = when_exhausted or Say("OK.")
        self.requests: list[ChatRequest] = []
        self._ids = itertools.count(1)

    def add(self, *steps: Step) -> None:
        self.steps.extend(steps)

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        self.requests.append(request)
        step: Step = self.steps.pop(0) if self.steps else self.when_exhausted
        if callable(step) and not isinstance(step, Say | ProviderError):
            step = step(request)
        if isinstance(step, ProviderError):
            raise step
        assert isinstance(step, Say)
        calls = tuple(ToolCall(id=f"call_{next(self._ids)}", name=n, arguments=a) for n, a in step.calls)
        return ChatResponse(
            text=step.text,
            tool_calls=calls,
            stop_reason="tool_use" if calls else "end_turn",
            usage=step.usage,
            provider=self.name,
            model=self.model,
        )


def last_tool_results(request: ChatRequest) -> dict[str, str]:
    """The tool results of the newest user turn, by call id order: what the model would read."""
    if not request.messages:
        return {}
    last = request.messages[-1]
    return {r.call_id: r.content for r in last.tool_results}
