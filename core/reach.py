"""Whether a customer can be reached later: the routes a reminder could take at a given moment.

A route is one of the client's channel identities (not marked unreachable) on a channel that can push
to a person who did not just write (the website chat cannot: the browser polls), and is open at that
moment: no messaging window, or inside it (counted from the person's last message), or past it on a
channel whose reminders go out as utility templates (Meta's, with `META_UTILITY_MESSAGES`).

The policy is plain data built by the composition root from what is configured (cheshire/wiring.py
`reach_policy`), so core names no platform: the booking flows ask for a contact when no lasting
route exists, and the confirmation promises a reminder only on a route open at reminder time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import ChannelIdentity
from core.types import ANYTIME_CHANNELS, WINDOWED_CHANNELS

WINDOW_S = 24 * 3600.0


def _default_windows() -> dict[str, float]:
    return {c.value: WINDOW_S for c in WINDOWED_CHANNELS}


def _default_pushable() -> frozenset[str]:
    return frozenset(c.value for c in ANYTIME_CHANNELS | WINDOWED_CHANNELS)


@dataclass(frozen=True, slots=True)
class ReachPolicy:
    # Channels with a sender that can push (the website chat is never one).
    pushable: frozenset[str] = field(default_factory=_default_pushable)
    # Automated messages reach these only this long after the person's last message.
    windows: Mapping[str, float] = field(default_factory=_default_windows)
    # Windowed channels where a reminder past the window goes out as a utility template.
    templates: frozenset[str] = frozenset()

    def open_at(self, channel: str, last_inbound_at: datetime | None, at: datetime) -> bool:
        if channel not in self.pushable:
            return False
        window = self.windows.get(channel)
        if window is None or channel in self.templates:
            return True
        return last_inbound_at is not None and at < last_inbound_at + timedelta(seconds=window)

    def lasting(self, channel: str) -> bool:
        """Open whenever: a reminder will reach the person here, however far ahead the visit is."""
        return channel in self.pushable and (channel not in self.windows or channel in self.templates)


@dataclass(frozen=True, slots=True)
class Route:
    channel: str
    address: str  # the identity's external id (an e-mail address, a chat id)


async def _identities(session: AsyncSession, client_id: int) -> list[ChannelIdentity]:
    rows = await session.execute(
        select(ChannelIdentity)
        .where(ChannelIdentity.client_id == client_id, ChannelIdentity.unreachable_at.is_(None))
        .order_by(ChannelIdentity.id)
    )
    return list(rows.scalars())


async def routes_at(session: AsyncSession, client_id: int, at: datetime, policy: ReachPolicy) -> list[Route]:
    """The client's routes open at `at`, lasting ones first (e-mail, Telegram before a window)."""
    found = [
        i for i in await _identities(session, client_id) if policy.open_at(i.channel, i.last_inbound_at, at)
    ]
    found.sort(key=lambda i: not policy.lasting(i.channel))
    return [Route(i.channel, i.external_id) for i in found]


async def has_lasting_route(session: AsyncSession, client_id: int, policy: ReachPolicy) -> bool:
    return any(policy.lasting(i.channel) for i in await _identities(session, client_id))
