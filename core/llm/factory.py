"""Build the provider chain from settings: Claude first, then OpenAI; None when neither has a key."""

from __future__ import annotations

from core.llm.anthropic_provider import AnthropicChatModel
from core.llm.chain import FallbackChatModel
from core.llm.openai_provider import OpenAIChatModel
from core.llm.types import ChatModel
from core.settings import Settings


def build_chat_model(settings: Settings) -> FallbackChatModel | None:
    providers: list[ChatModel] = []
    claude = AnthropicChatModel.from_settings(settings)
    if claude is not None:
        providers.append(claude)
    gpt = OpenAIChatModel.from_settings(settings)
    if gpt is not None:
        providers.append(gpt)
    return FallbackChatModel(providers) if providers else None


async def close_chat_model(model: ChatModel | None) -> None:
    """Close the SDK clients (their HTTP connection pools) at shutdown."""
    for provider in getattr(model, "providers", []):
        close = getattr(provider, "close", None)
        if close is not None:
            await close()
