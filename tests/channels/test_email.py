"""The e-mail channel: EmailSender against a real SMTP server in-process (aiosmtpd), and an Instagram
customer whose 24-hour window has closed getting a reminder by e-mail after save_contact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from channels.email.sender import EmailSender
from channels.meta.sender import MetaSenders
from core import customers
from core.alerts import NOTIFY_ADMIN_JOB
from core.booking.catalog import load_catalog
from core.booking.reach_jobs import ReminderCheckPayload
from core.booking.service import DefaultBookingService
from core.conversation.ingest import ingest
from core.conversation.tools import ToolBox, ToolContext
from core.db.database import Database
from core.db.models import Appointment, ChannelIdentity, Job, Message, utcnow
from core.delivery import Delivery
from core.jobs.queue import ClaimedJob
from core.llm.types import ToolCall
from core.outbox import DELIVER_JOB
from core.ports import (
    ChannelCredentialsError,
    ChannelSender,
    PermanentDeliveryError,
    RecipientUnreachableError,
    RetryableDeliveryError,
)
from core.settings import Settings
from core.types import Channel, InboundMessage, OutboundMessage, QuickReply, Recipient
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.smtp_server import FakeSMTPServer, free_port

# The fake allows AUTH on a plain connection (no test certificate); aiosmtpd warns about exactly that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

LOGIN = ("cheshire@lookingglass.test", "s3cret-pass-word")
ANN = Recipient(channel=Channel.EMAIL, external_id="ann@example.org", identity_id=1)


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer(login=LOGIN)
    server.start()
    yield server
    server.stop()


def email_settings(database_url: str, smtp_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "smtp_url": smtp_url,
        "smtp_timeout_s": 5.0,
        "business_phone": "(555) 010-2030",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_a_mail_arrives_with_sender_subject_options_and_links(
    smtp: FakeSMTPServer, database_url: str
) -> None:
    sender = EmailSender(email_settings(database_url, smtp.url()))
    message = OutboundMessage(
        text="Reminder: Biscuit's bath is tomorrow, Fri, Mar 5 at 9:00 AM.\nSee you then!",
        quick_replies=(QuickReply("✅ I'll be there", "APPT_OK:1"), QuickReply("🚫 Cancel", "APPT_CANCEL:1")),
        image_urls=("https://cdn.example.org/biscuit-after.jpg",),
    )
    result = await sender.send(ANN, message)

    [mail] = smtp.received
    assert mail.rcpt_tos == ["ann@example.org"] and mail.mail_from == LOGIN[0]
    assert mail.message["To"] == "ann@example.org"
    [author] = mail.message["From"].addresses
    assert (author.display_name, author.addr_spec) == ("Looking Glass Groomery", LOGIN[0])
    assert mail.message["Subject"] == (
        "Looking Glass Groomery: Reminder: Biscuit's bath is tomorrow, Fri, Mar 5 at 9:00 AM."
    )
    assert mail.message["Message-ID"] == result.platform_message_id
    body = mail.message.get_content().replace("\r\n", "\n")
    assert body.startswith("Reminder: Biscuit's bath is tomorrow, Fri, Mar 5 at 9:00 AM.\nSee you then!")
    assert "Options:\n- ✅ I'll be there\n- 🚫 Cancel" in body
    assert "APPT_OK" not in body  # payloads are for buttons, not people
    assert "Photos:\nhttps://cdn.example.org/biscuit-after.jpg" in body
    assert "Looking Glass Groomery · (555) 010-2030" in body


async def test_a_mail_already_accepted_is_not_sent_again(smtp: FakeSMTPServer, database_url: str) -> None:
    sender = EmailSender(email_settings(database_url, smtp.url()))
    parts: list[tuple[int, str | None]] = []

    async def part_sent(index: int, platform_id: str | None) -> None:
        parts.append((index, platform_id))

    first = await sender.send(ANN, OutboundMessage(text="Hi"), on_part_sent=part_sent)
    again = await sender.send(ANN, OutboundMessage(text="Hi"), resume_from=1, on_part_sent=part_sent)
    assert parts == [(0, first.platform_message_id)] and again.platform_message_id is None
    assert len(smtp.received) == 1


async def test_from_address_setting_wins(smtp: FakeSMTPServer, database_url: str) -> None:
    settings = email_settings(database_url, smtp.url(), smtp_from="hello@lookingglass.test")
    await EmailSender(settings).send(ANN, OutboundMessage(text="Hi"))
    [mail] = smtp.received
    assert mail.mail_from == "hello@lookingglass.test"
    assert mail.message["From"].addresses[0].addr_spec == "hello@lookingglass.test"


async def test_temporary_refusal_retries_permanent_refusal_means_unreachable(
    smtp: FakeSMTPServer, database_url: str
) -> None:
    sender = EmailSender(email_settings(database_url, smtp.url()))
    smtp.refuse["full@example.org"] = "452 4.2.2 Mailbox full"
    smtp.refuse["gone@example.org"] = "550 5.1.1 No such user here"
    with pytest.raises(RetryableDeliveryError, match="452"):
        await sender.send(Recipient(Channel.EMAIL, "full@example.org"), OutboundMessage(text="Hi"))
    with pytest.raises(RecipientUnreachableError, match="550"):
        await sender.send(Recipient(Channel.EMAIL, "gone@example.org"), OutboundMessage(text="Hi"))
    assert smtp.received == []


async def test_wrong_password_is_a_credentials_fault_never_echoing_it(
    smtp: FakeSMTPServer, database_url: str
) -> None:
    url = smtp.url(user=LOGIN[0], password="wrong-password-123")
    with pytest.raises(ChannelCredentialsError) as caught:
        await EmailSender(email_settings(database_url, url)).send(ANN, OutboundMessage(text="Hi"))
    assert "wrong-password-123" not in str(caught.value)
    assert smtp.received == []


async def test_no_server_listening_retries(database_url: str) -> None:
    url = f"smtp://127.0.0.1:{free_port()}"
    with pytest.raises(RetryableDeliveryError):
        await EmailSender(email_settings(database_url, url)).send(ANN, OutboundMessage(text="Hi"))


async def test_a_refused_sender_is_permanent(database_url: str) -> None:
    server = FakeSMTPServer()  # no login: the salon's relay trusts the host
    server.refuse_senders["hello@elsewhere.test"] = "553 5.7.1 Sender address rejected: not owned by user"
    server.start()
    try:
        settings = email_settings(database_url, server.url(), smtp_from="hello@elsewhere.test")
        with pytest.raises(PermanentDeliveryError, match="553"):
            await EmailSender(settings).send(ANN, OutboundMessage(text="Hi"))
    finally:
        server.stop()


# --- End to end: Instagram window closed → the reminder goes by e-mail ----------------------------

CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"
T0 = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)  # the booking clock: a quiet Monday


@dataclass
class Salon:
    db: Database
    booking: DefaultBookingService
    clock: list[datetime]
    delivery: Delivery
    graph: FakeGraphAPI


@pytest.fixture
async def salon(
    db: Database, database_url: str, graph: FakeGraphAPI, smtp: FakeSMTPServer
) -> AsyncIterator[Salon]:
    settings = email_settings(database_url, smtp.url(), meta_graph_api_base=await graph.start())
    settings = settings.model_copy(update={"instagram_access_token": SecretStr("IG_TOKEN")})
    async with db.transaction() as session:
        await load_catalog(session, CATALOG)
    clock = [T0]
    meta = MetaSenders(settings)
    await meta.start()
    senders: dict[str, ChannelSender] = {**meta.senders, "email": EmailSender(settings)}
    yield Salon(
        db,
        DefaultBookingService(settings, now=lambda: clock[0]),
        clock,
        Delivery(db=db, senders=senders, settings=settings),
        graph,
    )
    await meta.close()


async def instagram_customer_with_a_booking(salon: Salon, *, email: str) -> tuple[int, int]:
    """An Instagram customer who last wrote 30 hours ago (window closed), told the assistant an e-mail
    (the save_contact tool), and has a confirmed appointment. Returns (conversation id, booking id)."""
    async with salon.db.transaction() as session:
        inbound = await ingest(
            session,
            InboundMessage(
                channel=Channel.INSTAGRAM,
                external_user_id="igsid-ann",
                platform_message_id="ig-mid-1",
                text=f"Book Biscuit please, my email is {email}",
                sent_at=utcnow() - timedelta(hours=30),
                display_name="Ann Lee",
            ),
        )
        pet = await customers.save_pet(session, client_id=inbound.client_id, name="Biscuit", breed="cockapoo")
        tools = ToolBox(salon.booking, salon.booking.tz)
        ctx = ToolContext(inbound.conversation_id, inbound.client_id, "instagram")
        result = await tools.run(session, ctx, ToolCall("call_1", "save_contact", {"email": email}))
        assert not result.is_error, result.content
        [slot, *_] = await salon.booking.find_slots(
            session, service_code="bath_tidy", pet_ids=[pet.id], client_id=inbound.client_id
        )
        requested = await salon.booking.request_booking(
            session,
            client_id=inbound.client_id,
            service_code="bath_tidy",
            pet_ids=[pet.id],
            start=slot.start,
            source_channel=Channel.INSTAGRAM,
        )
    async with salon.db.transaction() as session:
        booked = await salon.booking.approve(session, appointment_id=requested.id)
    return inbound.conversation_id, booked.id


async def send_reminder(salon: Salon, booking_id: int) -> Message:
    async with salon.db.transaction() as session:
        start = (await salon.booking.get_booking(session, booking_id)).start
    salon.clock[0] = start - timedelta(hours=24)
    async with salon.db.transaction() as session:
        before = await session.scalar(select(func.max(Message.id))) or 0
        assert await salon.booking.send_reminder(session, appointment_id=booking_id)
        newest = select(Message).where(Message.id > before).order_by(Message.id.desc()).limit(1)
        return (await session.execute(newest)).scalar_one()


async def deliver(salon: Salon, message_id: int) -> Message:
    async with salon.db.transaction() as session:
        for_message = Job.payload["message_id"].as_integer() == message_id
        job = (await session.execute(select(Job).where(Job.kind == DELIVER_JOB, for_message))).scalar_one()
    await salon.delivery.handle(ClaimedJob(job.id, job.kind, job.payload, 1, job.max_attempts, None))
    async with salon.db.transaction() as session:
        return await session.get_one(Message, message_id)


async def test_a_closed_instagram_window_reminder_arrives_by_email(
    salon: Salon, smtp: FakeSMTPServer
) -> None:
    conversation_id, booking_id = await instagram_customer_with_a_booking(salon, email="Ann.Lee@Example.org")
    reminder = await send_reminder(salon, booking_id)
    assert reminder.conversation_id == conversation_id and reminder.channel == "instagram"

    sent = await deliver(salon, reminder.id)

    assert salon.graph.sent == []  # Meta was not even tried: the window is closed
    assert (sent.delivery_status, sent.delivered_via) == ("sent", "email")
    [mail] = smtp.received
    assert mail.rcpt_tos == ["ann.lee@example.org"]
    assert mail.message["Subject"].startswith("Looking Glass Groomery: Reminder")
    body = mail.message.get_content().replace("\r\n", "\n")
    assert body.startswith(reminder.text)
    assert "Options:\n- Confirm\n- Reschedule\n- Cancel" in body


async def test_a_bounced_address_is_marked_unreachable_and_kimmie_is_told(
    salon: Salon, smtp: FakeSMTPServer
) -> None:
    smtp.refuse["gone@example.org"] = "550 5.1.1 No such user here"
    _, booking_id = await instagram_customer_with_a_booking(salon, email="gone@example.org")
    reminder = await send_reminder(salon, booking_id)

    dead = await deliver(salon, reminder.id)

    assert dead.delivery_status == "dead" and "550" in (dead.delivery_error or "")
    async with salon.db.transaction() as session:
        email_identity = (
            await session.execute(select(ChannelIdentity).where(ChannelIdentity.channel == "email"))
        ).scalar_one()
        assert email_identity.unreachable_at is not None
        alerts = (await session.execute(select(Job).where(Job.kind == NOTIFY_ADMIN_JOB))).scalars().all()
    # A reminder is not alerted one by one: its check puts the visit on Kimmie's daily list.
    assert not any("could not deliver" in str(j.payload.get("text", "")) for j in alerts)
    async with salon.db.transaction() as session:
        [check] = (await session.execute(select(Job).where(Job.kind == "reminder_check"))).scalars().all()
        await salon.booking.watch.check(session, ReminderCheckPayload.load(check.payload))
    async with salon.db.transaction() as session:
        assert (await session.get_one(Appointment, booking_id)).reminder_undelivered_at is not None
