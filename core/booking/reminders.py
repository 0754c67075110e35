"""The customer's reminder before a confirmed visit and the nudge to book again after one: the bodies
of the `booking_reminder` and `booking_rebook_nudge` jobs (scheduled by the follow-ups table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.booking import payloads, texts
from core.booking.followups import tell_customer
from core.booking.reach_jobs import ReminderWatch
from core.booking.records import CONFIRMED, LIVE, customer_conversation, find_appointment, to_booking
from core.db.models import Appointment
from core.outbox import REMINDER_PURPOSE, queue_outbound
from core.types import Author, OutboundMessage, QuickReply, UtilityTemplate


@dataclass(frozen=True, slots=True)
class TemplateName:
    """The utility template a reminder may go out as past a messaging window."""

    name: str
    language: str


class Reminders:
    def __init__(
        self,
        tz: ZoneInfo,
        *,
        now: Callable[[], datetime],
        watch: ReminderWatch | None = None,
        template: TemplateName | None = None,
    ) -> None:
        self.tz = tz
        self.now = now
        self.watch = watch
        self.template = template

    async def send_reminder(self, session: AsyncSession, *, appointment_id: int) -> bool:
        appt = await find_appointment(session, appointment_id)
        if appt is None or appt.status != CONFIRMED or appt.start_at <= self.now():
            return False
        replies = (
            QuickReply(title=texts.CONFIRM, payload=payloads.appointment_action(payloads.CONFIRM, appt.id)),
            QuickReply(title=texts.RESCHEDULE, payload=payloads.appointment_action(payloads.MOVE, appt.id)),
            QuickReply(title=texts.CANCEL, payload=payloads.appointment_action(payloads.CANCEL, appt.id)),
        )
        booking = to_booking(appt)
        conversation = await customer_conversation(session, appt.client_id, appt.source_channel)
        if conversation is None:
            return False
        template = None
        if self.template is not None:
            template = UtilityTemplate(
                name=self.template.name,
                language=self.template.language,
                parameters=(texts.pets(booking), booking.service_name, texts.when(booking.start, self.tz)),
                button_payloads=tuple(r.payload for r in replies),
            )
        message_id = await queue_outbound(
            session,
            conversation_id=conversation.id,
            channel=conversation.channel,
            message=OutboundMessage(texts.reminder(booking, self.tz), replies, template=template),
            author=Author.SYSTEM,
            purpose=REMINDER_PURPOSE,
        )
        if self.watch is not None:  # did it arrive? (e-mail, or Kimmie's daily list, if not)
            await self.watch.watch(session, appt.id, message_id)
        return True

    async def send_rebooking_nudge(self, session: AsyncSession, *, appointment_id: int, weeks: int) -> bool:
        appt = await find_appointment(session, appointment_id)
        if appt is None:
            return False
        upcoming = await session.scalar(
            select(Appointment.id)
            .where(
                Appointment.client_id == appt.client_id,
                Appointment.status.in_(LIVE),
                Appointment.start_at > self.now(),
            )
            .limit(1)
        )
        if upcoming is not None:
            return False  # already booked again: no nudge
        return await tell_customer(
            session,
            appt,
            texts.rebooking(texts.pets(to_booking(appt)), weeks),
            (QuickReply(title=texts.BOOK_NOW, payload=payloads.BOOK),),
        )
