"""Core's own vocabulary. Adapters translate platform payloads into these and back.

Plain frozen dataclasses: no ORM rows, no SDK objects, nothing platform-specific.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


class Channel(enum.StrEnum):
    TELEGRAM = "telegram"
    MESSENGER = "messenger"
    INSTAGRAM = "instagram"
    WEB = "web"
    EMAIL = "email"  # outbound only: reminders and replies when no chat channel can reach the person


# Platform facts core keeps as data, never as `if channel == ...` branches. Meta lets automated
# messages through only within 24 h of the person's last message (message tags other than HUMAN_AGENT
# were withdrawn in April 2026), so on these channels the assistant asks early for another contact.
WINDOWED_CHANNELS = frozenset({Channel.INSTAGRAM, Channel.MESSENGER})
# Channels that reach a person at any time (reminders): no window, and pushed, unlike the website chat.
ANYTIME_CHANNELS = frozenset({Channel.TELEGRAM, Channel.EMAIL})


class Direction(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class Author(enum.StrEnum):
    CUSTOMER = "customer"
    ASSISTANT = "assistant"
    KIMMIE = "kimmie"
    SYSTEM = "system"


class DeliveryStatus(enum.StrEnum):
    RECEIVED = "received"  # inbound
    PENDING = "pending"  # outbound, not yet accepted by the platform
    SENT = "sent"
    DEAD = "dead"  # gave up; visible to Kimmie


class AppointmentStatus(enum.StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # a request whose hold ran out before Kimmie decided
    COMPLETED = "completed"
    NO_SHOW = "no_show"


# Statuses that occupy time in the groomer's day.
BLOCKING_STATUSES = (AppointmentStatus.REQUESTED, AppointmentStatus.CONFIRMED)


class SizeClass(enum.StrEnum):
    TOY = "toy"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    GIANT = "giant"


class CoatType(enum.StrEnum):
    SHORT = "short"
    DOUBLE = "double"
    CURLY = "curly"  # poodles, doodles
    LONG = "long"
    WIRE = "wire"


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: str  # "image", "video", "file", "audio"
    url: str | None = None
    file_id: str | None = None  # platform file handle (Telegram) when there is no URL
    mime_type: str | None = None


@dataclass(frozen=True, slots=True)
class QuickReply:
    """A tappable choice. `payload` is what comes back when the customer taps it."""

    title: str
    payload: str
    # A link button instead ("Pay the deposit"): channels with URL buttons (Telegram) show it, the
    # others leave it out (the message's text carries the link too).
    url: str | None = None


@dataclass(frozen=True, slots=True)
class UtilityTemplate:
    """A pre-approved message template (Meta's utility messages: appointment updates) a reminder goes
    out as past a messaging window: its name, its body's parameters in order, and a postback payload
    per template button."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()
    button_payloads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundMessage:
    channel: Channel
    external_user_id: str  # PSID, IGSID, Telegram chat id, web session id
    platform_message_id: str  # mid, update/message id, web message uuid: the dedupe key
    text: str = ""
    payload: str | None = None  # quick reply / postback / button payload
    attachments: tuple[Attachment, ...] = ()
    sent_at: datetime | None = None
    display_name: str | None = None
    reply_to: str | None = None
    phone: str | None = None  # a shared contact (Telegram)
    handle: str | None = None  # the person's username on the channel (Telegram @username)
    # False: store it (Kimmie sees it in the chat) but queue no assistant turn for it, e.g. the
    # excess of a sender flooding a webhook, where an error answer would make Meta redeliver.
    answer: bool = True


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    text: str
    quick_replies: tuple[QuickReply, ...] = ()
    image_urls: tuple[str, ...] = ()
    # The images' storage keys (ObjectStorage), aligned with `image_urls` when set: a URL may be
    # relative (local storage, no PUBLIC_BASE_URL) and only a browser can follow it, so a channel
    # adapter that cannot fetch the URL reads the bytes by key through the storage it was wired with
    # and uploads them. Core never says which channel does.
    image_keys: tuple[str, ...] = ()
    # Set by delivery, never stored: a person (Kimmie) wrote this and it goes out past the platform's
    # standard window under its human-agent allowance (Meta: the HUMAN_AGENT tag). Senders without such
    # an allowance ignore it.
    human_agent: bool = False
    # A reminder's utility template: used only past the window, by a sender declaring
    # `utility_templates`; stored with the message. Set by delivery: send it as that template.
    template: UtilityTemplate | None = None
    as_template: bool = False


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where an outbound message goes: one channel identity."""

    channel: Channel
    external_id: str
    identity_id: int | None = None


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str | None
    phone: str | None
    email: str | None
    notes: str | None = None
    # Channels the client can currently be reached on ("instagram", "telegram", "email", ...).
    reachable_channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pet:
    id: int
    client_id: int
    name: str
    breed: str | None
    size_class: SizeClass | None
    coat_type: CoatType | None
    weight_kg: float | None = None
    temperament: str | None = None
    health_notes: str | None = None
    vaccination_expires_on: date | None = None
    photos: tuple[str, ...] = ()
    placeholder: bool = False  # saved by the button flow before its name was known ("Dog N")


@dataclass(frozen=True, slots=True)
class Slot:
    start: datetime  # aware, UTC
    end: datetime
    verified: bool = True  # False when Google Calendar could not be consulted


@dataclass(frozen=True, slots=True)
class Quote:
    service_code: str
    service_name: str
    price_min_cents: int
    price_max_cents: int
    duration_min: int
    currency: str = "USD"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Booking:
    id: int
    client_id: int
    status: AppointmentStatus
    start: datetime
    end: datetime
    service_code: str
    service_name: str
    pet_ids: tuple[int, ...]
    pet_names: tuple[str, ...]
    source_channel: Channel | None
    availability_verified: bool = True
    price_min_cents: int | None = None
    price_max_cents: int | None = None
    hold_expires_at: datetime | None = None
    notes: str | None = None


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime


@dataclass
class Reply:
    """What the conversation engine produced for one inbound message."""

    messages: list[OutboundMessage] = field(default_factory=list)
    handed_over: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
