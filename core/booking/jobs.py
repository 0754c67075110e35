"""Job handlers of the booking domain: hold expiry, reminders, rebooking nudges, calendar writes,
and the calendar back-fill (when Google Calendar is connected, the bookings confirmed before it
get their events, through the usual upsert job: idempotent, as each event's id is the booking's).

Each handler reads its payload with its model (core/booking/followups.py, which queues them; a
malformed one ends the job dead at once) and opens its own short transaction. Calendar handlers
read in one transaction, call Google with none open, and write the event id back in another (never
a transaction across a network call).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.booking.api import NotFoundError
from core.booking.followups import (
    CALENDAR_BACKFILL_JOB,
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
from core.booking.reach_jobs import (
    REMINDER_CHECK_JOB,
    REMINDER_DIGEST_JOB,
    ReminderCheckPayload,
    ReminderDigestPayload,
)
from core.booking.records import CONFIRMED
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.db.models import Appointment, utcnow
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, NewJob, RetryLater, enqueue, enqueue_many
from core.jobs.worker import JobRegistry
from core.ports import CalendarProvider, CalendarUnavailableError
from core.settings import Settings
from core.types import AppointmentStatus

log = logging.getLogger(__name__)


@job_payload(CALENDAR_BACKFILL_JOB)
class CalendarBackfillPayload(JobPayload):
    """Why the back-fill runs ("connected": the OAuth callback; "startup": credentials at start)."""

    reason: str = "connected"


async def queue_calendar_backfill(session: AsyncSession, *, reason: str) -> None:
    """Queue the back-fill in the caller's unit of work (with the stored token, or at start-up)."""
    await enqueue(session, CALENDAR_BACKFILL_JOB, CalendarBackfillPayload(reason=reason).dump())


async def queue_missing_events(session: AsyncSession, *, now: datetime) -> int:
    """One calendar_upsert job per confirmed, still-coming booking without an event. Each is keyed by
    the booking, so running the back-fill twice (two connects, a restart) queues it once."""
    rows = await session.execute(
        select(Appointment.id)
        .where(
            Appointment.status == CONFIRMED,
            Appointment.end_at > now,
            Appointment.calendar_event_id.is_(None),
        )
        .order_by(Appointment.start_at)
    )
    ids = list(rows.scalars())
    if ids:
        await enqueue_many(
            session,
            [
                NewJob(
                    CALENDAR_UPSERT_JOB,
                    CalendarUpsertPayload(appointment_id=i).dump(),
                    idempotency_key=f"calendar_backfill:{i}",
                    queue_key=f"calendar:{i}",
                )
                for i in ids
            ],
        )
    return len(ids)


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

    async def reminder_check(job: ClaimedJob) -> None:
        async with db.transaction() as session:
            await booking.watch.check(session, ReminderCheckPayload.load(job.payload))

    async def reminder_digest(job: ClaimedJob) -> None:
        async with db.transaction() as session:
            await booking.watch.digest(session, ReminderDigestPayload.load(job.payload))

    registry.register(REMINDER_CHECK_JOB, reminder_check)
    registry.register(REMINDER_DIGEST_JOB, reminder_digest)
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

    async def calendar_backfill(job: ClaimedJob) -> None:
        CalendarBackfillPayload.load(job.payload)
        async with db.transaction() as session:
            queued = await queue_missing_events(session, now=utcnow())
        log.info("calendar back-fill queued events", extra={"count": queued})

    registry.register(CALENDAR_UPSERT_JOB, calendar_upsert)
    registry.register(CALENDAR_DELETE_JOB, calendar_delete)
    registry.register(CALENDAR_BACKFILL_JOB, calendar_backfill)
