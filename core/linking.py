"""Tying a new chat to the customer's existing record: a signed start token, or their own phone.

The assistant offers a link on Instagram/Messenger (bot/links.py builds the t.me URL) whose token
names the client and an expiry, signed (HMAC, key derived from the bot token) so nobody can forge a
link to another client's record. `start_chat` is the `/start <token>` use case: a valid token attaches
this chat to that client, anything else just greets. A shared phone number links through ingest
(`InboundMessage.phone`, core/conversation/ingest.py); `request_my_bookings` says when to offer that.
The token is 1-64 characters of `A-Za-z0-9_-` (Telegram's deep-link limit):
`<client id>_<expiry, unix s>_<24 hex of HMAC>`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from core import customers, signing
from core.conversation import payloads as pl
from core.conversation.ingest import IngestResult, ingest
from core.db.models import Client
from core.outbox import queue_outbound
from core.settings import Settings
from core.types import Author, Channel, InboundMessage, OutboundMessage, QuickReply

log = logging.getLogger(__name__)

LINK_TTL_S = 3 * 24 * 3600  # long enough to open the app later; short if the link is forwarded
_PURPOSE = "telegram-link"
_MAC_CHARS = 24  # 96 bits
_TOKEN = re.compile(r"^(\d{1,19})_(\d{1,12})_([0-9a-f]{24})$")

# The main menu under the greeting: entry payloads of the button flow (core/conversation/payloads.py).
MENU = (
    QuickReply("📅 Book a groom", pl.BOOK),
    QuickReply("💲 Prices", pl.PRICES),
    QuickReply("🕘 Opening hours", pl.HOURS),
    QuickReply("🗂 My bookings", pl.MY_BOOKINGS),
    QuickReply("🙋 Talk to Kimmie", pl.HUMAN),
)
LINKED_NOTE = (
    "✅ Your Telegram is now linked to your profile with us, so booking reminders and updates reach you "
    "here too."
)


def _key(settings: Settings) -> bytes:
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    return signing.derive_key("cheshire-telegram-link", settings.telegram_bot_token)


def start_token(settings: Settings, client_id: int, *, clock: Callable[[], float] = time.time) -> str:
    body = f"{client_id}_{int(clock()) + LINK_TTL_S}"
    return f"{body}_{signing.mac(_key(settings), _PURPOSE, body, chars=_MAC_CHARS)}"


def client_from_token(
    settings: Settings, token: str, *, clock: Callable[[], float] = time.time
) -> int | None:
    """The client id a valid, unexpired token names; None for anything else."""
    found = _TOKEN.match(token.strip())
    if found is None or settings.telegram_bot_token is None:
        return None
    client_id, expires, given = found.groups()
    body = f"{client_id}_{expires}"
    if not signing.matches(_key(settings), _PURPOSE, body, given, chars=_MAC_CHARS):
        return None
    if clock() > int(expires):
        return None
    return int(client_id)


@dataclass(frozen=True, slots=True)
class StartedChat:
    conversation_id: int
    client_id: int
    linked: bool  # a valid token attached this chat to its client


def greeting(settings: Settings, display_name: str | None) -> str:
    first = f" {display_name.split()[0]}" if display_name else ""
    return (
        f"Hi{first}! I'm Cheshire, the assistant of {settings.business_name}. I can book a groom, "
        "tell you prices and opening hours, or get Kimmie for you. Just write, or tap a button."
    )


async def start_chat(
    session: AsyncSession,
    settings: Settings,
    *,
    channel: Channel,
    external_id: str,
    display_name: str | None,
    token: str | None,
    sent_at: datetime | None,
) -> StartedChat:
    """`/start [token]`: link the chat when the token is valid, then queue the greeting with the menu.

    A bad or expired token just greets: nothing to explain to someone who may not have sent it."""
    client_id = client_from_token(settings, token) if token else None
    linked = None
    if client_id is not None:
        linked = await customers.link_identity(
            session,
            client_id=client_id,
            channel=channel.value,
            external_id=external_id,
            display_name=display_name,
        )
    identity = linked or await customers.get_or_create_identity(
        session, channel.value, external_id, display_name=display_name
    )
    conversation = await customers.get_or_create_conversation(session, identity)
    customers.touch_inbound(identity, conversation, sent_at)  # reachable again after a block
    text = greeting(settings, display_name)
    if linked is not None:
        log.info("chat linked by a signed link", extra={"client_id": linked.client_id})
        text = f"{LINKED_NOTE}\n\n{text}"
    await queue_outbound(
        session,
        conversation_id=conversation.id,
        channel=channel.value,
        message=OutboundMessage(text=text, quick_replies=MENU),
        author=Author.SYSTEM,
    )
    return StartedChat(
        conversation_id=conversation.id, client_id=identity.client_id, linked=linked is not None
    )


@dataclass(frozen=True, slots=True)
class MyBookingsRequest:
    ingested: IngestResult
    phone_on_file: bool  # False: offer to link by phone (bookings made by phone or on another app)


async def request_my_bookings(session: AsyncSession, inbound: InboundMessage) -> MyBookingsRequest:
    """Feed the MY_BOOKINGS payload to the conversation core (the one self-service flow: list, cancel,
    move; core/conversation/offline.py), and say whether the client's phone is known."""
    ingested = await ingest(session, replace(inbound, payload=pl.MY_BOOKINGS))
    client = await session.get(Client, ingested.client_id)
    return MyBookingsRequest(ingested=ingested, phone_on_file=bool(client is not None and client.phone))
