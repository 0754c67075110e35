"""The Telegram sender through the real deliver_message job: escaping, splitting, buttons, photos,
429 retry_after honoured (sent once, after the wait), a split reply resumed after its accepted parts
(also by a restarted process), 403 marks the customer unreachable."""

from __future__ import annotations

import html
from datetime import timedelta

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import select, update

from bot.sender import MAX_TEXT, TelegramSender, split_text
from core.db.models import ChannelIdentity, Job, Message, utcnow
from core.delivery import register_jobs as register_delivery_jobs
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.outbox import queue_outbound
from core.ports import ChannelSender
from core.types import OutboundMessage, QuickReply
from tests.bot.conftest import CUSTOMER, TOKEN, Harness, fast_limiter


async def _queue(h: Harness, conversation_id: int, message: OutboundMessage) -> int:
    async with h.db.transaction() as session:
        message_id = await queue_outbound(
            session, conversation_id=conversation_id, channel="telegram", message=message
        )
        return message_id


async def _message(h: Harness, message_id: int) -> Message:
    async with h.db.transaction() as session:
        return await session.get_one(Message, message_id)


def test_split_text_keeps_every_character_within_the_limit() -> None:
    text = ("word " * 2000).strip() + "\n" + "x" * 5000
    parts = split_text(text)
    assert all(0 < len(p) <= MAX_TEXT for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert split_text("short") == ["short"]


async def test_text_is_escaped_split_and_quick_replies_become_inline_buttons(harness: Harness) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    long_text = "<b>Bella & Max</b> " + "a" * 5000
    message_id = await _queue(
        h,
        conversation_id,
        OutboundMessage(
            text=long_text,
            quick_replies=(QuickReply("Book", "BOOK"), QuickReply("Prices", "PRICES")),
            image_urls=("https://example.test/bella.jpg",),
        ),
    )
    await h.run_jobs()

    photo = h.fake.last("sendPhoto")
    assert photo.data["photo"] == "https://example.test/bella.jpg" and photo.chat_id == CUSTOMER
    sends = h.fake.calls_to("sendMessage")
    assert len(sends) == 2
    assert (
        sends[0].text.startswith("&lt;b&gt;Bella &amp; Max&lt;/b&gt;")
        and sends[0].data["parse_mode"] == "HTML"
    )
    assert all(len(html.unescape(s.text)) <= MAX_TEXT for s in sends)  # Telegram counts parsed text
    assert sends[0].buttons() == [] and sends[1].buttons() == [("Book", "BOOK"), ("Prices", "PRICES")]
    row = await _message(h, message_id)
    assert row.delivery_status == "sent" and row.platform_message_id == str(3)


async def test_429_is_retried_after_retry_after_and_sent_once(harness: Harness) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    h.fake.fail_next("sendMessage", status=429, retry_after=7)
    message_id = await _queue(h, conversation_id, OutboundMessage(text="Your slot is confirmed"))
    before = utcnow()
    await h.run_jobs()

    assert len(h.fake.calls_to("sendMessage")) == 1  # the refused attempt
    assert (await _message(h, message_id)).delivery_status == "pending"
    async with h.db.transaction() as session:
        job = (await session.execute(select(Job).where(Job.kind == "deliver_message"))).scalar_one()
    assert job.status == "queued" and job.run_at >= before + timedelta(seconds=7)

    await h.run_jobs()  # not due yet: nothing happens
    assert len(h.fake.calls_to("sendMessage")) == 1

    async with h.db.transaction() as session:  # the wait is over
        await session.execute(update(Job).where(Job.id == job.id).values(run_at=utcnow()))
    await h.run_jobs()
    await h.run_jobs()
    sent = h.fake.calls_to("sendMessage")
    assert len(sent) == 2 and sent[1].text == "Your slot is confirmed"
    assert (await _message(h, message_id)).delivery_status == "sent"


async def test_a_split_message_interrupted_by_429_resends_only_the_rest(harness: Harness) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    h.fake.fail_next("sendMessage", status=429, retry_after=1, after=1)  # part 2 is throttled
    message_id = await _queue(h, conversation_id, OutboundMessage(text="A" * 4000 + "\n" + "B" * 4000))
    await h.run_jobs()
    async with h.db.transaction() as session:
        await session.execute(update(Job).where(Job.kind == "deliver_message").values(run_at=utcnow()))
    await h.run_jobs()

    texts = [c.text[0] for c in h.fake.calls_to("sendMessage")]
    assert texts == ["A", "B", "B"]  # A once; B refused once, then sent
    assert (await _message(h, message_id)).delivery_status == "sent"


async def test_a_reply_throttled_on_part_two_is_finished_by_a_restarted_process_without_repeats(
    harness: Harness,
) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    h.fake.fail_next("sendMessage", status=429, retry_after=5, after=1)  # part 2 of 3 is throttled
    text = "\n".join(("A" * 4000, "B" * 4000, "C" * 100))
    reply = OutboundMessage(text=text, quick_replies=(QuickReply("Book", "BOOK"),))
    message_id = await _queue(h, conversation_id, reply)
    await h.run_jobs()
    row = await _message(h, message_id)
    assert (row.delivery_status, row.parts_sent) == ("pending", 1)

    # A restart: a new Bot, sender and worker. Only the database remembers that part 1 went out.
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(h.fake.base_url)))
    registry = JobRegistry()
    senders: dict[str, ChannelSender] = {"telegram": TelegramSender(bot, limiter=fast_limiter())}
    register_delivery_jobs(registry, db=h.db, senders=senders, settings=h.settings)
    worker = Worker(h.db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.05, lease_s=30))
    async with h.db.transaction() as session:  # the retry_after wait is over
        await session.execute(update(Job).where(Job.kind == "deliver_message").values(run_at=utcnow()))
    try:
        assert await worker.run_once() == 1
    finally:
        await bot.session.close()

    delivered = h.fake.delivered("sendMessage")
    assert [(c.chat_id, c.text[0], len(c.text)) for c in delivered] == [
        (CUSTOMER, "A", 4000),
        (CUSTOMER, "B", 4000),
        (CUSTOMER, "C", 100),
    ]
    assert delivered[-1].buttons() == [("Book", "BOOK")]
    assert len(h.fake.calls_to("sendMessage")) == 4  # part 2 was refused once
    row = await _message(h, message_id)
    assert (row.delivery_status, row.parts_sent) == ("sent", 3)


async def test_403_marks_the_customer_unreachable_and_is_not_retried(harness: Harness) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    h.fake.fail_next("sendMessage", status=403)
    message_id = await _queue(h, conversation_id, OutboundMessage(text="Reminder: tomorrow 10:00"))
    await h.run_jobs()

    assert len([c for c in h.fake.calls_to("sendMessage") if c.chat_id == CUSTOMER]) == 1
    row = await _message(h, message_id)
    assert row.delivery_status == "dead"
    async with h.db.transaction() as session:
        identity = (await session.execute(select(ChannelIdentity))).scalar_one()
        deliver = (await session.execute(select(Job).where(Job.kind == "deliver_message"))).scalar_one()
    assert identity.unreachable_at is not None
    assert deliver.status in {"done", "dead"}
