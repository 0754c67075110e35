"""Reminders that arrive (issue 14, section 1): a booking by buttons from Messenger or the website asks
for a way to reach the customer later; the confirmation promises only what will reach them; the
reminder goes by e-mail past Meta's window, as a utility template with META_UTILITY_MESSAGES (on the
fake Graph API), counts on the website only once the widget fetched it; what cannot arrive reaches
Kimmie as one daily list. Real parts: the booking service, the engine's button flow, delivery, the
Meta sender against the fake Graph API, the e-mail sender against a real SMTP server (aiosmtpd), the
web chat's HTTP endpoint."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from channels.email.sender import EmailSender
from channels.meta.sender import MetaSenders
from channels.web.sender import WebSender
from cheshire.wiring import reach_policy
from core.alerts import NOTIFY_ADMIN_JOB
from core.booking.catalog import load_catalog
from core.booking.reach_jobs import REMINDER_CHECK_JOB, ReminderCheckPayload, ReminderDigestPayload
from core.booking.service import DefaultBookingService
from core.booking.texts import NO_REMINDER_ROUTE
from core.conversation.engine import ConversationEngine
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import Appointment, ChannelIdentity, Job, Message, Pet, Service
from core.delivery import Delivery
from core.jobs.queue import ClaimedJob, PermanentJobError
from core.notify.views import load_card
from core.outbox import DELIVER_JOB
from core.ports import ChannelSender
from core.settings import Settings
from core.types import Channel, InboundMessage
from tests.channels.conftest import build_app
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.smtp_server import FakeSMTPServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"
T0 = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)  # the booking clock: a quiet Monday
LOGIN = ("cheshire@lookingglass.test", "s3cret-pass-word")
_ids = itertools.count(1)


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer(login=LOGIN)
    server.start()
    yield server
    server.stop()


@dataclass
class Salon:
    db: Database
    settings: Settings
    booking: DefaultBookingService
    engine: ConversationEngine
    delivery: Delivery
    graph: FakeGraphAPI
    smtp: FakeSMTPServer
    clock: list[datetime]
    taps: int = 0

    # --- the customer ----------------------------------------------------------------------------
    async def say(
        self,
        text: str,
        *,
        payload: str | None = None,
        channel: Channel = Channel.MESSENGER,
        user: str = "psid-ann",
    ) -> Message:
        """One customer message through ingest and the engine; the last reply."""
        name = "Ann Lee" if channel is Channel.MESSENGER else None
        async with self.db.transaction() as session:
            result = await ingest(
                session,
                InboundMessage(
                    channel=channel,
                    external_user_id=user,
                    platform_message_id=f"m-{next(_ids)}",
                    text=text,
                    payload=payload,
                    display_name=name,
                ),
            )
        assert result.message_id is not None
        await self.engine.process(result.message_id, result.conversation_id)
        return (await self.replies(result.conversation_id))[-1]

    async def tap(self, last: Message, contains: str = "", *, index: int = 0, **kw: Any) -> Message:
        chosen = [q for q in last.quick_replies if contains in q["title"]][index]
        self.taps += 1
        return await self.say(chosen["title"], payload=chosen["payload"], **kw)

    async def replies(self, conversation_id: int) -> list[Message]:
        async with self.db.transaction() as session:
            rows = await session.execute(
                select(Message)
                .where(Message.conversation_id == conversation_id, Message.direction == "out")
                .order_by(Message.id)
            )
            return list(rows.scalars())

    async def book_by_buttons(
        self, *, channel: Channel = Channel.MESSENGER, user: str = "psid-ann"
    ) -> Message:
        """Book → service → size → coat → day → time (a new customer): the reply after the time."""
        services = await self.tap(
            await self.say("hi", channel=channel, user=user), "Book", channel=channel, user=user
        )
        sizes = await self.tap(services, "Full groom", channel=channel, user=user)
        coats = await self.tap(sizes, "Medium", channel=channel, user=user)
        days = await self.tap(coats, "Curly", channel=channel, user=user)
        times = await self.tap(days, index=2, channel=channel, user=user)
        return await self.tap(times, index=0, channel=channel, user=user)

    # --- Kimmie and time -------------------------------------------------------------------------
    async def approve_latest(self) -> Appointment:
        async with self.db.transaction() as session:
            appt = (
                (await session.execute(select(Appointment).order_by(Appointment.id.desc()))).scalars().first()
            )
            assert appt is not None and appt.status == "requested"
            await self.booking.approve(session, appointment_id=appt.id)
            return appt

    async def reminder_time(self, appt: Appointment, *, last_wrote_hours_ago: float = 30) -> Message:
        """The reminder job, when due: the customer's last message was `last_wrote_hours_ago` ago."""
        async with self.db.transaction() as session:
            await session.execute(
                update(ChannelIdentity).values(
                    last_inbound_at=datetime.now(UTC) - timedelta(hours=last_wrote_hours_ago)
                )
            )
        self.clock[0] = appt.start_at - timedelta(hours=24)
        async with self.db.transaction() as session:
            assert await self.booking.send_reminder(session, appointment_id=appt.id)
        [reminder] = await self.messages(purpose="reminder")
        return reminder

    async def messages(self, *, purpose: str | None = None) -> list[Message]:
        async with self.db.transaction() as session:
            query = select(Message).where(Message.direction == "out").order_by(Message.id)
            if purpose:
                query = query.where(Message.purpose == purpose)
            return list((await session.execute(query)).scalars())

    async def deliver(self, message_id: int) -> Message:
        async with self.db.transaction() as session:
            for_message = Job.payload["message_id"].as_integer() == message_id
            job = (
                await session.execute(select(Job).where(Job.kind == DELIVER_JOB, for_message))
            ).scalar_one()
        await self.delivery.handle(ClaimedJob(job.id, job.kind, job.payload, 1, job.max_attempts, None))
        async with self.db.transaction() as session:
            return await session.get_one(Message, message_id)

    async def check(self) -> None:
        """Run the reminder checks queued so far (as the worker would once due)."""
        async with self.db.transaction() as session:
            jobs = (
                (
                    await session.execute(
                        select(Job).where(Job.kind == REMINDER_CHECK_JOB, Job.status == "queued")
                    )
                )
                .scalars()
                .all()
            )
            for job in jobs:
                job.status = "done"
        for job in jobs:
            async with self.db.transaction() as session:
                await self.booking.watch.check(session, ReminderCheckPayload.load(job.payload))

    async def daily_list(self) -> list[int]:
        day = self.clock[0].astimezone(self.booking.tz).date()
        async with self.db.transaction() as session:
            return await self.booking.watch.digest(session, ReminderDigestPayload(day=day))

    async def kimmie_jobs(self) -> list[dict[str, Any]]:
        async with self.db.transaction() as session:
            rows = await session.execute(select(Job).where(Job.kind == NOTIFY_ADMIN_JOB).order_by(Job.id))
            return [j.payload for j in rows.scalars()]

    async def appointment(self, appointment_id: int) -> Appointment:
        async with self.db.transaction() as session:
            return await session.get_one(Appointment, appointment_id)


