"""The e-mail channel: EmailSender against a real SMTP server in-process (aiosmtpd), and an Instagram
customer whose 24-hour window has closed getting a reminder by e-mail after save_contact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from channels.email.sender import EmailSender
from core.ports import (
    ChannelCredentialsError,
    PermanentDeliveryError,
    RecipientUnreachableError,
    RetryableDeliveryError,
)
from core.settings import Settings
from core.types import Channel, OutboundMessage, QuickReply, Recipient
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
