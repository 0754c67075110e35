"""A dependency that exists only after start-up: built once /healthz answers, awaited by its users.

Telegram's bot costs seconds and ~170 MB to import (aiogram builds ~300 pydantic models), so the
process answers /healthz first and builds the bot in the background (cheshire/runtime.py). What needs
the bot before then is handed a `Deferred` at construction, explicitly, instead of the bot: a
stand-in sender, Kimmie's notifier, a photo fetcher, the webhook route. Each awaits the handle with a
bound; when the bound passes first, it raises the error its caller already retries (a delivery's
"retry later", a job's RetryLater, a webhook's 503), so nothing that arrives early is lost or dies.

The handle is resolved once, by whoever builds the dependency, or failed (the bot could not be built):
then every waiter hears that at once rather than after its bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from core.jobs.errors import RetryLater
from core.ports import (
    AdminNotifier,
    ChannelCapabilities,
    ChannelSender,
    PartSent,
    RetryableDeliveryError,
    SendResult,
)
from core.types import OutboundMessage, Recipient

T = TypeVar("T")
PhotoFetcher = Callable[[Mapping[str, Any]], Awaitable[bytes]]  # as core/previews/service.py's

# How long a job waits for a dependency still starting: the bot is usually built within seconds of
# /healthz; a job cut off here runs again after RETRY_S (well inside any job's time-out).
WAIT_S = 20.0
RETRY_S = 5.0


class NotReadyError(Exception):
    """The dependency is not built yet (or could not be built)."""


class Deferred(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._value: T | None = None
        self._failure: str | None = None
        self._settled = asyncio.Event()  # binds to the running loop only when first awaited

    @property
    def value(self) -> T | None:
        """The dependency, or None while it is being built (or when it failed)."""
        return self._value

    @property
    def failure(self) -> str | None:
        return self._failure

    def resolve(self, value: T) -> None:
        if self._settled.is_set():
            raise RuntimeError(f"{self.name} was settled already")
        self._value = value
        self._settled.set()

    def fail(self, reason: str) -> None:
        if self._settled.is_set():
            raise RuntimeError(f"{self.name} was settled already")
        self._failure = reason
        self._settled.set()

    async def get(self, *, timeout_s: float) -> T:
        """The dependency, waiting up to `timeout_s` for it; NotReadyError when it does not come."""
        if not self._settled.is_set():
            try:
                async with asyncio.timeout(timeout_s):
                    await self._settled.wait()
            except TimeoutError:
                raise NotReadyError(f"{self.name} is still starting") from None
        if self._value is None:
            raise NotReadyError(f"{self.name} could not start: {self._failure}")
        return self._value


class DeferredSender(Generic[T]):
    """A ChannelSender whose platform client is `pick(handle)`, once built. What a sender declares
    up front (capabilities, fault key) is given here, because delivery reads it before sending."""

    def __init__(
        self,
        handle: Deferred[T],
        pick: Callable[[T], ChannelSender],
        *,
        capabilities: ChannelCapabilities,
        credentials_fault_key: str | None = None,
        wait_s: float = WAIT_S,
    ) -> None:
        self._handle = handle
        self._pick = pick
        self._capabilities = capabilities
        self._fault_key = credentials_fault_key
        self._wait_s = wait_s

    @property
    def capabilities(self) -> ChannelCapabilities:
        return self._capabilities

    @property
    def credentials_fault_key(self) -> str | None:
        return self._fault_key

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult:
        try:
            built = await self._handle.get(timeout_s=self._wait_s)
        except NotReadyError as exc:
            raise RetryableDeliveryError(str(exc), retry_after_s=RETRY_S) from None
        sender = self._pick(built)
        return await sender.send(recipient, message, resume_from=resume_from, on_part_sent=on_part_sent)


class DeferredNotifier(Generic[T]):
    """Kimmie's AdminNotifier `pick(handle)`, once built; a notification before then waits, then
    runs again later (RetryLater), so it is neither lost nor handed to the e-mail fallback early."""

    def __init__(
        self, handle: Deferred[T], pick: Callable[[T], AdminNotifier], *, wait_s: float = WAIT_S
    ) -> None:
        self._handle = handle
        self._pick = pick
        self._wait_s = wait_s

    async def _notifier(self) -> AdminNotifier:
        try:
            return self._pick(await self._handle.get(timeout_s=self._wait_s))
        except NotReadyError as exc:
            raise RetryLater(RETRY_S, str(exc)) from None

    async def booking_request(self, appointment_id: int) -> None:
        await (await self._notifier()).booking_request(appointment_id)

    async def booking_changed(self, appointment_id: int, event: str) -> None:
        await (await self._notifier()).booking_changed(appointment_id, event)

    async def handover(self, conversation_id: int, reason: str) -> None:
        await (await self._notifier()).handover(conversation_id, reason)

    async def alert(self, text: str) -> None:
        await (await self._notifier()).alert(text)

    async def reminder_digest(self, appointment_ids: Sequence[int]) -> None:
        await (await self._notifier()).reminder_digest(appointment_ids)


def deferred_fetcher(
    handle: Deferred[T], pick: Callable[[T], PhotoFetcher], *, wait_s: float = WAIT_S
) -> PhotoFetcher:
    """A photo fetcher (core/previews) of the built dependency, usable before it is built: a call
    waits for it, then says "retry later" as a fetcher does when its platform is busy."""

    async def fetch(attachment: Mapping[str, Any]) -> bytes:
        try:
            built = await handle.get(timeout_s=wait_s)
        except NotReadyError as exc:
            raise RetryableDeliveryError(str(exc), retry_after_s=RETRY_S) from None
        return await pick(built)(attachment)

    return fetch
