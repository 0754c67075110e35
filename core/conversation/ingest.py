"""Inbound messages enter core here, from every channel.

`ingest()` runs inside the adapter's unit of work: it stores the message once (the platform's id is
a unique key, so a redelivery is a no-op) and queues its processing in the same transaction. The
adapter commits and answers the platform at once; the engine runs later in a worker. Processing jobs
of one conversation share a queue key, so one customer's messages are handled strictly in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.db.database import insert_for
from core.db.models import Message, utcnow
from core.jobs.queue import enqueue
from core.types import Author, DeliveryStatus, Direction, InboundMessage

PROCESS_JOB = "process_message"


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: bool  # False: a redelivery of a message already stored
    message_id: int | None
    conversation_id: int
    client_id: int
    identity_id: int


def conversation_queue_key(conversation_id: int) -> str:
    return f"conversation:{conversation_id}"


async def ingest(session: AsyncSession, inbound: InboundMessage) -> IngestResult:
    identity = await customers.get_or_create_identity(
        session, inbound.channel.value, inbound.external_user_id, display_name=inbound.display_name
    )
    if inbound.phone:
        await customers.link_phone(session, identity, inbound.phone)
    conversation = await customers.get_or_create_conversation(session, identity)
    customers.touch_inbound(identity, conversation, inbound.sent_at)

    insert = insert_for(session)
    stmt = (
        insert(Message)
        .values(
            conversation_id=conversation.id,
            channel=inbound.channel.value,
            direction=Direction.INBOUND.value,
            author=Author.CUSTOMER.value,
            platform_message_id=inbound.platform_message_id,
            text=inbound.text,
            payload=inbound.payload,
            attachments=[
                {"kind": a.kind, "url": a.url, "file_id": a.file_id, "mime_type": a.mime_type}
                for a in inbound.attachments
            ],
            quick_replies=[],
            image_urls=[],
            delivery_status=DeliveryStatus.RECEIVED.value,
            created_at=inbound.sent_at or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["channel", "platform_message_id"])
        .returning(Message.id)
    )
    message_id = (await session.execute(stmt)).scalar_one_or_none()
    result = IngestResult(
        stored=message_id is not None,
        message_id=message_id,
        conversation_id=conversation.id,
        client_id=identity.client_id,
        identity_id=identity.id,
    )
    if message_id is not None:
        await enqueue(
            session,
            PROCESS_JOB,
            {"message_id": message_id, "conversation_id": conversation.id},
            idempotency_key=f"process:{message_id}",
            queue_key=conversation_queue_key(conversation.id),
        )
    return result
