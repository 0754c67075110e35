"""Job handlers of the booking domain: hold expiry, reminders, rebooking nudges, calendar writes.

Each handler reads its payload with its model (core/booking/followups.py, which queues them; a
malformed one ends the job dead at once) and opens its own short transaction. Calendar handlers
read in one transaction, call Google with none open, and write the event id back in another (never
a transaction across a network call).
"""

from __future__ import annotations

import logging

from core.booking.api import NotFoundError
from core.booking.followups import (
    CALENDAR_DELETE_JOB,
    CALENDAR_UPSERT_JOB,
    EXPIRE_HOLD_JOB,
    REBOOK_JOB,
    REMINDER_JOB,
    CalendarDeletePayload,
    CalendarUpsertPayload,
    ExpireHoldPayload,
    RebookPayload,
    ReminderPayload,
)
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.jobs.queue import ClaimedJob, RetryLater
from core.jobs.worker import JobRegistry
from core.ports import CalendarProvider, CalendarUnavailableError
from core.settings import Settings
from core.types import AppointmentStatus

log = logging.getLogger(__name__)


def register_jobs(
    registry: JobRegistry,
    *,
    db: Database,
    settings: Settings,
    calendar: CalendarProvider | None,
    booking: DefaultBookingService,
) -> None:
    """Register the booking job kinds. The calendar kinds only when a calendar is configured (the
    service enqueues them only then)."""

    async def expire_hold(job: ClaimedJob) -> None:
        payload = ExpireHoldPayload.load(job.payload)
        async with db.transaction() as session:
            await booking.expire_hold(session, appointment_id=payload.appointment_id)

    async def reminder(job: ClaimedJob) -> None:
        payload = ReminderPayload.load(job.payload)
        async with db.transaction() as session:
            await booking.send_reminder(session, appointment_id=payload.appointment_id)

    async def rebook(job: ClaimedJob) -> None:
        payload = RebookPayload.load(job.payload)
        weeks = payload.weeks or settings.rebooking_weeks
        async with db.transaction() as session:
            await booking.send_rebooking_nudge(session, appointment_id=payload.appointment_id, weeks=weeks)

    registry.register(EXPIRE_HOLD_JOB, expire_hold)
    registry.register(REMINDER_JOB, reminder)
    registry.register(REBOOK_JOB, rebook)
    if calendar is None:
        return
    cal = calendar

    async def calendar_upsert(job: ClaimedJob) -> None:
        appointment_id = CalendarUpsertPayload.load(job.payload).appointment_id
        async with db.transaction() as session:
            try:
                current = await booking.get_booking(session, appointment_id)
            except NotFoundError:
                return
        if current.status != AppointmentStatus.CONFIRMED:
            return  # cancelled or moved on before this ran; a later job handles the event
        summary = f"{current.service_name}: {', '.join(current.pet_names) or 'dog'}"
        via = current.source_channel.value if current.source_channel else "Kimmie"
        description = f"Booking #{current.id} via {via}." + (
            f"\nNotes: {current.notes}" if current.notes else ""
        )
        try:
            event_id = await cal.upsert_event(current, summary=summary, description=description)
        except CalendarUnavailableError as exc:
            raise RetryLater(min(60.0 * job.attempts, 900.0), f"calendar unavailable: {exc}") from None
        async with db.transaction() as session:
            await booking.set_calendar_event(session, appointment_id, event_id)

    async def calendar_delete(job: ClaimedJob) -> None:
        payload = CalendarDeletePayload.load(job.payload)
        try:
            await cal.delete_event(payload.appointment_id, payload.event_id or None)
        except CalendarUnavailableError as exc:
            raise RetryLater(min(60.0 * job.attempts, 900.0), f"calendar unavailable: {exc}") from None

    registry.register(CALENDAR_UPSERT_JOB, calendar_upsert)
    registry.register(CALENDAR_DELETE_JOB, calendar_delete)
