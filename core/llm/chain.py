"""The fallback chain: Claude, then OpenAI, then (outside this module) the offline responder.

Each provider gets what is left of the caller's deadline. Any `ProviderError` — rate limit, overload,
5xx, time-out, connection, but also a bad key or a retired model — moves on to the next provider for
the same request. The faults travel with the answer (`ChatResponse.faults`) or with
`AllProvidersFailedError`, so the engine can alert Kimmie about configuration faults in its own
transaction (alerts are deduplicated there: once per fault, not once per message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from core.llm.types import (
    AllProvidersFailedError,
    ChatModel,
    ChatRequest,
    ChatResponse,
    ProviderError,
    ProviderFault,
)

log = logging.getLogger(__name__)

# Below this a provider call cannot succeed; do not start one.
MIN_ATTEMPT_S = 0.05


class FallbackChatModel:
    name = "fallback"

    def __init__(self, providers: Sequence[ChatModel]) -> None:
        self.providers = list(providers)

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        deadline = time.monotonic() + timeout_s
        faults: list[ProviderFault] = []
        for provider in self.providers:
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_S:
                faults.append(ProviderFault(provider.name, None, "transient", "turn deadline reached"))
                continue
            try:
                # The SDK's timeout is per attempt; this bounds the attempt and its retries together.
                async with asyncio.timeout(remaining):
                    response = await provider.complete(request, timeout_s=remaining)
            except TimeoutError:
                log.warning("llm provider timed out, falling through", extra={"provider": provider.name})
                faults.append(ProviderFault(provider.name, None, "transient", "timed out"))
                continue
            except ProviderError as exc:
                log.warning(
                    "llm provider failed, falling through",
                    extra={"provider": exc.provider, "status": exc.status},
                )
                faults.append(exc.fault())
                continue
            return replace(response, faults=tuple(faults)) if faults else response
        raise AllProvidersFailedError(faults)
