"""The customer's reminder before a confirmed visit and the nudge to book again after one: the bodies
of the `booking_reminder` and `booking_rebook_nudge` jobs (scheduled by the follow-ups table)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.booking import payloads, texts
from core.booking.followups import tell_customer
from core.booking.records import CONFIRMED, LIVE, find_appointment, to_booking
from core.db.models import Appointment
from core.types import QuickReply


class Reminders:
    def __init__(self, tz: ZoneInfo, *, now: Callable[[], datetime]) -> None:
        self.tz = tz
        self.now = now

    async def send_reminder(self, session: AsyncSession, *, appointment_id: int) -> bool:
        appt = await find_appointment(session, appointment_id)
        if appt is None or appt.status != CONFIRMED or appt.start_at <= self.now():
            return False
        replies = (
            QuickReply(title=texts.CONFIRM, payload=payloads.appointment_action(payloads.CONFIRM, appt.id)),
            QuickReply(title=texts.RESCHEDULE, payload=payloads.appointment_action(payloads.MOVE, appt.id)),
            QuickReply(title=texts.CANCEL, payload=payloads.appointment_action(payloads.CANCEL, appt.id)),
        )
        return await tell_customer(session, appt, texts.reminder(to_booking(appt), self.tz), replies)

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
