"""Interfaces core needs from the outside world. Adapters in channels/, bot/ and core/<provider>
modules implement them; core code depends only on these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.types import Booking, Interval, OutboundMessage, Recipient

# --- Delivering messages to customers ----------------------------------------------------------


class DeliveryError(Exception):
    """Base of every failure a channel sender reports. Messages must not contain secrets."""


class RetryableDeliveryError(DeliveryError):
    """Throttled or transient: try again later (after `retry_after_s` when the platform says)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WindowClosedError(DeliveryError):
    """The platform's messaging window (Meta's 24 h) is closed for this recipient."""


class RecipientUnreachableError(DeliveryError):
    """The person blocked the bot or no longer exists: stop trying this identity."""


class ChannelCredentialsError(DeliveryError):
    """Our token is invalid or expired: a configuration fault to alert Kimmie about once."""


class PermanentDeliveryError(DeliveryError):
    """Rejected for good (bad request, unsupported content)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    platform_message_id: str | None


PartSent = Callable[[int, str | None], Awaitable[None]]
"""`on_part_sent(index, platform_message_id)`: the platform accepted part `index` (0-based)."""


@dataclass(frozen=True, slots=True)
class ChannelCapabilities:
    """What a channel's platform allows, declared by its sender and read by core/delivery.py (which
    never probes a sender for attributes). The defaults describe a channel with no limits."""

    # Can reach a person who did not just write (False: the website chat, which the browser polls):
    # only such a channel is a fallback route for a message another channel could not take.
    can_push: bool = True
    # Automated messages (assistant, system) go out only this long after the person's last message
    # (Meta: 24 h); None: any time.
    messaging_window_s: float | None = None
    # Kimmie's own replies may go out this long after the person's last message, marked
    # `human_agent` past the standard window (Meta's HUMAN_AGENT tag, 7 days, when approved).
    human_agent_window_s: float | None = None
    # Sends a message as parts it reports to `on_part_sent` and resumes after `resume_from` (False:
    # nothing reaches a platform, so there is no progress to record).
    parts: bool = True
    # Past the messaging window, a message carrying a `template` (a reminder) may go out as that
    # utility template (Meta's utility messages, with META_UTILITY_MESSAGES): delivery sets
    # `as_template` and the sender sends the template instead of the text.
    utility_templates: bool = False


class ChannelSender(Protocol):
    """Delivers one outbound message, which a platform may take as several calls ("parts": images,
    a long text cut at the platform's limit, ...).

    The parts must be a pure function of the recipient's channel and the message (no clock, no
    randomness, no per-process state), so part N is the same part on every attempt. `send` skips the
    first `resume_from` parts (accepted by an earlier attempt) and, after each part the platform
    accepts, awaits `on_part_sent(index, platform_message_id)` before sending the next: the caller
    records the progress durably there. If the callback raises, the sender stops and lets it
    propagate. The result describes the parts sent by this call (`platform_message_id` may be None,
    e.g. when `resume_from` already covered every part).

    `capabilities` declares what the platform allows (push, messaging windows, parts): a sender whose
    platform lets a person's own replies through for a while after its standard window declares
    `human_agent_window_s` (Meta: 7 days, only with the HUMAN_AGENT permission); delivery then sends
    Kimmie's replies in that band with `message.human_agent` set, and the sender tags them.
    `credentials_fault_key` names the alert Kimmie gets (once) when the sender's token is refused,
    shared by every user of that token (None: "<channel>:token").
    """

    @property
    def capabilities(self) -> ChannelCapabilities: ...

    @property
    def credentials_fault_key(self) -> str | None: ...

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult: ...


# --- Who a customer is ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """What a platform tells about a person who wrote to us (webhooks of some carry only an id)."""

    name: str | None = None  # the person's own name ("Alice Liddell")
    handle: str | None = None  # a username ("alice.l"), when the platform has one


class ProfileSource(Protocol):
    """Looks a channel identity's profile up. Raises the delivery errors above with the same meanings
    (retry later, credentials invalid, anything else: this profile cannot be had); None when the
    platform knows no name. `credentials_fault_key`: as ChannelSender's (the same token, the same
    alert)."""

    @property
    def credentials_fault_key(self) -> str | None: ...

    async def profile(self, recipient: Recipient) -> Profile | None: ...


# --- Kimmie --------------------------------------------------------------------------------------


class AdminNotifier(Protocol):
    """How Kimmie hears about things (Telegram; a log line when Telegram is off)."""

    async def booking_request(self, appointment_id: int) -> None: ...

    async def booking_changed(self, appointment_id: int, event: str) -> None: ...

    async def handover(self, conversation_id: int, reason: str) -> None: ...

    async def alert(self, text: str) -> None: ...

    async def reminder_digest(self, appointment_ids: Sequence[int]) -> None:
        """ONE daily list of visits whose reminder could not reach the customer, with their contact
        details and a "Mark confirmed" button each."""
        ...


# --- Google Calendar ------------------------------------------------------------------------------


class CalendarUnavailableError(Exception):
    """Calendar could not be consulted; availability falls back to working hours only."""


class CalendarProvider(Protocol):
    async def busy(self, start: datetime, end: datetime) -> list[Interval]: ...

    async def upsert_event(self, booking: Booking, *, summary: str, description: str) -> str: ...

    async def delete_event(self, booking_id: int, event_id: str | None) -> None: ...
