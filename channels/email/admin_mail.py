"""The "notify_admin_email" job: a notification Telegram could not take, e-mailed to ADMIN_EMAIL.

core/notify/jobs.py hands it over (with the notify_admin payload, the reason and the notifying job's
id); this renders the same facts as the Telegram card (core/notify/facts.py, views.py) as plain text
(client, dog, service, time, chat id; no tokens, no buttons), reading in a short transaction, and sends
one mail through the e-mail channel's SMTP code (channels/email/sender.py) outside it. Wired only with
ADMIN_EMAIL and SMTP_URL.

Outcomes: sent → done. The SMTP server unreachable, deferring (4xx) or refusing our login → the job
retries with backoff and ends dead, listed by `python -m core.jobs dead` and alerted like any dead job.
ADMIN_EMAIL refused for good (5xx) → dead at once. The Message-ID is fixed per notification, so a mail
sent again after a crash between the server's acceptance and the job's completion is the same mail
to the mailbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from channels.email.sender import SmtpConfig, build_mail, send_mail
from core.alerts import NotifyAdminPayload
from core.booking.api import BookingService, NotFoundError
from core.db.database import Database
from core.jobs.queue import ClaimedJob, PermanentJobError
from core.notify import views
from core.notify.facts import (
    EVENT_LABEL,
    QUIET_EVENTS,
    STATUS_WORDS,
    channel_label,
    fmt_money,
    pet_traits,
    vaccination,
)
from core.notify.jobs import AdminEmailPayload
from core.ports import ChannelCredentialsError, PermanentDeliveryError, RecipientUnreachableError
from core.settings import Settings

log = logging.getLogger(__name__)

SUBJECT_CHARS = 120


@dataclass(frozen=True, slots=True)
class AdminMail:
    kind: str  # the subject's label: "New booking request", "Needs you", "Alert", "Booking update"
    headline: str
    body: str


def fmt_slot(start: datetime, end: datetime, tz: ZoneInfo) -> str:
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    return f"{local_start:%a %-d %b %Y}, {local_start:%H:%M}–{local_end:%H:%M} ({tz.key})"


def pet_text(pet: views.PetView, today: date) -> str:
    traits = pet_traits(pet)
    line = pet.name + (" — " + ", ".join(traits) if traits else "")
    shots, expired = vaccination(pet, today)
    if expired:  # plain text has no ⚠: shout instead
        shots = shots.replace("vaccination expired", "VACCINATION EXPIRED")
    extra = [f"temperament: {pet.temperament}" if pet.temperament else "", shots]
    if pet.health_notes:
        extra.append(f"health: {pet.health_notes}")
    return line + "\n     " + "; ".join(x for x in extra if x)


def client_text(client: views.ClientView, channel: str | None) -> str:
    who = client.name or "(no name)"
    if client.phone:
        who += f" · {client.phone}"
    return f"{who} · via {channel_label(channel)}"


def booking_lines(card: views.CardData, tz: ZoneInfo) -> list[str]:
    b = card.booking
    channel = b.source_channel.value if b.source_channel else None
    today = datetime.now(tz).date()
    lines = [f"Client:  {client_text(card.client, channel)}"]
    lines += [f"Dog:     {pet_text(p, today)}" for p in card.pets]
    if not card.pets and b.pet_names:
        lines.append("Dog:     " + ", ".join(b.pet_names))
    lines += [
        f"Service: {b.service_name} · {fmt_money(b.price_min_cents, b.price_max_cents)}",
        f"Time:    {fmt_slot(b.start, b.end, tz)}",
    ]
    if not b.availability_verified:
        lines.append("Calendar not checked — make sure the slot is free.")
    if b.notes:
        lines.append(f"Notes:   {b.notes}")
    lines.append(f"Status:  {STATUS_WORDS.get(b.status, str(b.status))}")
    if card.conversation_id is not None:
        lines.append(f"Chat:    #{card.conversation_id} ({channel_label(channel)})")
    return lines


class AdminMailer:
    """Renders a notify_admin payload as a mail to ADMIN_EMAIL and sends it."""

    def __init__(self, *, db: Database, settings: Settings, booking: BookingService) -> None:
        if settings.admin_email is None:
            raise ValueError("ADMIN_EMAIL is not set")
        self.config = SmtpConfig.from_settings(settings)
        self.to = settings.admin_email
        self.db = db
        self.settings = settings
        self.booking = booking

    async def handle(self, job: ClaimedJob) -> None:
        payload = AdminEmailPayload.load(job.payload)  # malformed: dead at once
        mail = await self.render(payload)
        if mail is None:
            return  # nothing Kimmie needs to read (her own change, a record since deleted)
        notification = f"{payload.notify_job_id}.{payload.handed_over_ms}"
        message = build_mail(
            self.config,
            from_name=f"{self.settings.assistant_name} ({self.settings.business_name})",
            to=self.to,
            subject=self.subject(mail),
            body=self.body(mail, payload),
            message_id=f"cheshire.notify.{notification}",
        )
        try:
            await send_mail(self.config, message, timeout_s=self.settings.smtp_timeout_s)
        except (RecipientUnreachableError, PermanentDeliveryError) as exc:
            log.error("the SMTP server refused Kimmie's notification e-mail: check ADMIN_EMAIL, SMTP_FROM")
            raise PermanentJobError(f"notification e-mail refused: {exc}") from None
        except ChannelCredentialsError:
            log.error("the SMTP server refused our login: check SMTP_URL; the notification e-mail waits")
            raise
        log.info("notification e-mailed to Kimmie", extra={"type": payload.type})

    def subject(self, mail: AdminMail) -> str:
        subject = f"{self.settings.business_name}: {mail.kind} — {mail.headline}"
        return subject if len(subject) <= SUBJECT_CHARS else subject[: SUBJECT_CHARS - 1].rstrip() + "…"

    def body(self, mail: AdminMail, payload: AdminEmailPayload) -> str:
        footer = ["-- ", f"Sent by e-mail: {payload.fallback_reason or 'Telegram could not take it'}."]
        if self.settings.telegram_mode != "off":
            footer.append("Approve, decline or open the chat in the Cheshire bot in Telegram (/pending).")
        return mail.body.rstrip() + "\n\n" + "\n".join(footer) + "\n"

    async def render(self, payload: NotifyAdminPayload) -> AdminMail | None:
        if payload.type == "alert":
            return self.alert(payload.text or "")
        if payload.type == "booking_request":
            return await self.booking_request(payload.appointment)
        if payload.type == "booking_changed":
            return await self.booking_changed(payload.appointment, payload.event or "")
        return await self.handover(payload.conversation, payload.reason or "")

    async def _card(self, appointment_id: int) -> views.CardData | None:
        async with self.db.transaction() as session:
            try:
                return await views.load_card(session, self.booking, appointment_id)
            except NotFoundError:
                return None

    async def booking_request(self, appointment_id: int) -> AdminMail | None:
        card = await self._card(appointment_id)
        if card is None:
            return None
        b, tz = card.booking, self.settings.tz
        pets = ", ".join(p.name for p in card.pets) or ", ".join(b.pet_names) or "a dog"
        local = b.start.astimezone(tz)
        return AdminMail(
            "New booking request",
            f"{card.client.name or 'a customer'}, {pets}, {b.service_name}, {local:%a %-d %b %H:%M}",
            "\n".join([f"Booking request #{b.id}", "", *booking_lines(card, tz)]),
        )

    async def booking_changed(self, appointment_id: int, event: str) -> AdminMail | None:
        if event in QUIET_EVENTS:
            return None  # her own decision: Telegram only refreshes the card, nothing to tell her
        card = await self._card(appointment_id)
        if card is None:
            return None
        label = EVENT_LABEL.get(event, event.replace("_", " "))
        return AdminMail(
            "Booking update",
            f"#{card.booking.id} {label}",
            "\n".join([f"Booking #{card.booking.id} {label}", "", *booking_lines(card, self.settings.tz)]),
        )

    async def handover(self, conversation_id: int, reason: str) -> AdminMail | None:
        async with self.db.transaction() as session:
            view = await views.conversation_view(session, conversation_id)
        if view is None:
            return None
        name = view.client.name or "A customer"
        channel = channel_label(view.channel)
        lines = [
            f"{name} on {channel} needs you.",
            f"Reason:  {reason or '—'}",
            "",
            f"Client:  {client_text(view.client, view.channel)}",
            f"Chat:    #{view.id} ({channel})",
        ]
        return AdminMail("Needs you", f"{name} on {channel}", "\n".join(lines))

    def alert(self, text: str) -> AdminMail:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "a fault")
        return AdminMail("Alert", first, text)
