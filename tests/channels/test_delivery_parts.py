"""Multi-part replies through the deliver_message job: each part reaches the person once, across
throttling, a lost progress write, a worker restart and a fallback to another channel.

Meta is the fake Graph API server and Telegram the fake Bot API server (the real aiogram `Bot`). A
"restart" is a new HTTP session, new senders and a new `Delivery`: only the database carries over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from bot.sender import SendLimiter, TelegramSender
from channels.meta.sender import MetaSenders
from core.db.database import Database
from core.db.models import ChannelIdentity
from core.delivery import Delivery
from core.jobs.queue import RetryLater
from core.ports import ChannelSender
from core.settings import Settings
from core.types import Author, Channel
from tests.channels.conftest import make_settings
from tests.channels.test_delivery import customer_writes, job_for, message, reply
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.telegram_api import FakeTelegramAPI

# Three Messenger parts (2,000-character limit, cut at the blank lines); Telegram (4,096) makes two.
# Instagram's limit is 1,000 bytes: three 900-character paragraphs are three parts there.
PART_A, PART_B, PART_C = "A" * 1500, "B" * 1500, "C" * 1500
LONG_REPLY = f"{PART_A}\n\n{PART_B}\n\n{PART_C}"
TOKEN = "123456:TEST-token"


@pytest.fixture
async def settings_meta(graph: FakeGraphAPI, database_url: str) -> Settings:
    return make_settings(database_url, meta_graph_api_base=await graph.start())


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@asynccontextmanager
async def process(
    db: Database, settings: Settings, fake_tg: FakeTelegramAPI | None = None
) -> AsyncIterator[Delivery]:
    """One worker process's delivery: its own HTTP sessions, senders and `Delivery`."""
    meta = MetaSenders(settings)
    await meta.start()
    senders: dict[str, ChannelSender] = dict(meta.senders)
    bot = None
    if fake_tg is not None:
        bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake_tg.base_url)))
        wide = SendLimiter(global_rate=1000, global_burst=1000, chat_rate=1000, chat_burst=1000)
        senders["telegram"] = TelegramSender(bot, limiter=wide)
    try:
        yield Delivery(db=db, senders=senders, settings=settings)
    finally:
        await meta.close()
        if bot is not None:
            await bot.session.close()


@asynccontextmanager
async def failing_message_update(db: Database, condition: str) -> AsyncIterator[None]:
    """Make the database refuse an UPDATE of a message row matching `condition` (on NEW): the write
    after the platform accepted something is lost, as when a worker dies there."""
    if db.dialect == "postgresql":
        ddl = [
            "CREATE FUNCTION test_refuse_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the database went away'; END $$",
            f"CREATE TRIGGER test_refuse_write BEFORE UPDATE ON message FOR EACH ROW WHEN ({condition}) "
            "EXECUTE FUNCTION test_refuse_write()",
        ]
        drop = ["DROP TRIGGER test_refuse_write ON message", "DROP FUNCTION test_refuse_write()"]
    else:
        ddl = [
            f"CREATE TRIGGER test_refuse_write BEFORE UPDATE ON message FOR EACH ROW WHEN {condition} "
            "BEGIN SELECT RAISE(ABORT, 'the database went away'); END"
        ]
        drop = ["DROP TRIGGER test_refuse_write"]
    async with db.transaction() as session:
        for statement in ddl:
            await session.execute(text(statement))
    try:
        yield
    finally:
        async with db.transaction() as session:
            for statement in drop:
                await session.execute(text(statement))


