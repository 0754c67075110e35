"""Build the provider chain from settings: Claude first, then OpenAI; None when neither has a key."""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.llm.anthropic_provider import AnthropicChatModel
from core.llm.chain import FallbackChatModel
from core.llm.openai_provider import OpenAIChatModel
from core.llm.types import ChatModel
from core.settings import Settings

log = logging.getLogger(__name__)


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


# The start-up log's names (core/settings.py's `integrations()`) of each provider.
INTEGRATION_NAMES = {"anthropic": "claude", "openai": "openai"}


async def warm_up_chat_model(model: ChatModel | None) -> dict[str, bool]:
    """Load each provider's SDK (off the event loop); integration name -> whether it loaded."""
    loaded: dict[str, bool] = {}
    for provider in getattr(model, "providers", []):
        name = INTEGRATION_NAMES.get(provider.name, provider.name)
        try:
            await provider.warm_up()
        except Exception:
            log.exception("the %s SDK could not be loaded: %s is off", provider.name, name)
            loaded[name] = False
        else:
            loaded[name] = True
    return loaded
