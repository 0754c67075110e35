"""The booking domain's follow-ups table: which jobs each booking event starts (or stops).

Read the table in `booking_follow_ups()`: it is the whole answer to "what happens after Kimmie
approves?". Each row runs in the transaction that emitted the event, so a rolled-back change leaves
neither its event nor its jobs. Integrations do not go here: they subscribe to the process's
`FollowUps` in their wiring function (core/events.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.alerts import NOTIFY_ADMIN_JOB, notify_admin
from core.booking import texts
from core.booking.records import CONFIRMED, REQUESTED, customer_conversation
from core.db.models import Appointment
from core.events import Event, FollowUp, FollowUps
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import cancel_jobs, enqueue
from core.outbox import DELIVER_JOB, queue_outbound
from core.types import Author, Booking, OutboundMessage, QuickReply

log = logging.getLogger(__name__)

# Job kinds (handlers in core/booking/jobs.py).
EXPIRE_HOLD_JOB = "expire_hold"
REMINDER_JOB = "booking_reminder"
REBOOK_JOB = "booking_rebook_nudge"
CALENDAR_UPSERT_JOB = "calendar_upsert"
CALENDAR_DELETE_JOB = "calendar_delete"


# Their payloads, here beside the kinds: this module queues them, core/booking/jobs.py reads them.
class AppointmentPayload(JobPayload):
    appointment_id: int


@job_payload(EXPIRE_HOLD_JOB)
class ExpireHoldPayload(AppointmentPayload):
    pass


@job_payload(REMINDER_JOB)
class ReminderPayload(AppointmentPayload):
    pass


@job_payload(REBOOK_JOB)
class RebookPayload(AppointmentPayload):
    weeks: int | None = None  # 0 or missing: REBOOKING_WEEKS


@job_payload(CALENDAR_UPSERT_JOB)
class CalendarUpsertPayload(AppointmentPayload):
    pass


@job_payload(CALENDAR_DELETE_JOB)
class CalendarDeletePayload(AppointmentPayload):
    event_id: str | None = None  # None: the event was never written (the adapter looks it up)


def expire_key(appointment_id: int) -> str:
    return f"expire_hold:{appointment_id}"


def reminder_key(appointment_id: int) -> str:
    return f"reminder:{appointment_id}"


def rebook_key(appointment_id: int) -> str:
    return f"rebook:{appointment_id}"


@dataclass(frozen=True, slots=True)
class BookingChange:
    """What a booking event's follow-ups get in process (`Event.detail`): the row as changed, its DTO,
    and the buttons the customer's message offers."""

    appt: Appointment
    booking: Booking
    replies: tuple[QuickReply, ...] = ()
    rebook_weeks: int | None = None


@dataclass(frozen=True, slots=True)
class BookingEnv:
    tz: ZoneInfo
    now: Callable[[], datetime]
    reminder_hours_before: float
    calendar: bool  # a calendar is configured: confirmed bookings get events


def booking_facts(booking: Booking, tz: ZoneInfo) -> dict[str, Any]:
    """A booking as plain data for an event body: times in UTC and local, no secrets."""
    return {
        "id": booking.id,
        "status": booking.status.value,
        "client_id": booking.client_id,
        "service": {"code": booking.service_code, "name": booking.service_name},
        "pets": [{"id": i, "name": n} for i, n in zip(booking.pet_ids, booking.pet_names, strict=False)],
        "start": booking.start,
        "end": booking.end,
        "start_local": booking.start.astimezone(tz).isoformat(),
        "end_local": booking.end.astimezone(tz).isoformat(),
        "timezone": str(tz),
        "price_min_cents": booking.price_min_cents,
        "price_max_cents": booking.price_max_cents,
        "source_channel": booking.source_channel,
        "hold_expires_at": booking.hold_expires_at,
        "availability_verified": booking.availability_verified,
    }


def change_of(event: Event) -> BookingChange:
    if not isinstance(event.detail, BookingChange):
        raise TypeError(f"{event.type} was emitted without its BookingChange")
    return event.detail


