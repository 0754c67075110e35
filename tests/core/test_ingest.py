"""Inbound messages are stored once per platform id and queued for processing in order."""

from sqlalchemy import func, select

from core.conversation.ingest import PROCESS_JOB, ingest
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Job, Message
from core.types import Channel, InboundMessage


def _inbound(mid: str, text: str = "hi", user: str = "psid-1", **kw: object) -> InboundMessage:
    return InboundMessage(
        channel=Channel.MESSENGER, external_user_id=user, platform_message_id=mid, text=text, **kw
    )  # type: ignore[arg-type]


async def test_first_message_creates_client_identity_message_and_job(db: Database) -> None:
    async with db.transaction() as session:
        result = await ingest(session, _inbound("m_1", display_name="Alice"))  # type: ignore[arg-type]
    assert result.stored
    async with db.transaction() as session:
        identity = (await session.execute(select(ChannelIdentity))).scalar_one()
        assert (identity.channel, identity.external_id, identity.display_name) == (
            "messenger",
            "psid-1",
            "Alice",
        )
        assert identity.last_inbound_at is not None
        message = (await session.execute(select(Message))).scalar_one()
        assert (message.text, message.direction, message.platform_message_id) == ("hi", "in", "m_1")
        job = (await session.execute(select(Job))).scalar_one()
        assert job.kind == PROCESS_JOB and job.payload["message_id"] == message.id
        assert job.queue_key == f"conversation:{result.conversation_id}"


async def test_redelivery_is_a_no_op(db: Database) -> None:
    for _ in range(5):
        async with db.transaction() as session:
            await ingest(session, _inbound("m_1"))
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 1
        assert await session.scalar(select(func.count()).select_from(Job)) == 1
        assert await session.scalar(select(func.count()).select_from(Client)) == 1


async def test_shared_phone_links_a_second_channel_to_the_same_client(db: Database) -> None:
    async with db.transaction() as session:
        first = await ingest(session, _inbound("m_1", phone="+1 (555) 010-2030"))
        second = await ingest(
            session,
            InboundMessage(
                channel=Channel.TELEGRAM,
                external_user_id="42",
                platform_message_id="u1",
                text="hello",
                phone="+15550102030",
            ),
        )
    assert first.client_id == second.client_id
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Client)) == 1
