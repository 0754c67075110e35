"""Takeover from Telegram: Kimmie opens an Instagram customer's chat, her replies reach Instagram
(through the outbox and the Meta sender, against the fake Graph API), the assistant stays silent
until /done, and answers again afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from bot.callbacks import ChatAction
from channels.meta.sender import MetaSenders
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import Conversation, Message
from core.types import Channel, InboundMessage
from tests.bot.conftest import CUSTOMER, KIMMIE, Harness, build_harness, make_settings
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.telegram_api import FakeTelegramAPI

IGSID = "17841400000000001"


@pytest.fixture
async def ig_harness(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI
) -> AsyncIterator[tuple[Harness, FakeGraphAPI]]:
    graph = FakeGraphAPI()
    base = await graph.start()
    settings = make_settings(database_url, instagram_access_token="IG_TOKEN", meta_graph_api_base=base)
    meta = MetaSenders(settings)
    await meta.start()
    h = await build_harness(db, settings, fake_tg, extra_senders=meta.senders)
    try:
        yield h, graph
    finally:
        await meta.close()
        await h.bot.session.close()
        await graph.stop()


async def _customer_writes(h: Harness, text: str) -> None:
    async with h.db.transaction() as session:
        await ingest(
            session,
            InboundMessage(
                channel=Channel.INSTAGRAM,
                external_user_id=IGSID,
                platform_message_id=f"mid.{h.next_id()}",
                text=text,
                display_name="Ann Lee",
            ),
        )
    await h.run_jobs()


async def test_kimmie_replies_on_instagram_and_the_assistant_waits_for_done(
    ig_harness: tuple[Harness, FakeGraphAPI],
) -> None:
    h, graph = ig_harness
    await _customer_writes(h, "Can Kimmie check Bella's matted ears?")
    async with h.db.transaction() as session:
        conversation = (await session.execute(select(Conversation))).scalar_one()
    assistant_sends = len(graph.sent)

    await h.feed(h.callback(KIMMIE, ChatAction(action="open", conversation_id=conversation.id).pack()))
    shown = [c.text for c in h.fake.calls_to("sendMessage") if c.chat_id == KIMMIE]
    assert any("matted ears" in t and "Instagram" in t for t in shown)
    async with h.db.transaction() as session:
        assert (await session.get_one(Conversation, conversation.id)).human_takeover

    await h.feed(h.message(KIMMIE, "Hi Ann, it's Kimmie — send me a photo of the ears?"))
    assert h.fake.last("sendMessage").text == "✓ sent"
    await h.run_jobs()
    assert graph.sent[-1]["recipient"] == {"id": IGSID}
    assert graph.sent[-1]["message"]["text"] == "Hi Ann, it's Kimmie — send me a photo of the ears?"
    async with h.db.transaction() as session:
        row = (await session.execute(select(Message).where(Message.author == "kimmie"))).scalar_one()
    assert row.channel == "instagram" and row.delivery_status == "sent"

    sends_before = len(graph.sent)
    await _customer_writes(h, "Sure, one sec")
    assert len(graph.sent) == sends_before  # the assistant stays silent while Kimmie has the chat

    await h.feed(h.message(KIMMIE, "/done"))
    assert "Handed back" in h.fake.last("sendMessage").text
    async with h.db.transaction() as session:
        assert not (await session.get_one(Conversation, conversation.id)).human_takeover
    await _customer_writes(h, "What are your prices?")
    assert len(graph.sent) > sends_before  # the assistant answers again
    assert assistant_sends >= 1


async def test_no_typing_indicator_while_kimmie_holds_a_telegram_chat(harness: Harness) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    await h.feed(h.callback(KIMMIE, ChatAction(action="open", conversation_id=conversation_id).pack()))
    await h.feed(h.message(CUSTOMER, "Are you there?"))
    assert not h.fake.calls_to("sendChatAction")
    await h.feed(h.message(KIMMIE, "/done"))
    await h.feed(h.message(CUSTOMER, "Hello?"))
    assert h.fake.last("sendChatAction").chat_id == CUSTOMER


async def test_kimmies_text_outside_a_chat_is_not_sent_to_anyone(harness: Harness) -> None:
    h = harness
    await h.customer_with_pet()
    await h.feed(h.message(KIMMIE, "hello?"))
    await h.run_jobs()
    assert not [c for c in h.fake.calls_to("sendMessage") if c.chat_id == CUSTOMER]
    assert "Open chat" in h.fake.last("sendMessage").text


async def test_reply_mode_survives_a_restart_with_redis_fsm_storage(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI
) -> None:
    import uuid

    from aiogram.fsm.storage.base import DefaultKeyBuilder
    from aiogram.fsm.storage.redis import RedisStorage
    from redis.asyncio import Redis

    from bot.setup import build_dispatcher

    prefix = f"cheshire-test-{uuid.uuid4().hex[:8]}"

    def storage() -> RedisStorage:
        return RedisStorage(
            Redis.from_url("redis://127.0.0.1:6379/0"), key_builder=DefaultKeyBuilder(prefix=prefix)
        )

    h = await build_harness(db, make_settings(database_url), fake_tg)
    first = storage()
    h.dp = build_dispatcher(db=db, settings=h.settings, booking=h.booking, sender=h.sender, fsm_storage=first)
    try:
        _, _, conversation_id = await h.customer_with_pet()
        await h.feed(h.callback(KIMMIE, ChatAction(action="open", conversation_id=conversation_id).pack()))
        await first.close()
        # "Restart": a new dispatcher and a new Redis connection; the reply mode is still there.
        second = storage()
        h.dp = build_dispatcher(
            db=db, settings=h.settings, booking=h.booking, sender=h.sender, fsm_storage=second
        )
        await h.feed(h.message(KIMMIE, "Back in a minute, Ann!"))
        await h.run_jobs()
        assert [c.text for c in h.fake.calls_to("sendMessage") if c.chat_id == CUSTOMER] == [
            "Back in a minute, Ann!"
        ]
        await h.feed(h.message(KIMMIE, "/done"))
        await second.redis.delete(*[k async for k in second.redis.scan_iter(f"{prefix}:*")] or ["-"])
        await second.close()
    finally:
        await h.bot.session.close()
