"""The e-mail ChannelSender: core `OutboundMessage` → one plain-text mail through SMTP (aiosmtplib; the
only module importing it).

Configured from SMTP_URL: `smtp://user:pass@host:587` (STARTTLS when the server offers it) or
`smtps://user:pass@host:465` (implicit TLS). The recipient is the e-mail identity's external id (the
lower-cased address the customer gave). A message is one mail: one part for delivery's resume
bookkeeping. Quick replies become a short list of options (a mail cannot
carry buttons), image URLs become links; the subject names the salon.

Errors map onto core's delivery errors, so core/delivery.py retries, falls back or alerts Kimmie:

    connection refused / dropped, timeouts, any 4xx reply   → RetryableDeliveryError
    5xx for the recipient (no such mailbox, ...)             → RecipientUnreachableError
    5xx for our sender or the content                        → PermanentDeliveryError
    authentication refused, or AUTH not offered              → ChannelCredentialsError

Neither the password nor a body is ever logged or put in an error message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib

from core.ports import (
    ChannelCapabilities,
    ChannelCredentialsError,
    PartSent,
    PermanentDeliveryError,
    RecipientUnreachableError,
    RetryableDeliveryError,
    SendResult,
)
from core.settings import Settings
from core.types import OutboundMessage, Recipient

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
SUBJECT_SNIPPET_CHARS = 70


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None
    sender: str  # the From address

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        if settings.smtp_url is None:
            raise ValueError("SMTP_URL is not set")
        url = urlsplit(settings.smtp_url.get_secret_value())
        host = url.hostname or ""
        username = unquote(url.username) if url.username else None
        password = unquote(url.password) if url.password else None
        sender = settings.smtp_from or (username if username and "@" in username else f"no-reply@{host}")
        return cls(
            host=host,
            port=url.port or DEFAULT_PORTS[url.scheme],
            implicit_tls=url.scheme == "smtps",
            username=username,
            password=password,
            sender=sender,
        )


class EmailSender:
    """`ChannelSender` for "email". No messaging window: mail reaches a person at any time. One part
    (the mail), resumed after if an earlier attempt got it accepted."""

    capabilities = ChannelCapabilities()
    credentials_fault_key = "email:smtp"

    def __init__(self, settings: Settings) -> None:
        self.config = SmtpConfig.from_settings(settings)
        self.business_name = settings.business_name
        self.business_phone = settings.business_phone
        self.timeout_s = settings.smtp_timeout_s

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult:
        if resume_from >= 1:  # the one part (the mail) was accepted by an earlier attempt
            return SendResult(platform_message_id=None)
        address = recipient.external_id
        if "@" not in address:
            raise RecipientUnreachableError("not an e-mail address")
        mail = self.compose(address, message)
        await send_mail(self.config, mail, timeout_s=self.timeout_s)
        log.info("e-mail sent", extra={"to_domain": address.rpartition("@")[2]})
        if on_part_sent is not None:
            await on_part_sent(0, str(mail["Message-ID"]))
        return SendResult(platform_message_id=str(mail["Message-ID"]))

    def compose(self, address: str, message: OutboundMessage) -> EmailMessage:
        return build_mail(
            self.config,
            from_name=self.business_name,
            to=address,
            subject=self.subject(message),
            body=self.body(message),
        )

    def subject(self, message: OutboundMessage) -> str:
        first_line = next((line.strip() for line in message.text.splitlines() if line.strip()), "")
        if not first_line:
            return f"A message from {self.business_name}"
        if len(first_line) > SUBJECT_SNIPPET_CHARS:
            first_line = first_line[: SUBJECT_SNIPPET_CHARS - 1].rstrip() + "…"
        return f"{self.business_name}: {first_line}"

    def body(self, message: OutboundMessage) -> str:
        parts = [message.text.strip()]
        if message.quick_replies:
            parts.append("Options:\n" + "\n".join(f"- {q.title}" for q in message.quick_replies))
        if message.image_urls:
            parts.append("Photos:\n" + "\n".join(message.image_urls))
        footer = self.business_name + (f" · {self.business_phone}" if self.business_phone else "")
        parts.append(f"-- \n{footer}")
        return "\n\n".join(p for p in parts if p) + "\n"


def build_mail(
    config: SmtpConfig, *, from_name: str, to: str, subject: str, body: str, message_id: str | None = None
) -> EmailMessage:
    """One plain-text mail from us. `message_id` (without <>) keeps a resent mail recognisable as the
    same one (mailboxes such as Gmail show one copy); by default a fresh id."""
    domain = config.sender.rpartition("@")[2] or None
    mail = EmailMessage()
    mail["From"] = formataddr((from_name, config.sender))
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=False)
    stable_id = f"<{message_id}@{domain or 'localhost'}>" if message_id else None
    mail["Message-ID"] = stable_id or make_msgid(domain=domain)
    mail.set_content(body)
    return mail


async def send_mail(config: SmtpConfig, mail: EmailMessage, *, timeout_s: float) -> None:
    """Hand one mail to the SMTP server; its refusals raise core's delivery errors (table above).
    The one place that opens SMTP connections: the e-mail channel and Kimmie's e-mails share it."""
    try:
        await aiosmtplib.send(
            mail,
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.implicit_tls,
            start_tls=False if config.implicit_tls else None,  # None: STARTTLS when offered
            timeout=timeout_s,
        )
    except aiosmtplib.SMTPException as exc:
        raise _map_error(exc) from None
    except (OSError, TimeoutError) as exc:
        raise RetryableDeliveryError(f"SMTP server unreachable ({type(exc).__name__})") from None


def _map_error(exc: aiosmtplib.SMTPException) -> Exception:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return ChannelCredentialsError(f"SMTP authentication refused ({exc.code})")
    if isinstance(exc, aiosmtplib.SMTPNotSupported) and "auth" in str(exc).lower():
        return ChannelCredentialsError("the SMTP server offers no authentication on this connection")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        if codes and all(500 <= code < 600 for code in codes):
            return RecipientUnreachableError(f"recipient refused ({codes[0]})")
        return RetryableDeliveryError(f"recipient deferred ({codes[0] if codes else '?'})")
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPTimeoutError):
        return RetryableDeliveryError(f"SMTP server unreachable ({type(exc).__name__})")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and 500 <= exc.code < 600:
            return RecipientUnreachableError(f"recipient refused ({exc.code})")
        if 500 <= exc.code < 600:
            return PermanentDeliveryError(f"SMTP server refused the message ({exc.code})")
        return RetryableDeliveryError(f"SMTP server deferred the message ({exc.code})")
    return RetryableDeliveryError(f"SMTP error ({type(exc).__name__})")
