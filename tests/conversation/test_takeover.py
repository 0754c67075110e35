"""Kimmie takes a chat over, replies as herself, and hands it back."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.conversation.ingest import ingest
from core.conversation.takeover import (
    ConversationNotFoundError,
    hand_back,
    recent_messages,
    release_if_idle,
    staff_reply,
    take_over,
    takeover_active,
)
from core.db.database import Database
from core.db.models import Conversation, Job, Message, utcnow
from core.types import Channel, InboundMessage


async def _conversation_id(db: Database, *texts: str) -> int:
    conversation_id = 0
    async with db.transaction() as session:
        for n, text in enumerate(texts):
            result = await ingest(
                session,
                InboundMessage(
                    channel=Channel.MESSENGER,
                    external_user_id="psid-1",
                    platform_message_id=f"m_{n}",
                    text=text,
                ),
            )
            conversation_id = result.conversation_id
    return conversation_id


async def test_take_over_then_hand_back(db: Database) -> None:
    conversation_id = await _conversation_id(db, "hi")
    async with db.transaction() as session:
        await take_over(session, conversation_id)
    async with db.transaction() as session:
        conversation = await session.get_one(Conversation, conversation_id)
        assert conversation.human_takeover and conversation.takeover_at is not None
        assert takeover_active(conversation, idle_hours=12)
        await hand_back(session, conversation_id)
    async with db.transaction() as session:
        conversation = await session.get_one(Conversation, conversation_id)
        assert not conversation.human_takeover and conversation.takeover_at is None


async def test_staff_reply_queues_a_kimmie_message_and_holds_the_chat(db: Database) -> None:
    conversation_id = await _conversation_id(db, "hi")
    async with db.transaction() as session:
        message_id = await staff_reply(session, conversation_id, "Hi, it's Kimmie!")
    async with db.transaction() as session:
        row = await session.get_one(Message, message_id)
        assert (row.author, row.direction, row.text, row.delivery_status) == (
            "kimmie",
            "out",
            "Hi, it's Kimmie!",
            "pending",
        )
        jobs = (await session.execute(select(Job).where(Job.kind == "deliver_message"))).scalars().all()
        assert [j.payload["message_id"] for j in jobs] == [message_id]
        conversation = await session.get_one(Conversation, conversation_id)
        assert conversation.human_takeover


async def test_recent_messages_oldest_first_and_limited(db: Database) -> None:
    conversation_id = await _conversation_id(db, "one", "two", "three")
    async with db.transaction() as session:
        await staff_reply(session, conversation_id, "four")
        messages = await recent_messages(session, conversation_id, limit=3)
    assert [m.text for m in messages] == ["two", "three", "four"]


async def test_idle_takeover_is_released(db: Database) -> None:
    conversation_id = await _conversation_id(db, "hi")
    async with db.transaction() as session:
        await take_over(session, conversation_id)
        conversation = await session.get_one(Conversation, conversation_id)
        later = utcnow() + timedelta(hours=13)
        assert not takeover_active(conversation, idle_hours=12, now=later)
        assert not release_if_idle(conversation, idle_hours=12)  # not idle yet
        assert release_if_idle(conversation, idle_hours=12, now=later)
        assert not conversation.human_takeover


async def test_unknown_conversation_is_a_clear_error(db: Database) -> None:
    async with db.transaction() as session:
        with pytest.raises(ConversationNotFoundError):
            await take_over(session, 999)