SalonFactory = Callable[..., Any]


@pytest.fixture
async def make_salon(
    db: Database, database_url: str, graph: FakeGraphAPI, smtp: FakeSMTPServer
) -> AsyncIterator[SalonFactory]:
    async with db.transaction() as session:
        await load_catalog(session, CATALOG)
    started: list[MetaSenders] = []
    graph_base = await graph.start()

    async def make(**overrides: Any) -> Salon:
        values: dict[str, Any] = {
            "database_url": database_url,
            "environment": "test",
            "smtp_url": smtp.url(),
            "smtp_timeout_s": 5.0,
            "meta_graph_api_base": graph_base,
            "facebook_page_access_token": SecretStr("PAGE_TOKEN"),
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        clock = [T0]
        booking = DefaultBookingService(settings, now=lambda: clock[0], reach=reach_policy(settings))
        meta = MetaSenders(settings)
        await meta.start()
        started.append(meta)
        senders: dict[str, ChannelSender] = {
            **meta.senders,
            "web": WebSender(),
            "email": EmailSender(settings),
        }
        engine = ConversationEngine(
            db=db, settings=settings, booking=booking, model=None, now=lambda: clock[0], reach=booking.reach
        )
        return Salon(
            db,
            settings,
            booking,
            engine,
            Delivery(db=db, senders=senders, settings=settings),
            graph,
            smtp,
            clock,
        )

    yield make
    for meta in started:
        await meta.close()


# --- Messenger -------------------------------------------------------------------------------------


async def test_messenger_booking_asks_a_contact_and_the_reminder_arrives_30h_later_by_email(
    make_salon: SalonFactory,
) -> None:
    salon = await make_salon()
    asked = await salon.book_by_buttons()
    assert asked.text == "Before I send the request: what's your dog's name?"
    contact = await salon.say("Biscuit")
    assert "reminder the day before" in contact.text and "e-mail" in contact.text
    assert [q["title"] for q in contact.quick_replies] == ["Skip"]  # one step, one tap to skip
    filed = await salon.say("ann@example.org")
    assert filed.text.startswith("Request sent!") and "Biscuit" in filed.text
    # Book, service, size, coat, day, time: no "Another dog" for a customer with no dog.
    assert salon.taps == 6

    appt = await salon.approve_latest()
    confirmation = (await salon.messages())[-1]
    assert "We'll send you a reminder the day before by e-mail." in confirmation.text

    # 30 hours after the customer's last message: Messenger's window is closed.
    reminder = await salon.reminder_time(appt, last_wrote_hours_ago=30)
    assert reminder.channel == "messenger" and reminder.text.startswith("Reminder: Biscuit")
    sent = await salon.deliver(reminder.id)
    assert (sent.delivery_status, sent.delivered_via) == ("sent", "email")
    assert not any(m.get("message", {}).get("text", "").startswith("Reminder") for m in salon.graph.sent)
    [mail] = salon.smtp.received
    assert mail.rcpt_tos == ["ann@example.org"]
    assert mail.message.get_content().startswith(reminder.text)

    await salon.check()
    assert (await salon.appointment(appt.id)).reminder_undelivered_at is None
    assert await salon.daily_list() == []
    assert not [p for p in await salon.kimmie_jobs() if p["type"] in ("alert", "reminder_digest")]


async def test_contact_skipped_no_promise_and_kimmie_gets_one_daily_list(make_salon: SalonFactory) -> None:
    salon = await make_salon()
    await salon.book_by_buttons()
    contact = await salon.say("Biscuit")
    filed = await salon.tap(contact, "Skip")
    assert filed.text.startswith("Request sent!")
    assert salon.taps == 7  # the contact step stays one tap

    appt = await salon.approve_latest()
    confirmation = (await salon.messages())[-1]
    assert "We'll send you a reminder" not in confirmation.text
    assert NO_REMINDER_ROUTE in confirmation.text  # says so, and asks again

    # The morning list, while the reminder is still ahead: no route will be open then.
    salon.clock[0] = appt.start_at - timedelta(hours=40)
    assert await salon.daily_list() == [appt.id]
    [listed] = [p for p in await salon.kimmie_jobs() if p["type"] == "reminder_digest"]
    assert listed["appointment_ids"] == [appt.id]

    # The reminder itself dies in the closed window: no alert of its own, and no second listing.
    reminder = await salon.reminder_time(appt)
    dead = await salon.deliver(reminder.id)
    assert dead.delivery_status == "dead" and "24-hour" in (dead.delivery_error or "")
    await salon.check()
    assert (await salon.appointment(appt.id)).reminder_undelivered_at is not None
    assert await salon.daily_list() == []
    kinds = [p["type"] for p in await salon.kimmie_jobs()]
    assert kinds.count("reminder_digest") == 1 and "alert" not in kinds


async def test_an_undeliverable_reminder_found_late_is_listed_at_once(make_salon: SalonFactory) -> None:
    salon = await make_salon()
    await salon.book_by_buttons()
    await salon.tap(await salon.say("Biscuit"), "Skip")
    appt = await salon.approve_latest()
    reminder = await salon.reminder_time(appt)
    await salon.deliver(reminder.id)
    await salon.check()
    async with salon.db.transaction() as session:
        lists = (await session.execute(select(Job).where(Job.kind == "reminder_digest"))).scalars().all()
    [payload] = [p for p in (ReminderDigestPayload.load(j.payload) for j in lists) if p.appointment_id]
    assert payload.appointment_id == appt.id  # the next morning's list would come too late
    async with salon.db.transaction() as session:
        assert await salon.booking.watch.digest(session, payload) == [appt.id]


# --- Messenger utility templates on the fake Graph API --------------------------------------------------


async def test_utility_messages_send_the_reminder_as_the_pages_template(make_salon: SalonFactory) -> None:
    salon = await make_salon(meta_utility_messages=True)
    salon.graph.utility_templates["appointment_reminder"] = 3
    await salon.book_by_buttons()
    filed = await salon.say("Biscuit")
    assert filed.text.startswith("Request sent!")  # Messenger itself reaches them: no contact step
    appt = await salon.approve_latest()
    assert "reminder the day before here on Messenger" in (await salon.messages())[-1].text

    reminder = await salon.reminder_time(appt, last_wrote_hours_ago=30)
    sent = await salon.deliver(reminder.id)
    assert (sent.delivery_status, sent.delivered_via) == ("sent", "messenger")
    [template] = salon.graph.utility_sent()
    body, buttons = template["components"]
    assert template["name"] == "appointment_reminder" and template["language"] == {"code": "en_US"}
    assert [p["text"] for p in body["parameters"]][:2] == ["Biscuit", "Full groom"]
    assert [p["payload"] for p in buttons["parameters"]] == [
        f"APPT_OK:{appt.id}",
        f"APPT_MOVE:{appt.id}",
        f"APPT_CANCEL:{appt.id}",
    ]
    assert salon.smtp.received == []
    last = salon.graph.sent[-1]
    assert last["messaging_type"] == "UTILITY" and "text" not in last["message"]


async def test_inside_the_window_the_reminder_is_an_ordinary_message(make_salon: SalonFactory) -> None:
    salon = await make_salon(meta_utility_messages=True)
    salon.graph.utility_templates["appointment_reminder"] = 3
    await salon.book_by_buttons()
    await salon.say("Biscuit")
    appt = await salon.approve_latest()
    reminder = await salon.reminder_time(appt, last_wrote_hours_ago=2)
    await salon.deliver(reminder.id)
    assert salon.graph.utility_sent() == []
    assert salon.graph.sent[-1]["message"]["text"].startswith("Reminder: Biscuit")


async def test_a_template_the_page_lacks_is_refused_and_goes_on_kimmies_list(
    make_salon: SalonFactory,
) -> None:
    salon = await make_salon(meta_utility_messages=True)  # no template approved on the fake Page
    await salon.book_by_buttons()
    await salon.say("Biscuit")
    appt = await salon.approve_latest()
    reminder = await salon.reminder_time(appt)
    with pytest.raises(PermanentJobError, match="does not exist"):
        await salon.deliver(reminder.id)
    [dead] = await salon.messages(purpose="reminder")
    assert dead.delivery_status == "dead" and "code=100" in (dead.delivery_error or "")
    await salon.check()
    assert (await salon.appointment(appt.id)).reminder_undelivered_at is not None


# --- The website --------------------------------------------------------------------------------------


async def _web_booking(salon: Salon, session_id: str, *, email: str | None) -> Appointment:
    kw: dict[str, Any] = {"channel": Channel.WEB, "user": session_id}
    asked = await salon.book_by_buttons(**kw)
    assert asked.text == "Before I send the request: what's your dog's name?"
    assert salon.taps == 6  # Book, service, size, coat, day, time (was 7, with "Another dog")
    who = await salon.say("Biscuit", **kw)
    assert who.text.startswith("And your name, please?")  # a website visitor comes without one
    contact = await salon.say("I'm Zoe Hart", **kw)
    filed = await (salon.say(email, **kw) if email else salon.tap(contact, "Skip", **kw))
    assert filed.text.startswith("Request sent!") and "Biscuit" in filed.text
    assert salon.taps == (6 if email else 7)  # the contact step: one tap to skip, none to type
    async with salon.db.transaction() as session:
        appt = (await session.execute(select(Appointment))).scalars().one()
        client = appt.client_id
        pet = (await session.execute(select(Pet).where(Pet.client_id == client))).scalar_one()
        assert pet.name == "Biscuit" and not pet.placeholder
        card = await load_card(session, salon.booking, appt.id)  # what Kimmie's card is made of
    assert card.client.label == "Zoe Hart" and [p.name for p in card.pets] == ["Biscuit"]
    assert card.client.email == (email.lower() if email else None)
    await salon.approve_latest()
    return appt


async def test_a_web_reminder_the_widget_fetched_is_delivered(
    make_salon: SalonFactory, aiohttp_client: Callable[..., Any]
) -> None:
    salon = await make_salon()
    appt = await _web_booking(salon, "web-session-fetch-1", email="zoe@example.org")
    reminder = await salon.reminder_time(appt)
    sent = await salon.deliver(reminder.id)
    assert (sent.delivery_status, sent.delivered_via, sent.fetched_at) == ("sent", "web", None)

    client: TestClient[Any, Any] = await aiohttp_client(build_app(salon.db, salon.settings))
    answer = await client.get("/api/chat/web-session-fetch-1/messages?after=0")
    assert answer.status == 200
    assert any(r["text"] == reminder.text for r in (await answer.json())["replies"])
    await salon.check()
    assert salon.smtp.received == []  # seen in the widget: no e-mail
    assert (await salon.appointment(appt.id)).reminder_undelivered_at is None


async def test_a_web_reminder_not_fetched_falls_back_to_email(make_salon: SalonFactory) -> None:
    salon = await make_salon()
    appt = await _web_booking(salon, "web-session-mail-1", email="zoe@example.org")
    reminder = await salon.reminder_time(appt)
    await salon.deliver(reminder.id)
    await salon.check()  # not fetched after the wait: the same reminder by e-mail
    by_mail = [m for m in await salon.messages(purpose="reminder") if m.channel == "email"]
    assert len(by_mail) == 1 and by_mail[0].text == reminder.text
    await salon.deliver(by_mail[0].id)
    [mail] = salon.smtp.received
    assert mail.rcpt_tos == ["zoe@example.org"]
    await salon.check()
    assert (await salon.appointment(appt.id)).reminder_undelivered_at is None


async def test_a_web_reminder_not_fetched_with_no_email_reaches_kimmie(make_salon: SalonFactory) -> None:
    salon = await make_salon()
    appt = await _web_booking(salon, "web-session-none-1", email=None)
    reminder = await salon.reminder_time(appt)
    await salon.deliver(reminder.id)
    await salon.check()
    assert (await salon.appointment(appt.id)).reminder_undelivered_at is not None
    assert salon.smtp.received == []
    async with salon.db.transaction() as session:
        service = (await session.execute(select(Service))).scalars().first()
    assert service is not None
    kinds = [p["type"] for p in await salon.kimmie_jobs()]
    assert "alert" not in kinds


# --- Same again -------------------------------------------------------------------------------------


async def test_a_returning_customer_books_the_same_again_in_three_taps(make_salon: SalonFactory) -> None:
    salon = await make_salon()
    await salon.book_by_buttons()
    await salon.say("Biscuit")
    await salon.say("ann@example.org")
    first = await salon.approve_latest()
    async with salon.db.transaction() as session:
        await session.execute(
            update(Appointment)
            .where(Appointment.id == first.id)
            .values(status="completed", addon_codes=["nail_grind"], notes="teddy bear cut, short legs")
        )
    salon.taps = 0
    greeting = await salon.say("hello again")
    days = await salon.tap(greeting, "Same again")
    times = await salon.tap(days, index=0)
    done = await salon.tap(times, index=0)
    assert done.text.startswith("Request sent!") and "Biscuit" in done.text
    assert salon.taps == 3
    async with salon.db.transaction() as session:
        again = (
            await session.execute(select(Appointment).where(Appointment.status == "requested"))
        ).scalar_one()
        booked = await salon.booking.get_booking(session, again.id)
    assert booked.service_code == "full_groom" and booked.pet_names == ("Biscuit",)
    assert again.addon_codes == ["nail_grind"] and again.notes == "teddy bear cut, short legs"


async def test_a_visit_the_customer_confirmed_is_not_on_kimmies_list(make_salon: SalonFactory) -> None:
    salon = await make_salon()
    await salon.book_by_buttons()
    await salon.tap(await salon.say("Biscuit"), "Skip")
    appt = await salon.approve_latest()
    thanks = await salon.say("Confirm", payload=f"APPT_OK:{appt.id}")
    assert thanks.text.startswith("Thanks for confirming")
    assert (await salon.appointment(appt.id)).reminder_confirmed_at is not None
    salon.clock[0] = appt.start_at - timedelta(hours=40)
    assert await salon.daily_list() == []
    # Another customer's button cannot confirm (or hide) this visit.
    other = await salon.say("Confirm", payload=f"APPT_OK:{appt.id}", user="psid-mallory")
    assert other.text.startswith("Thanks")
    async with salon.db.transaction() as session:
        await session.execute(update(Appointment).values(reminder_confirmed_at=None))
    await salon.say("Confirm", payload=f"APPT_OK:{appt.id}", user="psid-mallory")
    assert (await salon.appointment(appt.id)).reminder_confirmed_at is None
