"""The deliver_message job: idempotent sends, retry hints, the 24-hour window, fallbacks to another
channel, alerts to Kimmie, dead messages. Meta is the fake Graph API server; the Telegram route is a
recording sender at our own port (ChannelSender), as ENG-E's adapter is tested on its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from channels.meta.sender import MetaSenders
from channels.web.sender import WebSender
from core.alerts import NOTIFY_ADMIN_JOB
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import AdminAlert, ChannelIdentity, Job, Message, utcnow
from core.delivery import Delivery
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater
from core.outbox import DELIVER_JOB, queue_outbound
from core.ports import ChannelCapabilities, ChannelSender, PartSent, SendResult
from core.types import Author, Channel, InboundMessage, OutboundMessage, QuickReply, Recipient
from tests.channels.conftest import make_settings
from tests.fakes.graph_api import FakeGraphAPI


class RecordingSender:
    """A Telegram-like route: accepts everything (as one part) and remembers it."""

    capabilities = ChannelCapabilities()
    credentials_fault_key: str | None = None

    def __init__(self) -> None:
        self.sent: list[tuple[Recipient, OutboundMessage]] = []

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult:
        if resume_from >= 1:
            return SendResult(platform_message_id=None)
        self.sent.append((recipient, message))
        if on_part_sent is not None:
            await on_part_sent(0, str(len(self.sent)))
        return SendResult(platform_message_id=str(len(self.sent)))


@pytest.fixture
async def meta(graph: FakeGraphAPI, database_url: str) -> AsyncIterator[MetaSenders]:
    base = await graph.start()
    senders = MetaSenders(make_settings(database_url, meta_graph_api_base=base))
    await senders.start()
    yield senders
    await senders.close()


@pytest.fixture
def telegram() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def delivery(db: Database, meta: MetaSenders, telegram: RecordingSender, database_url: str) -> Delivery:
    senders: dict[str, ChannelSender] = {**meta.senders, "telegram": telegram, "web": WebSender()}
    return Delivery(db=db, senders=senders, settings=make_settings(database_url))


async def customer_writes(
    db: Database,
    channel: Channel,
    external_id: str,
    *,
    ago: timedelta = timedelta(minutes=5),
    phone: str | None = None,
) -> int:
    """The customer's inbound message; returns the conversation id."""
    async with db.transaction() as session:
        result = await ingest(
            session,
            InboundMessage(
                channel=channel,
                external_user_id=external_id,
                platform_message_id=uuid.uuid4().hex,
                text="hello",
                sent_at=utcnow() - ago,
                phone=phone,
            ),
        )
    return result.conversation_id


async def reply(
    db: Database,
    conversation_id: int,
    channel: str,
    text: str = "We have Saturday 10:00.",
    author: Author = Author.ASSISTANT,
) -> int:
    async with db.transaction() as session:
        message_id = await queue_outbound(
            session,
            conversation_id=conversation_id,
            channel=channel,
            message=OutboundMessage(text=text, quick_replies=(QuickReply("Book it", "BOOK"),)),
            author=author,
        )
    return message_id


async def job_for(db: Database, message_id: int, *, attempts: int = 1) -> ClaimedJob:
    async with db.transaction() as session:
        job = (
            await session.execute(
                select(Job).where(
                    Job.kind == DELIVER_JOB, Job.payload["message_id"].as_integer() == message_id
                )
            )
        ).scalar_one()
    return ClaimedJob(job.id, job.kind, job.payload, attempts, job.max_attempts, job.idempotency_key)


async def message(db: Database, message_id: int) -> Message:
    async with db.transaction() as session:
        return await session.get_one(Message, message_id)


async def admin_notes(db: Database) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        jobs = (
            await session.execute(select(Job).where(Job.kind == NOTIFY_ADMIN_JOB).order_by(Job.id))
        ).scalars()
        return [job.payload for job in jobs]


