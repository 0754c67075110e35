"""Inbound messages are stored once per platform id and queued for processing in order."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from core import customers
from core.conversation.ingest import PROCESS_JOB, GroupCommit, ingest, ingest_many
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Conversation, Job, Message
from core.types import Attachment, Channel, InboundMessage


def _inbound(
    mid: str,
    text: str = "hi",
    user: str = "psid-1",
    *,
    display_name: str | None = None,
    phone: str | None = None,
    sent_at: datetime | None = None,
) -> InboundMessage:
    return InboundMessage(
        channel=Channel.MESSENGER,
        external_user_id=user,
        platform_message_id=mid,
        text=text,
        display_name=display_name,
        phone=phone,
        sent_at=sent_at,
    )


async def test_first_message_creates_client_identity_message_and_job(db: Database) -> None:
    async with db.transaction() as session:
        result = await ingest(session, _inbound("m_1", display_name="Alice"))
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


async def test_a_batch_stores_each_message_once_in_arrival_order(db: Database) -> None:
    """Known and first-contact senders mixed, a mid repeated inside the batch and one already stored:
    one row per mid, results in input order, and one conversation's jobs in its messages' order."""
    async with db.transaction() as session:
        await ingest(session, _inbound("m_0", user="known"))
    batch = [
        _inbound("m_1", text="first", user="known"),
        _inbound("m_2", text="hello", user="new-a", display_name="Ann"),
        _inbound("m_3", text="second", user="known"),
        _inbound("m_2", text="hello", user="new-a"),  # Meta redelivered it inside the same POST
        _inbound("m_0", user="known"),  # stored before
        _inbound("m_4", text="third", user="known"),
    ]
    async with db.transaction() as session:
        results = await ingest_many(session, batch)
    assert [r.stored for r in results] == [True, True, True, False, False, True]
    assert results[0].conversation_id == results[2].conversation_id == results[5].conversation_id
    assert results[1].conversation_id != results[0].conversation_id
    async with db.transaction() as session:
        rows = (
            await session.execute(select(Message.conversation_id, Message.text).order_by(Message.id))
        ).all()
        known = [text for conversation_id, text in rows if conversation_id == results[0].conversation_id]
        assert known == ["hi", "first", "second", "third"]
        assert sorted(text for _c, text in rows) == ["first", "hello", "hi", "second", "third"]
        jobs = (await session.execute(select(Job).order_by(Job.id))).scalars().all()
        messages_by_id = {m.id: m.text for m in (await session.execute(select(Message))).scalars()}
        known_queue = f"conversation:{results[0].conversation_id}"
        in_queue_order = [messages_by_id[j.payload["message_id"]] for j in jobs if j.queue_key == known_queue]
        assert in_queue_order == ["hi", "first", "second", "third"]
        ann = (
            await session.execute(select(ChannelIdentity).where(ChannelIdentity.external_id == "new-a"))
        ).scalar_one()
        assert ann.display_name == "Ann" and ann.last_inbound_at is not None
        assert await session.scalar(select(func.count()).select_from(Client)) == 2


async def test_a_later_message_moves_the_window_forward_never_back(db: Database) -> None:
    early, late = datetime(2026, 11, 20, 9, tzinfo=UTC), datetime(2026, 11, 20, 10, tzinfo=UTC)
    async with db.transaction() as session:
        await ingest(session, _inbound("m_1", sent_at=late))
    async with db.transaction() as session:
        await ingest_many(session, [_inbound("m_2", sent_at=early)])  # delivered late by the platform
    async with db.transaction() as session:
        identity = (await session.execute(select(ChannelIdentity))).scalar_one()
        conversation = (await session.execute(select(Conversation))).scalar_one()
        assert identity.last_inbound_at == conversation.last_inbound_at == late


async def test_group_commit_answers_each_caller_and_isolates_a_bad_message(db: Database) -> None:
    writer = GroupCommit(db)
    bad = InboundMessage(
        channel=Channel.MESSENGER,
        external_user_id="psid-9",
        platform_message_id="m_bad",
        attachments=(Attachment(kind="image", url=object()),),  # type: ignore[arg-type]  # unserializable
    )
    calls = [writer.ingest([_inbound(f"m_{n}", user=f"psid-{n % 3}")]) for n in range(20)]
    calls.insert(7, writer.ingest([bad]))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[7], Exception) and "not JSON serializable" in str(outcomes[7])
    good = [o for i, o in enumerate(outcomes) if i != 7]
    assert all(isinstance(o, list) and o[0].stored for o in good)
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 20
        assert await session.scalar(select(func.count()).select_from(Job)) == 20
    # and the same messages again are all redeliveries
    again = await asyncio.gather(
        *(writer.ingest([_inbound(f"m_{n}", user=f"psid-{n % 3}")]) for n in range(20))
    )
    assert not any(r[0].stored for r in again)


async def test_ingest_is_a_foreground_write_until_its_commit_answers(db: Database) -> None:
    """The job workers step aside while it is in flight (core/db/foreground.py)."""
    writer = GroupCommit(db)
    call = asyncio.create_task(writer.ingest([_inbound("m_1")]))
    await asyncio.sleep(0)  # the call has handed its message to the group commit and waits
    assert db.foreground.busy
    [result] = await call
    assert result.stored
    assert not db.foreground.busy


async def test_two_writers_racing_on_a_first_contact_make_one_client(db: Database, database_url: str) -> None:
    """Two processes (two pools, two group commits) get a new customer's first two messages at once."""
    other = Database(database_url)
    try:
        first, second = await asyncio.gather(
            GroupCommit(db).ingest([_inbound("m_1", user="newcomer", display_name="Nina")]),
            GroupCommit(other).ingest([_inbound("m_2", user="newcomer")]),
        )
    finally:
        await other.dispose()
    assert first[0].stored and second[0].stored
    assert first[0].client_id == second[0].client_id
    assert first[0].conversation_id == second[0].conversation_id
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Client)) == 1
        assert await session.scalar(select(func.count()).select_from(ChannelIdentity)) == 1
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 1
        assert await session.scalar(select(func.count()).select_from(Job)) == 2


