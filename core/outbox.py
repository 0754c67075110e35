"""The outbox: every reply to a customer is a `message` row plus a `deliver_message` job, written in
the same transaction as whatever caused it. The job (core/delivery.py) sends it through the channel
adapter, at least once and never twice once the platform accepted it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Message
from core.jobs.queue import enqueue
from core.types import Author, DeliveryStatus, Direction, OutboundMessage

DELIVER_JOB = "deliver_message"


async def queue_outbound(
    session: AsyncSession,
    *,
    conversation_id: int,
    channel: str,
    message: OutboundMessage,
    author: Author = Author.ASSISTANT,
    llm_usage: dict[str, object] | None = None,
) -> Message:
    """Store an outbound message and queue its delivery in the caller's transaction."""
    row = Message(
        conversation_id=conversation_id,
        channel=channel,
        direction=Direction.OUTBOUND.value,
        author=author.value,
        text=message.text,
        quick_replies=[{"title": q.title, "payload": q.payload} for q in message.quick_replies],
        image_urls=list(message.image_urls),
        delivery_status=DeliveryStatus.PENDING.value,
        **(llm_usage or {}),
    )
    session.add(row)
    await session.flush()
    await enqueue(
        session,
        DELIVER_JOB,
        {"message_id": row.id},
        idempotency_key=f"deliver:{row.id}",
        # One conversation's replies leave in the order they were written.
        queue_key=f"deliver:conversation:{conversation_id}",
    )
    return row
