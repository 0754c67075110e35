"""Build the provider chain from settings: Claude first, then OpenAI; None when neither has a key."""

from __future__ import annotations

from collections.abc import Callable

from core.llm.anthropic_provider import AnthropicChatModel
from core.llm.chain import FallbackChatModel
from core.llm.openai_provider import OpenAIChatModel
from core.llm.types import ChatModel
from core.settings import Settings


def build_chat_model(
    settings: Settings, *, on_call: Callable[[str, str], None] | None = None
) -> FallbackChatModel | None:
    """`on_call(provider, outcome)` after each provider attempt (GET /metrics counts them)."""
    providers: list[ChatModel] = []
    claude = AnthropicChatModel.from_settings(settings)
    if claude is not None:
        providers.append(claude)
    gpt = OpenAIChatModel.from_settings(settings)
    if gpt is not None:
        providers.append(gpt)
    return FallbackChatModel(providers, on_call=on_call) if providers else None


async def close_chat_model(model: ChatModel | None) -> None:
    """Close the SDK clients (their HTTP connection pools) at shutdown."""
    for provider in getattr(model, "providers", []):
        close = getattr(provider, "close", None)
        if close is not None:
            await close()