async def tell_customer(
    session: AsyncSession, appt: Appointment, body: str, replies: Sequence[QuickReply] = ()
) -> bool:
    """Queue a message to the customer on the channel they booked from (else their latest one)."""
    conversation = await customer_conversation(session, appt.client_id, appt.source_channel)
    if conversation is None:
        log.warning("no conversation to tell the customer", extra={"appointment_id": appt.id})
        return False
    await queue_outbound(
        session,
        conversation_id=conversation.id,
        channel=conversation.channel,
        message=OutboundMessage(text=body, quick_replies=tuple(replies)),
        author=Author.SYSTEM,
    )
    return True


def _by(event: Event) -> str:
    return str(event.data.get("by") or "kimmie")


def booking_follow_ups(env: BookingEnv) -> FollowUps:
    """The table. Rows run in order; a row's condition (`when`) is about the event's facts (who did
    it, the booking's status), never about which method emitted it."""

    def by_kimmie(event: Event) -> bool:
        return _by(event) == "kimmie"

    def holding(event: Event) -> bool:
        appt = change_of(event).appt
        return appt.status == REQUESTED and appt.hold_expires_at is not None

    def confirmed(event: Event) -> bool:
        return change_of(event).appt.status == CONFIRMED

    def reminder_ahead(event: Event) -> bool:
        booking = change_of(event).booking
        start = booking.start - timedelta(hours=env.reminder_hours_before)
        # Booked inside the reminder window: the confirmation is the reminder.
        return booking.status.value == CONFIRMED and start > env.now()

    def had_calendar_event(event: Event) -> bool:
        return bool(event.data.get("was_confirmed") or change_of(event).appt.calendar_event_id)

    def moved(event: Event) -> bool:
        return event.type == events.BOOKING_RESCHEDULED

    # --- Kimmie's card and change lines (the notify_admin job) ---------------------------------
    async def card_request(session: AsyncSession, event: Event) -> None:
        await notify_admin(
            session, "booking_request", appointment_id=change_of(event).appt.id, event="requested"
        )

    def card_change(label: Callable[[Event], str]) -> FollowUp:
        async def run(session: AsyncSession, event: Event) -> None:
            await notify_admin(
                session, "booking_changed", appointment_id=change_of(event).appt.id, event=label(event)
            )

        return FollowUp(NOTIFY_ADMIN_JOB, run, "Kimmie's card")

    def fixed(label: str) -> Callable[[Event], str]:
        return lambda _event: label

    # --- The customer's message ------------------------------------------------------------------
    def customer(
        render: Callable[[BookingChange, Event], str], *, when: Callable[[Event], bool] | None = None
    ) -> FollowUp:
        async def run(session: AsyncSession, event: Event) -> None:
            change = change_of(event)
            await tell_customer(session, change.appt, render(change, event), change.replies)

        return FollowUp(DELIVER_JOB, run, "the customer's message", when=when)

    # --- The hold's expiry timer -------------------------------------------------------------------
    async def start_hold(session: AsyncSession, event: Event) -> None:
        appt = change_of(event).appt
        if moved(event):  # a moved request: its hold runs from now
            await cancel_jobs(session, idempotency_key=expire_key(appt.id))
        await enqueue(
            session,
            EXPIRE_HOLD_JOB,
            ExpireHoldPayload(appointment_id=appt.id).dump(),
            run_at=appt.hold_expires_at,
            idempotency_key=expire_key(appt.id),
        )

    async def stop_hold(session: AsyncSession, event: Event) -> None:
        await cancel_jobs(session, idempotency_key=expire_key(change_of(event).appt.id))

    # --- The reminder before the visit, and the nudge to book again after it -----------------------
    async def start_reminder(session: AsyncSession, event: Event) -> None:
        booking = change_of(event).booking
        await enqueue(
            session,
            REMINDER_JOB,
            ReminderPayload(appointment_id=booking.id).dump(),
            run_at=booking.start - timedelta(hours=env.reminder_hours_before),
            idempotency_key=reminder_key(booking.id),
        )

    async def stop_reminder(session: AsyncSession, event: Event) -> None:
        await cancel_jobs(session, idempotency_key=reminder_key(change_of(event).appt.id))

    async def rebook_nudge(session: AsyncSession, event: Event) -> None:
        change = change_of(event)
        weeks = change.rebook_weeks or 0
        await enqueue(
            session,
            REBOOK_JOB,
            RebookPayload(appointment_id=change.appt.id, weeks=weeks).dump(),
            run_at=max(change.appt.end_at, env.now()) + timedelta(weeks=weeks),
            idempotency_key=rebook_key(change.appt.id),
        )

    # --- Google Calendar ---------------------------------------------------------------------------
    async def calendar_write(session: AsyncSession, event: Event) -> None:
        appt = change_of(event).appt
        payload = CalendarUpsertPayload(appointment_id=appt.id)
        await enqueue(session, CALENDAR_UPSERT_JOB, payload.dump(), queue_key=f"calendar:{appt.id}")

    async def calendar_remove(session: AsyncSession, event: Event) -> None:
        appt = change_of(event).appt
        await enqueue(
            session,
            CALENDAR_DELETE_JOB,
            CalendarDeletePayload(appointment_id=appt.id, event_id=appt.calendar_event_id).dump(),
            queue_key=f"calendar:{appt.id}",
        )

    tz = env.tz
    hold = FollowUp(EXPIRE_HOLD_JOB, start_hold, "hold expiry", when=holding)
    unhold = FollowUp(EXPIRE_HOLD_JOB, stop_hold, "hold expiry", stops=True)
    remind = FollowUp(REMINDER_JOB, start_reminder, "reminder", when=reminder_ahead)
    unremind = FollowUp(REMINDER_JOB, stop_reminder, "reminder", stops=True)
    calendar: tuple[FollowUp, ...] = ()
    uncalendar: tuple[FollowUp, ...] = ()
    if env.calendar:
        calendar = (FollowUp(CALENDAR_UPSERT_JOB, calendar_write, "calendar event", when=confirmed),)
        uncalendar = (
            FollowUp(CALENDAR_DELETE_JOB, calendar_remove, "calendar event", when=had_calendar_event),
        )

    table: dict[str, tuple[FollowUp, ...]] = {
        events.BOOKING_REQUESTED: (hold, FollowUp(NOTIFY_ADMIN_JOB, card_request, "Kimmie's card")),
        events.BOOKING_CONFIRMED: (
            unhold,
            *calendar,
            remind,
            customer(lambda c, _e: texts.confirmed(c.booking, tz)),
            card_change(fixed("confirmed")),
        ),
        events.BOOKING_DECLINED: (
            unhold,
            customer(
                lambda c, e: texts.declined(
                    c.booking, tz, e.data.get("reason"), bool(e.data.get("alternatives"))
                )
            ),
            card_change(fixed("declined")),
        ),
        events.BOOKING_CANCELLED: (
            unhold,
            unremind,
            *uncalendar,
            customer(
                lambda c, e: texts.cancelled_by_salon(c.booking, tz, e.data.get("reason")), when=by_kimmie
            ),
            card_change(lambda e: f"cancelled_by_{_by(e)}"),
        ),
        events.BOOKING_RESCHEDULED: (
            hold,
            *calendar,
            unremind,
            remind,
            customer(lambda c, _e: texts.moved_by_salon(c.booking, tz), when=by_kimmie),
            card_change(lambda e: f"rescheduled_by_{_by(e)}"),
        ),
        events.BOOKING_COMPLETED: (
            unremind,
            FollowUp(REBOOK_JOB, rebook_nudge, "rebooking nudge"),
            card_change(fixed("completed")),
        ),
        events.BOOKING_NO_SHOW: (unremind, card_change(fixed("no_show"))),
        events.BOOKING_HOLD_EXPIRED: (
            customer(lambda c, _e: texts.expired(c.booking, tz)),
            card_change(fixed("expired")),
        ),
    }
    return FollowUps.of(table)
