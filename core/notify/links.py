"""Kimmie's one-time Approve / Decline links, for the e-mail she gets when Telegram cannot reach her.

A link carries the request, the action, when it was issued and a random nonce, signed with a key
derived from SMTP_URL (the e-mail fallback exists only with it, and it never leaves the server). It is
refused when the signature does not match (403), after LINK_TTL (410), and once used (409): the
nonce is stored in `action_link_use` in the same transaction as the decision, so a link decides at
most once even when two clicks race (the primary key lets one in). Opening a link (GET) only shows
the card; the decision is the page's POST (channels/email/decide_page.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import signing
from core.db.models import ActionLinkUse
from core.settings import Settings

LinkAction = Literal["approve", "decline"]
ACTIONS: tuple[LinkAction, ...] = ("approve", "decline")
LINK_TTL = timedelta(hours=24)
PATH = "/kimmie/decide"
_PURPOSE = "decide"


class LinkError(Exception):
    """A link that must not act; `status` is the HTTP answer, `str()` what the page says."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class LinkClaim:
    appointment_id: int
    action: LinkAction
    issued: datetime
    nonce: str


def enabled(settings: Settings) -> bool:
    """Links need a public address to point at and the e-mail's secret to sign with."""
    return bool(settings.public_base_url and settings.smtp_url)


def _key(settings: Settings) -> bytes:
    if settings.smtp_url is None:
        raise LinkError(404, "Decision links are not configured.")
    return signing.derive_key("cheshire-decision-links", settings.smtp_url)


def make_token(settings: Settings, appointment_id: int, action: LinkAction, *, now: datetime) -> str:
    body = f"{appointment_id}.{action}.{int(now.timestamp())}.{secrets.token_hex(8)}"
    return f"{body}.{signing.mac(_key(settings), _PURPOSE, body)}"


def make_link(settings: Settings, appointment_id: int, action: LinkAction, *, now: datetime) -> str:
    token = make_token(settings, appointment_id, action, now=now)
    return f"{settings.public_base_url}{PATH}?{urlencode({'t': token})}"


def read_token(settings: Settings, token: str, *, now: datetime) -> LinkClaim:
    """The claim of a genuine, unexpired token (whether it was used is `check_unused`'s business)."""
    body, _, mac = token.strip().rpartition(".")
    parts = body.split(".")
    if len(parts) != 4 or not signing.matches(_key(settings), _PURPOSE, body, mac):
        raise LinkError(403, "This link is not valid.")
    appointment, action, issued_s, nonce = parts
    if action not in ACTIONS or not appointment.isdigit() or not issued_s.isdigit():
        raise LinkError(403, "This link is not valid.")
    issued = datetime.fromtimestamp(int(issued_s), now.tzinfo)
    if not timedelta(0) <= now - issued <= LINK_TTL:
        raise LinkError(410, "This link has expired: decide in Telegram (/pending) instead.")
    return LinkClaim(int(appointment), action, issued, nonce)  # type: ignore[arg-type]


async def check_unused(session: AsyncSession, claim: LinkClaim) -> None:
    if await session.scalar(select(ActionLinkUse.nonce).where(ActionLinkUse.nonce == claim.nonce)):
        raise LinkError(409, "This link was already used.")


async def use(session: AsyncSession, claim: LinkClaim, *, now: datetime) -> None:
    """Spend the link in the caller's unit of work (the decision commits with it, or neither does)."""
    await check_unused(session, claim)
    try:
        async with session.begin_nested():
            session.add(
                ActionLinkUse(
                    nonce=claim.nonce, appointment_id=claim.appointment_id, action=claim.action, used_at=now
                )
            )
            await session.flush()
    except IntegrityError:
        raise LinkError(409, "This link was already used.") from None
