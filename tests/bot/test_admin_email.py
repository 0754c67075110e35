"""Kimmie's notifications fall back to e-mail (ADMIN_EMAIL through SMTP_URL) when Telegram cannot take
them. The process is wired by the real composition root (build_runtime) against the fake Bot API
server and a real SMTP server in-process (aiosmtpd); jobs run through the real worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from cheshire.runtime import Runtime, build_runtime
from core import customers
from core.alerts import NOTIFY_ADMIN_JOB, notify_admin, raise_alert
from core.booking.catalog import load_catalog
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import Job, utcnow
from core.notify.jobs import ADMIN_EMAIL_JOB
from core.settings import Settings, SettingsError
from core.types import Booking, Channel, InboundMessage, SizeClass
from tests.bot.conftest import CUSTOMER, KIMMIE, TOKEN, make_settings
from tests.fakes.smtp_server import FakeSMTPServer, Received
from tests.fakes.telegram_api import FakeTelegramAPI

# The fake allows AUTH on a plain connection (no test certificate); aiosmtpd warns about exactly that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

LOGIN = ("cheshire@lookingglass.test", "s3cret-pass-word")
KIMMIE_MAIL = "kimmie@lookingglass.test"
CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer(login=LOGIN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def salon(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI, smtp: FakeSMTPServer
) -> AsyncIterator[Salon]:
    salon = Salon(db, database_url, fake_tg, smtp)
    yield salon
    await salon.close()


class Salon:
    """Builds the process the way `python -m bot` does, with the settings a test gives."""

    def __init__(self, db: Database, database_url: str, fake: FakeTelegramAPI, smtp: FakeSMTPServer) -> None:
        self.db, self.database_url, self.fake, self.smtp = db, database_url, fake, smtp
        self.rt: Runtime | None = None

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "telegram_api_base": self.fake.base_url,
            "smtp_url": self.smtp.url(),
            "smtp_timeout_s": 5.0,
            "admin_email": KIMMIE_MAIL,
        }
        return make_settings(self.database_url, **(values | overrides))

    async def start(self, **overrides: Any) -> Runtime:
        self.rt = build_runtime(self.settings(**overrides))
        if self.rt.telegram is not None:
            await self.rt.telegram.build()  # as `python -m bot` does once /healthz answers
        async with self.db.transaction() as session:
            await load_catalog(session, CATALOG)
        return self.rt

    async def close(self) -> None:
        if self.rt is not None:
            if self.rt.telegram is not None:
                await self.rt.telegram.close()
            await self.rt.db.dispose()

    async def run_jobs(self) -> None:
        assert self.rt is not None
        for _ in range(50):
            if await self.rt.worker.run_once() == 0:
                return

    async def later(self) -> None:
        """Time passes: notifications waiting for a retry are due now (other jobs keep their time)."""
        async with self.db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.status == "queued", Job.kind.in_([NOTIFY_ADMIN_JOB, ADMIN_EMAIL_JOB]))
                .values(run_at=utcnow())
            )
        await self.run_jobs()

    async def jobs(self, kind: str) -> list[Job]:
        async with self.db.transaction() as session:
            rows = await session.execute(select(Job).where(Job.kind == kind).order_by(Job.id))
            return list(rows.scalars())

    async def booking_request(self) -> tuple[Booking, int]:
        """Ann (Telegram) asks for a full groom for Bella; returns the booking and her conversation id."""
        assert self.rt is not None and self.rt.booking is not None
        async with self.db.transaction() as session:
            seen = await ingest(
                session,
                InboundMessage(
                    channel=Channel.TELEGRAM,
                    external_user_id=str(CUSTOMER),
                    platform_message_id="seed-1",
                    text="hello",
                    display_name="Ann Lee",
                ),
            )
            pet = await customers.save_pet(
                session, client_id=seen.client_id, name="Bella", breed="Poodle", size_class=SizeClass.SMALL
            )
            await session.execute(delete(Job).where(Job.kind == "process_message"))
        async with self.db.transaction() as session:
            slots = await self.rt.booking.find_slots(
                session, service_code="full_groom", pet_ids=[pet.id], client_id=seen.client_id
            )
            booking = await self.rt.booking.request_booking(
                session,
                client_id=seen.client_id,
                service_code="full_groom",
                pet_ids=[pet.id],
                start=slots[0].start,
                source_channel=Channel.TELEGRAM,
                notes="Nervous with dryers",
            )
        return booking, seen.conversation_id

    def mails(self) -> list[Received]:
        return [m for m in self.smtp.received if KIMMIE_MAIL in m.rcpt_tos]

    def to_kimmie(self) -> list[Any]:
        return [c for c in self.fake.delivered("sendMessage") if c.chat_id == KIMMIE]


def body(mail: Received) -> str:
    return str(mail.message.get_content())


async def test_without_telegram_a_booking_request_arrives_by_email(salon: Salon) -> None:
    await salon.start(telegram_bot_token=None)
    booking, conversation_id = await salon.booking_request()
    await salon.run_jobs()

    [mail] = salon.mails()
    subject = str(mail.message["Subject"])
    assert subject.startswith("Looking Glass Groomery: New booking request — Ann Lee, Bella, Full groom, ")
    text = body(mail)
    local = booking.start.astimezone(salon.settings().tz)
    for fact in (
        f"Booking request #{booking.id}",
        "Client:  Ann Lee · via Telegram",
        "Dog:     Bella — Poodle, small",
        "Service: Full groom",
        f"Time:    {local:%a %-d %b %Y}, {local:%H:%M}",
        "Notes:   Nervous with dryers",
        "Status:  waiting for your decision",
        f"Chat:    #{conversation_id} (Telegram)",
        "Sent by e-mail: Telegram is not configured.",
    ):
        assert fact in text
    raw = mail.message.as_string()
    assert LOGIN[1] not in raw and TOKEN not in raw  # no secrets in the mail
    assert mail.mail_from == LOGIN[0] and "Looking Glass Groomery" in str(mail.message["From"])
    assert [j.status for j in await salon.jobs(NOTIFY_ADMIN_JOB)] == ["done"]
    assert [j.status for j in await salon.jobs(ADMIN_EMAIL_JOB)] == ["done"]


async def test_without_telegram_handovers_and_alerts_are_emailed_too(salon: Salon) -> None:
    await salon.start(telegram_bot_token=None)
    _, conversation_id = await salon.booking_request()
    async with salon.db.transaction() as session:
        await notify_admin(session, "handover", conversation_id=conversation_id, reason="asked for a human")
        await raise_alert(session, "meta:token", "The Instagram token expired\nRenew it in Meta's settings.")
    await salon.run_jobs()

    subjects = {str(m.message["Subject"]): body(m) for m in salon.mails()}
    handover = subjects["Looking Glass Groomery: Needs you — Ann Lee on Telegram"]
    assert "Reason:  asked for a human" in handover and f"Chat:    #{conversation_id} (Telegram)" in handover
    alert = subjects["Looking Glass Groomery: Alert — The Instagram token expired"]
    assert "Renew it in Meta's settings." in alert


@pytest.mark.parametrize(
    ("status", "description"),
    [
        (403, "Forbidden: bot was blocked by the user"),
        (400, "Bad Request: chat not found"),
        (401, "Unauthorized"),
    ],
    ids=["blocked", "chat-not-found", "bad-token"],
)
async def test_a_chat_telegram_cannot_reach_gets_the_notification_by_email_once(
    salon: Salon, status: int, description: str
) -> None:
    await salon.start()
    salon.fake.fail_next("sendMessage", status=status, description=description)
    booking, _ = await salon.booking_request()
    await salon.run_jobs()

    [mail] = salon.mails()
    assert str(mail.message["Subject"]).startswith("Looking Glass Groomery: New booking request — Ann Lee")
    assert f"Booking request #{booking.id}" in body(mail) and "Telegram cannot reach your chat" in body(mail)
    assert "open the chat in the Cheshire bot in Telegram" in body(mail)
    assert len(salon.fake.calls_to("sendMessage")) == 1 and salon.to_kimmie() == []  # not retried
    [notify] = await salon.jobs(NOTIFY_ADMIN_JOB)
    assert notify.status == "done"

    # The same notification job running again (a worker died before recording it): no second mail.
    salon.fake.fail_next("sendMessage", status=status, description=description)
    async with salon.db.transaction() as session:
        await session.execute(update(Job).where(Job.id == notify.id).values(status="queued", run_at=utcnow()))
    await salon.run_jobs()
    assert len(salon.mails()) == 1 and len(await salon.jobs(ADMIN_EMAIL_JOB)) == 1


async def test_a_transient_telegram_error_retries_telegram_and_sends_no_email(salon: Salon) -> None:
    await salon.start()
    salon.fake.fail_next("sendMessage", status=500, description="Internal Server Error")
    booking, _ = await salon.booking_request()
    await salon.run_jobs()
    [notify] = await salon.jobs(NOTIFY_ADMIN_JOB)
    assert notify.status == "queued" and notify.last_error  # waiting to try Telegram again

    await salon.later()
    [card] = salon.to_kimmie()
    assert f"Booking request #{booking.id}" in card.text
    assert salon.mails() == [] and await salon.jobs(ADMIN_EMAIL_JOB) == []
    assert [j.status for j in await salon.jobs(NOTIFY_ADMIN_JOB)] == ["done"]


async def test_telegram_failing_on_every_attempt_hands_over_to_email_once(salon: Salon) -> None:
    await salon.start()
    booking, _ = await salon.booking_request()
    async with salon.db.transaction() as session:
        await session.execute(update(Job).where(Job.kind == NOTIFY_ADMIN_JOB).values(max_attempts=3))
    for _ in range(3):
        salon.fake.fail_next("sendMessage", status=502, description="Bad Gateway")
    await salon.run_jobs()
    await salon.later()
    assert salon.mails() == []  # two failures: still Telegram's turn
    await salon.later()

    [mail] = salon.mails()
    assert f"Booking request #{booking.id}" in body(mail)
    assert "Telegram failed on all 3 attempts (last: TelegramServerError)" in body(mail)
    assert salon.to_kimmie() == [] and len(salon.fake.calls_to("sendMessage")) == 3
    assert [j.status for j in await salon.jobs(NOTIFY_ADMIN_JOB)] == ["done"]


async def test_an_email_the_server_defers_is_retried_until_it_goes_out(salon: Salon) -> None:
    await salon.start(telegram_bot_token=None)
    salon.smtp.refuse[KIMMIE_MAIL] = "452 4.2.2 Mailbox full"
    await salon.booking_request()
    await salon.run_jobs()
    [email_job] = await salon.jobs(ADMIN_EMAIL_JOB)
    assert email_job.status == "queued" and "deferred" in (email_job.last_error or "")
    assert salon.mails() == []

    del salon.smtp.refuse[KIMMIE_MAIL]
    await salon.later()
    [mail] = salon.mails()
    assert "New booking request" in str(mail.message["Subject"])
    assert [j.status for j in await salon.jobs(ADMIN_EMAIL_JOB)] == ["done"]


async def test_an_email_refused_for_good_is_a_dead_job_kimmie_is_alerted_about(salon: Salon) -> None:
    await salon.start()
    salon.fake.fail_next("sendMessage", status=403)
    salon.smtp.refuse[KIMMIE_MAIL] = "550 5.1.1 No such user"
    await salon.booking_request()
    await salon.run_jobs()

    [email_job] = await salon.jobs(ADMIN_EMAIL_JOB)
    assert email_job.status == "dead" and "refused" in (email_job.last_error or "")
    # Nothing lost silently: the dead job is listed, and the dead-job alert reached Telegram (it
    # answers again) saying which kind died.
    [alert] = salon.to_kimmie()
    assert "notify_admin_email" in alert.text and "python -m core.jobs dead" in alert.text


async def test_without_smtp_or_admin_email_nothing_changes_and_startup_says_so(
    salon: Salon, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cheshire.wiring"):
        rt = await salon.start(admin_email=None)
    assert ADMIN_EMAIL_JOB not in rt.registry.kinds
    [line] = [r.getMessage() for r in caplog.records if "no fallback" in r.getMessage()]
    assert "ADMIN_EMAIL not set" in line

    salon.fake.fail_next("sendMessage", status=403)
    await salon.booking_request()
    await salon.run_jobs()
    notify = (await salon.jobs(NOTIFY_ADMIN_JOB))[0]
    assert notify.status == "dead" and "refused" in (notify.last_error or "")  # as before
    assert salon.smtp.received == []


async def test_admin_email_is_checked_and_the_earlier_name_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="ADMIN_EMAIL: must be one e-mail address"):
        Settings.load(_env_file=None, admin_email="kimmie@salon.test, bob@salon.test")
    monkeypatch.setenv("ALERT_EMAIL_TO", "kimmie@salon.test")
    assert Settings.load(_env_file=None).admin_email == "kimmie@salon.test"