async def test_part_two_throttled_then_retried_by_another_worker_sends_each_part_once(
    db: Database, graph: FakeGraphAPI, settings_meta: Settings
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-20")
    message_id = await reply(db, conversation, "messenger", LONG_REPLY)
    graph.fail_next(613, after=1)  # Meta throttles part 2
    async with process(db, settings_meta) as delivery:
        with pytest.raises(RetryLater):
            await delivery.handle(await job_for(db, message_id))
    row = await message(db, message_id)
    assert (row.delivery_status, row.parts_sent) == ("pending", 1)

    async with process(db, settings_meta) as delivery:  # the retry runs in a restarted worker
        await delivery.handle(await job_for(db, message_id, attempts=2))
        await delivery.handle(await job_for(db, message_id, attempts=3))  # run again: a no-op

    assert graph.texts() == [PART_A, PART_B, PART_C]
    assert graph.calls == 4  # part 2 was refused once
    assert [m["message"].get("quick_replies", [{}])[0].get("payload") for m in graph.sent] == [
        None,
        None,
        "BOOK",
    ]
    row = await message(db, message_id)
    assert (row.delivery_status, row.delivered_via, row.parts_sent) == ("sent", "messenger", 3)


async def test_a_worker_dying_after_part_two_was_accepted_never_resends_part_one(
    db: Database, graph: FakeGraphAPI, settings_meta: Settings
) -> None:
    conversation = await customer_writes(db, Channel.INSTAGRAM, "igsid-20")
    message_id = await reply(db, conversation, "instagram", "\n\n".join(("x" * 900, "y" * 900, "z" * 900)))
    async with failing_message_update(db, "NEW.parts_sent = 2"), process(db, settings_meta) as delivery:
        with pytest.raises(DBAPIError):
            await delivery.handle(await job_for(db, message_id))
    assert (await message(db, message_id)).parts_sent == 1

    async with process(db, settings_meta) as delivery:
        await delivery.handle(await job_for(db, message_id, attempts=2))

    # Part 1 was recorded: never again. Part 2's record was lost, so it goes once more (at least
    # once); part 3 follows.
    assert graph.texts() == ["x" * 900, "y" * 900, "y" * 900, "z" * 900]
    assert (await message(db, message_id)).delivery_status == "sent"


async def test_all_parts_accepted_but_not_marked_sent_sends_nothing_again(
    db: Database, graph: FakeGraphAPI, settings_meta: Settings
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-21")
    message_id = await reply(db, conversation, "messenger", LONG_REPLY)
    async with (
        failing_message_update(db, "NEW.delivery_status = 'sent'"),
        process(db, settings_meta) as delivery,
    ):
        with pytest.raises(DBAPIError):
            await delivery.handle(await job_for(db, message_id))

    async with process(db, settings_meta) as delivery:
        await delivery.handle(await job_for(db, message_id, attempts=2))

    assert graph.texts() == [PART_A, PART_B, PART_C]
    row = await message(db, message_id)
    assert (row.delivery_status, row.parts_sent) == ("sent", 3)


async def test_fallback_starts_at_part_one_and_a_retry_finishes_there(
    db: Database, graph: FakeGraphAPI, fake_tg: FakeTelegramAPI, settings_meta: Settings
) -> None:
    await customer_writes(db, Channel.TELEGRAM, "4242", ago=timedelta(days=3), phone="+15550123")
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-22", phone="+15550123")
    # Kimmie's message: Meta decides about the window, and closes it after part 1.
    message_id = await reply(db, conversation, "messenger", LONG_REPLY, author=Author.KIMMIE)
    graph.fail_next(10, 2018278, after=1)
    fake_tg.fail_next("sendMessage", status=429, retry_after=5, after=1)  # Telegram throttles part 2
    async with process(db, settings_meta, fake_tg) as delivery:
        with pytest.raises(RetryLater) as caught:
            await delivery.handle(await job_for(db, message_id))
    assert caught.value.delay_s == 5.0
    async with db.transaction() as session:
        telegram_identity = (
            await session.execute(select(ChannelIdentity.id).where(ChannelIdentity.channel == "telegram"))
        ).scalar_one()
    row = await message(db, message_id)
    assert (row.delivery_status, row.parts_sent, row.parts_identity_id) == ("pending", 1, telegram_identity)

    async with process(db, settings_meta, fake_tg) as delivery:
        await delivery.handle(await job_for(db, message_id, attempts=2))

    # Messenger showed part 1 once and is not tried again; Telegram got the whole reply from its own
    # first part (cut at its own limit), each part once.
    assert graph.texts() == [PART_A]
    assert graph.calls == 2
    delivered = fake_tg.delivered("sendMessage")
    assert [(c.chat_id, c.text) for c in delivered] == [(4242, f"{PART_A}\n\n{PART_B}"), (4242, PART_C)]
    assert delivered[-1].buttons() == [("Book it", "BOOK")]
    assert len(fake_tg.calls_to("sendMessage")) == 3  # part 2 refused once
    row = await message(db, message_id)
    assert (row.delivery_status, row.delivered_via, row.parts_sent) == ("sent", "telegram", 2)
