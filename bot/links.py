"""The customer's Telegram link: `https://t.me/<bot>?start=<token>`, offered on Instagram/Messenger so
reminders can reach them outside Meta's 24-hour window.

The token names the client and an expiry and is signed (HMAC, key derived from the bot token), so
`/start <token>` can attach the new Telegram chat to that client and no one can forge a link to
another client's record. Telegram allows 1-64 characters of `A-Za-z0-9_-` after `start=`:
`<client id>_<expiry, unix s>_<24 hex of HMAC>` fits. No aiogram here: the conversation engine's
tools use it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from core import signing
from core.settings import Settings

LINK_TTL_S = 3 * 24 * 3600  # long enough to open Telegram later; short if the link is forwarded
_PURPOSE = "telegram-link"
_MAC_CHARS = 24  # 96 bits
_TOKEN = re.compile(r"^(\d{1,19})_(\d{1,12})_([0-9a-f]{24})$")


def _key(settings: Settings) -> bytes:
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    return signing.derive_key("cheshire-telegram-link", settings.telegram_bot_token)


def link_available(settings: Settings) -> bool:
    return bool(settings.telegram_bot_token and settings.telegram_bot_username)


def start_token(settings: Settings, client_id: int, *, clock: Callable[[], float] = time.time) -> str:
    body = f"{client_id}_{int(clock()) + LINK_TTL_S}"
    return f"{body}_{signing.mac(_key(settings), _PURPOSE, body, chars=_MAC_CHARS)}"


def telegram_link(
    settings: Settings, client_id: int, *, clock: Callable[[], float] = time.time
) -> str | None:
    """The deep link for this client, or None when the bot or its username is not configured."""
    if not link_available(settings):
        return None
    token = start_token(settings, client_id, clock=clock)
    return f"https://t.me/{settings.telegram_bot_username}?start={token}"


def contact_links(settings: Settings, client_id: int) -> dict[str, str]:
    """What the assistant's contact_options tool offers (core.conversation.tools.ContactLinks)."""
    link = telegram_link(settings, client_id)
    return {"telegram": link} if link else {}


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