async def test_sent_once_even_when_the_job_runs_again(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-1")
    message_id = await reply(db, conversation, "messenger")
    job = await job_for(db, message_id)
    await delivery.handle(job)
    await delivery.handle(job)  # a retried job after the platform accepted: no second send
    assert graph.texts() == ["We have Saturday 10:00."]
    assert graph.sent[0]["message"]["quick_replies"][0]["payload"] == "BOOK"
    row = await message(db, message_id)
    assert (row.delivery_status, row.platform_message_id, row.delivered_via) == (
        "sent",
        "m_out_1",
        "messenger",
    )


async def test_throttled_then_sent(db: Database, delivery: Delivery, graph: FakeGraphAPI) -> None:
    conversation = await customer_writes(db, Channel.INSTAGRAM, "igsid-1")
    message_id = await reply(db, conversation, "instagram")
    graph.fail_next(4, None, status=429, retry_after="12")
    with pytest.raises(RetryLater) as caught:
        await delivery.handle(await job_for(db, message_id))
    assert caught.value.delay_s == 12.0  # the platform's hint is honoured
    assert (await message(db, message_id)).delivery_status == "pending"
    await delivery.handle(await job_for(db, message_id, attempts=2))
    assert graph.texts() == ["We have Saturday 10:00."]
    assert (await message(db, message_id)).delivery_status == "sent"


async def test_window_closed_falls_back_to_telegram(
    db: Database, delivery: Delivery, graph: FakeGraphAPI, telegram: RecordingSender
) -> None:
    await customer_writes(db, Channel.TELEGRAM, "4242", ago=timedelta(days=3), phone="+15550100")
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-2", phone="+15550100")
    message_id = await reply(db, conversation, "messenger")
    graph.fail_next(10, 2018278)
    await delivery.handle(await job_for(db, message_id))
    assert graph.sent == []
    assert [(r.channel, r.external_id, m.text) for r, m in telegram.sent] == [
        (Channel.TELEGRAM, "4242", "We have Saturday 10:00.")
    ]
    row = await message(db, message_id)
    assert (row.delivery_status, row.delivered_via) == ("sent", "telegram")


async def test_automated_message_outside_24h_never_calls_meta(
    db: Database, delivery: Delivery, graph: FakeGraphAPI, telegram: RecordingSender
) -> None:
    conversation = await customer_writes(db, Channel.INSTAGRAM, "igsid-2", ago=timedelta(hours=25))
    message_id = await reply(db, conversation, "instagram", "Reminder: Biscuit's groom is tomorrow at 10:00")
    await delivery.handle(await job_for(db, message_id))
    assert graph.calls == 0
    assert telegram.sent == []
    row = await message(db, message_id)
    assert row.delivery_status == "dead"
    assert "24-hour" in (row.delivery_error or "")
    notes = await admin_notes(db)
    assert len(notes) == 1 and notes[0]["type"] == "alert"
    assert "Reminder: Biscuit's groom" in notes[0]["text"]


async def test_kimmie_may_write_outside_the_window_and_meta_decides(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-3", ago=timedelta(hours=30))
    message_id = await reply(db, conversation, "messenger", "Hi, Kimmie here!", author=Author.KIMMIE)
    await delivery.handle(await job_for(db, message_id))
    assert graph.texts() == ["Hi, Kimmie here!"]


async def test_unreachable_marks_the_identity_and_tells_kimmie(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-4")
    message_id = await reply(db, conversation, "messenger")
    graph.fail_next(551)
    await delivery.handle(await job_for(db, message_id))
    async with db.transaction() as session:
        identity = (await session.execute(select(ChannelIdentity))).scalar_one()
    assert identity.unreachable_at is not None
    assert (await message(db, message_id)).delivery_status == "dead"
    assert len(await admin_notes(db)) == 1


async def test_web_is_never_a_fallback(db: Database, delivery: Delivery, graph: FakeGraphAPI) -> None:
    await customer_writes(db, Channel.WEB, "web-session-0001", phone="+15550111")
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-5", phone="+15550111")
    message_id = await reply(db, conversation, "messenger")
    graph.fail_next(10, 2018278)
    await delivery.handle(await job_for(db, message_id))
    row = await message(db, message_id)
    assert row.delivery_status == "dead"
    assert "web: cannot push" in (row.delivery_error or "")


async def test_token_error_alerts_kimmie_once_and_retries(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-6")
    first = await reply(db, conversation, "messenger", "one")
    second = await reply(db, conversation, "messenger", "two")
    graph.fail_next(190, 460, times=3)
    for message_id in (first, second, first):
        with pytest.raises(RetryLater):
            await delivery.handle(await job_for(db, message_id))
    async with db.transaction() as session:
        alerts = (await session.execute(select(AdminAlert))).scalars().all()
    assert [(a.fault_key, a.occurrences) for a in alerts] == [("meta:token", 3)]
    assert len(await admin_notes(db)) == 1
    assert (await message(db, first)).delivery_status == "pending"  # not lost: waits for a new token
    await delivery.handle(await job_for(db, first, attempts=4))
    assert graph.texts() == ["one"]
    async with db.transaction() as session:
        assert (await session.execute(select(AdminAlert.resolved_at))).scalar_one() is not None


async def test_permanent_error_is_dead_with_the_reason(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-7")
    message_id = await reply(db, conversation, "messenger")
    graph.fail_next(100)
    with pytest.raises(PermanentJobError):
        await delivery.handle(await job_for(db, message_id))
    row = await message(db, message_id)
    assert row.delivery_status == "dead"
    assert "code=100" in (row.delivery_error or "")


async def test_last_attempt_leaves_the_message_visibly_dead(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-8")
    message_id = await reply(db, conversation, "messenger")
    graph.fail_next(2, status=500)
    job = await job_for(db, message_id)
    with pytest.raises(RetryLater):
        await delivery.handle(
            ClaimedJob(job.id, job.kind, job.payload, job.max_attempts, job.max_attempts, None)
        )
    row = await message(db, message_id)
    assert row.delivery_status == "dead"
    assert "gave up after 8 attempts" in (row.delivery_error or "")


async def test_web_replies_are_simply_marked_sent(db: Database, delivery: Delivery) -> None:
    conversation = await customer_writes(db, Channel.WEB, "web-session-0002")
    message_id = await reply(db, conversation, "web")
    await delivery.handle(await job_for(db, message_id))
    row = await message(db, message_id)
    assert (row.delivery_status, row.delivered_via) == ("sent", "web")


async def test_worker_dead_job_listener_marks_message_dead(db: Database, database_url: str) -> None:
    from core.delivery import register_jobs
    from core.jobs.worker import JobRegistry, Worker, WorkerConfig

    class Exploding:
        capabilities = ChannelCapabilities()
        credentials_fault_key: str | None = None

        async def send(
            self,
            recipient: Recipient,
            message: OutboundMessage,
            *,
            resume_from: int = 0,
            on_part_sent: PartSent | None = None,
        ) -> SendResult:
            raise RuntimeError("bug in an adapter")

    registry = JobRegistry()
    register_jobs(registry, db=db, senders={"messenger": Exploding()}, settings=make_settings(database_url))
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-9")
    message_id = await reply(db, conversation, "messenger")
    async with db.transaction() as session:
        await session.execute(update(Job).where(Job.kind == DELIVER_JOB).values(max_attempts=1))
        await session.execute(update(Job).where(Job.kind != DELIVER_JOB).values(status="done"))
    worker = Worker(db, registry, WorkerConfig(concurrency=1))
    assert await worker.run_once() == 1
    row = await message(db, message_id)
    assert row.delivery_status == "dead"
    assert "bug in an adapter" in (row.delivery_error or "")
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Job).where(Job.status == "dead")) == 1
