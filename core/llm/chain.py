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
from collections.abc import Callable, Sequence
from dataclasses import replace

from core.llm.types import (
    AllProvidersFailedError,
    ChatModel,
    ChatRequest,
    ChatResponse,
    Loadable,
    ProviderError,
    ProviderFault,
)

log = logging.getLogger(__name__)

# Below this a provider call cannot succeed; do not start one.
MIN_ATTEMPT_S = 0.05
# A provider that is not the last one gets at most this share of what is left of the turn, so a hung
# primary still leaves the fallback time to answer.
PRIMARY_SHARE = 0.65
# After a failure a provider goes to the back of the line for a while (it is still tried, last), so a
# dead primary costs one failed call, not one per message.
COOLDOWN_TRANSIENT_S = 30.0
COOLDOWN_CONFIGURATION_S = 300.0


class FallbackChatModel:
    name = "fallback"

    def __init__(
        self,
        providers: Sequence[ChatModel],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_call: Callable[[str, str], None] | None = None,
    ) -> None:
        self.providers = list(providers)
        self.clock = clock
        # (provider, "ok" | "transient" | "configuration") after each attempt: GET /metrics counts them.
        self.on_call = on_call
        self._cooling_until: dict[str, float] = {}

    def _order(self) -> list[ChatModel]:
        now = self.clock()
        healthy = [p for p in self.providers if self._cooling_until.get(p.name, 0.0) <= now]
        cooling = [p for p in self.providers if p not in healthy]
        return healthy + cooling

    def _failed(self, fault: ProviderFault) -> None:
        pause = COOLDOWN_CONFIGURATION_S if fault.kind == "configuration" else COOLDOWN_TRANSIENT_S
        self._cooling_until[fault.provider] = self.clock() + pause

    async def warm_up(self) -> None:
        """Load every provider's SDK (later calls are free): the process does after start-up, a first
        request does if it comes first."""
        for provider in self.providers:
            if isinstance(provider, Loadable):
                await provider.warm_up()

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResponse:
        # Before the turn's clock starts: loading an SDK takes seconds once per process, and counted
        # against the primary's share it would send the first turn to the fallback for no fault.
        await self.warm_up()
        deadline = time.monotonic() + timeout_s
        faults: list[ProviderFault] = []
        order = self._order()
        for n, provider in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_S:
                faults.append(
                    ProviderFault(
                        provider.name, None, "transient", "turn deadline reached", error_type="deadline"
                    )
                )
                continue
            budget = remaining if n == len(order) - 1 else remaining * PRIMARY_SHARE
            try:
                # The SDK's timeout is per attempt; this bounds the attempt and its retries together.
                async with asyncio.timeout(budget):
                    response = await provider.complete(request, timeout_s=budget)
            except TimeoutError:  # the chain's own bound on the attempt (and its SDK retries)
                fault = ProviderFault(provider.name, None, "transient", "timed out", error_type="timeout")
            except ProviderError as exc:
                fault = replace(exc.fault(), provider=provider.name)
            else:
                self._cooling_until.pop(provider.name, None)
                if self.on_call is not None:
                    self.on_call(provider.name, "ok")
                return replace(response, faults=tuple(faults)) if faults else response
            # In the message itself, not only in `extra`: the text log format shows no extra fields.
            log.warning(
                "llm provider failed, falling through: %s",
                fault.describe(),
                extra={"provider": fault.provider, "status": fault.status, "error_type": fault.error_type},
            )
            faults.append(fault)
            self._failed(fault)
            if self.on_call is not None:
                self.on_call(provider.name, fault.kind)
        raise AllProvidersFailedError(faults)