async def test_an_identity_without_a_conversation_gets_one(db: Database) -> None:
    async with db.transaction() as session:
        identity = await customers.get_or_create_identity(session, "messenger", "psid-1", display_name="Bo")
        client_id = identity.client_id
    async with db.transaction() as session:
        result = await ingest(session, _inbound("m_1"))
    assert result.stored and result.client_id == client_id
    async with db.transaction() as session:
        conversation = (await session.execute(select(Conversation))).scalar_one()
        assert conversation.id == result.conversation_id and conversation.client_id == client_id
        assert await session.scalar(select(func.count()).select_from(Client)) == 1


@pytest.mark.postgres_only
async def test_a_first_contact_lost_to_a_concurrent_writer_lands_on_the_winners_identity(
    db: Database, database_url: str
) -> None:
    """Another process holds an uncommitted first message of the same new customer: our statement
    waits on its identity row, loses the race, and its message must still be stored, under the
    winner's client, with no stray client left behind."""
    other = Database(database_url)
    try:
        async with db.transaction() as session:
            winner = await ingest(session, _inbound("m_1", user="newcomer", display_name="Nina"))
            xid = await session.scalar(text("SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text"))
            racing = asyncio.create_task(GroupCommit(other).ingest([_inbound("m_2", user="newcomer")]))
            await _until_someone_waits_for(db, str(xid))
        loser = (await racing)[0]
    finally:
        await other.dispose()
    assert loser.stored and loser.client_id == winner.client_id
    assert loser.conversation_id == winner.conversation_id
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Client)) == 1
        assert await session.scalar(select(func.count()).select_from(Message)) == 2


async def _until_someone_waits_for(db: Database, xid: str) -> None:
    """Until a backend waits for transaction `xid` to end (the racing insert on our identity row)."""
    query = text(
        "SELECT count(*) FROM pg_locks"
        " WHERE locktype = 'transactionid' AND NOT granted AND transactionid::text = :xid"
    )
    async with db.engine.connect() as conn:
        for _ in range(1000):
            if await conn.scalar(query, {"xid": xid}):
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the racing writer never waited on our uncommitted identity")


async def test_a_message_stored_unanswered_gets_no_assistant_turn(db: Database) -> None:
    """`answer=False` (a flooding sender's excess): stored and visible, no process_message job."""
    async with db.transaction() as session:
        results = await ingest_many(
            session,
            [_inbound("m_1", text="hello"), replace(_inbound("m_2", text="spam"), answer=False)],
        )
    assert [r.stored for r in results] == [True, True]
    async with db.transaction() as session:
        texts = (await session.execute(select(Message.text).order_by(Message.id))).scalars().all()
        jobs = (await session.execute(select(Job.payload))).scalars().all()
    assert texts == ["hello", "spam"]
    assert [job["message_id"] for job in jobs] == [results[0].message_id]
