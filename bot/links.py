"""The customer's Telegram link: `https://t.me/<bot>?start=<token>`, offered on Instagram/Messenger so
reminders can reach them outside Meta's 24-hour window.

The signed token and `/start <token>` linking are core's (core/linking.py); this module only knows
the t.me URL. No aiogram here: the conversation engine's tools use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core.linking import start_token
from core.settings import Settings


def link_available(settings: Settings) -> bool:
    return bool(settings.telegram_bot_token and settings.telegram_bot_username)


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
