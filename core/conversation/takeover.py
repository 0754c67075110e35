"""Kimmie takes a conversation over, answers it herself, and hands it back.

While `human_takeover` is set the engine stores inbound messages and stays silent. It wakes again when
Kimmie hands the chat back, or by itself once the chat has been idle for `settings.takeover_idle_hours`
(counted from `takeover_at`, which each of Kimmie's replies refreshes).

Every function runs in the caller's unit of work and never commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.alerts import notify_admin
from core.db.models import Conversation, Message, utcnow
from core.events import emit
from core.outbox import queue_outbound
from core.types import Author, OutboundMessage, QuickReply


async def handover_requested(session: AsyncSession, conversation_id: int, reason: str) -> None:
    """The chat needs Kimmie: her notification and the `conversation.handover` event, in the caller's
    transaction (the caller has just flagged the conversation, once until she deals with it)."""
    await notify_admin(session, "handover", conversation_id=conversation_id, reason=reason)
    await emit(
        session,
        events.CONVERSATION_HANDOVER,
        subject=f"conversation:{conversation_id}",
        data={"conversation_id": conversation_id, "reason": reason},
    )


class ConversationNotFoundError(LookupError):
    """No conversation with that id (a stale button in Kimmie's chat)."""


async def _conversation(session: AsyncSession, conversation_id: int) -> Conversation:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return conversation


async def take_over(session: AsyncSession, conversation_id: int) -> None:
    """Kimmie answers this chat herself; the assistant goes quiet."""
    conversation = await _conversation(session, conversation_id)
    conversation.human_takeover = True
    conversation.takeover_at = utcnow()
    # She is on it: the "needs Kimmie" flag has done its job.
    conversation.needs_attention = False


async def hand_back(session: AsyncSession, conversation_id: int) -> None:
    """The assistant answers again from the next inbound message on."""
    conversation = await _conversation(session, conversation_id)
    conversation.human_takeover = False
    conversation.takeover_at = None
    conversation.needs_attention = False
    # Drop a half-finished button flow: the chat has moved on while Kimmie had it.
    conversation.state = {}


async def staff_reply(
    session: AsyncSession,
    conversation_id: int,
    text: str,
    *,
    quick_replies: tuple[QuickReply, ...] = (),
    image_urls: tuple[str, ...] = (),
) -> int:
    """Send Kimmie's own words to the customer through the outbox (author=kimmie); the message id.

    Replying means she is in the conversation, so it also takes it over (or refreshes the idle clock):
    the assistant must not talk over her.
    """
    conversation = await _conversation(session, conversation_id)
    conversation.human_takeover = True
    conversation.takeover_at = utcnow()
    conversation.needs_attention = False
    return await queue_outbound(
        session,
        conversation_id=conversation.id,
        channel=conversation.channel,
        message=OutboundMessage(text=text, quick_replies=quick_replies, image_urls=image_urls),
        author=Author.KIMMIE,
    )


async def recent_messages(session: AsyncSession, conversation_id: int, limit: int = 20) -> list[Message]:
    """The last `limit` messages of the chat, oldest first (what Kimmie sees before answering)."""
    rows = await session.execute(
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return list(reversed(rows.scalars().all()))


def takeover_active(conversation: Conversation, *, idle_hours: float, now: datetime | None = None) -> bool:
    """True while Kimmie holds the chat and it has not been idle past `idle_hours`."""
    return is_active(conversation.human_takeover, conversation.takeover_at, idle_hours=idle_hours, now=now)


def is_active(
    human_takeover: bool, takeover_at: datetime | None, *, idle_hours: float, now: datetime | None = None
) -> bool:
    if not human_takeover:
        return False
    if takeover_at is None:
        return True
    return (now or utcnow()) - takeover_at < timedelta(hours=idle_hours)


def release_if_idle(conversation: Conversation, *, idle_hours: float, now: datetime | None = None) -> bool:
    """Hand an idle takeover back to the assistant. Returns True when it did."""
    if conversation.human_takeover and not takeover_active(conversation, idle_hours=idle_hours, now=now):
        conversation.human_takeover = False
        conversation.takeover_at = None
        return True
    return False
