"""DefaultBookingService: the `BookingService` contract (core/booking/api.py) on the database.

A facade over the domain's parts, each in its own module:
- `search.py`: free slots;  `guard.py`: the one slot check behind request, approve and reschedule;
- `lifecycle.py`: every status change, checked against `transitions.py`, each emitting its event;
- `followups.py`: the table of what each event starts (Kimmie's card, the customer's message,
  calendar, hold expiry, reminders, nudges);  `reminders.py`: the reminder and nudge job bodies;
- `records.py`: loading rows and the `Booking` DTO;  `texts.py`: every customer-facing string.

Every method runs in the caller's unit of work and never commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.booking import texts
from core.booking.api import BookingError, BusinessInfo, ServiceInfo, TimeOfDay
from core.booking.catalog import WEEKDAYS, read_rules
from core.booking.followups import (
    CALENDAR_DELETE_JOB,
    CALENDAR_UPSERT_JOB,
    EXPIRE_HOLD_JOB,
    REBOOK_JOB,
    REMINDER_JOB,
    BookingEnv,
    booking_follow_ups,
)
from core.booking.guard import CALENDAR_FAULT, SlotGuard
from core.booking.lifecycle import Lifecycle
from core.booking.occupancy import utc_span
from core.booking.quotes import PriceSpec, quote_pet, traits
from core.booking.reach_jobs import ReminderWatch
from core.booking.records import (
    LIVE,
    REQUESTED,
    appointment_query,
    customer_conversation,
    load_addons,
    load_appointment,
    load_service,
    to_booking,
)
from core.booking.reminders import Reminders, TemplateName
from core.booking.search import SlotSearch
from core.db.models import Appointment, Service, utcnow
from core.events import FollowUps
from core.ports import CalendarProvider
from core.reach import ReachPolicy
from core.settings import Settings
from core.types import AppointmentStatus, Booking, Channel, CoatType, Quote, SizeClass, Slot


class DefaultBookingService:
    def __init__(
        self,
        settings: Settings,
        calendar: CalendarProvider | None = None,
        *,
        now: Callable[[], datetime] = utcnow,
        reach: ReachPolicy | None = None,
    ) -> None:
        self.settings = settings
        # Which channels reach a customer at reminder time (core/reach.py), from what is configured.
        self.reach = reach or ReachPolicy()
        self.calendar = calendar
        self.now = now
        self.tz = settings.tz
        self.guard = SlotGuard(self.tz, calendar)
        self.watch = ReminderWatch(
            self.tz,
            self.reach,
            now=now,
            reminder_hours_before=settings.reminder_hours_before,
            fetch_wait=timedelta(minutes=settings.reminder_fetch_wait_min),
            digest_hour=settings.reminder_digest_hour,
        )
        self.follow_ups: FollowUps = booking_follow_ups(
            BookingEnv(
                tz=self.tz,
                now=now,
                reminder_hours_before=settings.reminder_hours_before,
                calendar=calendar is not None,
                reach=self.reach,
                schedule_digest=self.watch.schedule_digest,
            )
        )
        self.search = SlotSearch(self.tz, self.guard, now=now)
        self.lifecycle = Lifecycle(settings, self.guard, self.follow_ups, now=now)
        template = (
            TemplateName(settings.meta_utility_template, settings.meta_utility_template_language)
            if self.reach.templates
            else None
        )
        self.reminders = Reminders(self.tz, now=now, watch=self.watch, template=template)

    # --- catalog ----------------------------------------------------------------------------------
    async def business_info(self, session: AsyncSession) -> BusinessInfo:
        rules = await read_rules(session)
        lines = []
        for n, name in enumerate(WEEKDAYS):
            opening = rules.hours.get(n)
            if opening is None:
                lines.append(f"{name.title()} closed")
                continue
            line = f"{name.title()} {opening.start:%H:%M}-{opening.end:%H:%M}"
            breaks = rules.breaks.get(n, ())
            if breaks:
                line += " (break " + ", ".join(f"{b.start:%H:%M}-{b.end:%H:%M}" for b in breaks) + ")"
            lines.append(line)
        policies = list(rules.policies)
        today = self.now().astimezone(self.tz).date()
        upcoming = sorted(d for d in rules.closures if d >= today)
        if upcoming:
            policies.append(("closures", texts.closures([f"{d:%a %b} {d.day}" for d in upcoming[:8]])))
        return BusinessInfo(
            name=self.settings.business_name,
            address=self.settings.business_address,
            phone=self.settings.business_phone,
            timezone=self.settings.business_timezone,
            hours=tuple(lines),
            policies=tuple(policies),
        )

    async def list_services(self, session: AsyncSession) -> list[ServiceInfo]:
        rows = await session.execute(
            select(Service).where(Service.active.is_(True)).order_by(Service.sort_order, Service.id)
        )
        return [
            ServiceInfo(
                code=s.code,
                name=s.name,
                description=s.description,
                base_price_cents=s.base_price_cents,
                base_duration_min=s.base_duration_min,
                is_addon=s.is_addon,
            )
            for s in rows.scalars()
        ]

    async def quote(
        self,
        session: AsyncSession,
        *,
        service_code: str,
        breed: str | None = None,
        size_class: SizeClass | None = None,
        coat_type: CoatType | None = None,
        weight_kg: float | None = None,
        matted: bool = False,
        addon_codes: Sequence[str] = (),
    ) -> Quote:
        rules = await read_rules(session)
        service = await load_service(session, service_code)
        addons = await load_addons(session, addon_codes)
        pet = traits(rules, breed=breed, size_class=size_class, coat_type=coat_type, weight_kg=weight_kg)
        return quote_pet(rules, PriceSpec.of(service), addons, pet, matted=matted)

    # --- availability -----------------------------------------------------------------------------
    async def find_slots(
        self,
        session: AsyncSession,
        *,
        service_code: str,
        pet_ids: Sequence[int] = (),
        client_id: int | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
        time_of_day: TimeOfDay = "any",
        limit: int = 6,
        addon_codes: Sequence[str] = (),
    ) -> list[Slot]:
        return await self.search.find_slots(
            session,
            service_code=service_code,
            pet_ids=pet_ids,
            client_id=client_id,
            date_from=date_from,
            date_to=date_to,
            time_of_day=time_of_day,
            limit=limit,
            addon_codes=addon_codes,
        )

    # --- lifecycle (core/booking/lifecycle.py) ----------------------------------------------------
    async def request_booking(
        self,
        session: AsyncSession,
        *,
        client_id: int,
        service_code: str,
        pet_ids: Sequence[int],
        start: datetime,
        source_channel: Channel | None,
        addon_codes: Sequence[str] = (),
        notes: str | None = None,
    ) -> Booking:
        return await self.lifecycle.request(
            session,
            client_id=client_id,
            service_code=service_code,
            pet_ids=pet_ids,
            start=start,
            source_channel=source_channel,
            addon_codes=addon_codes,
            notes=notes,
        )

    async def request_alternative(
        self,
        session: AsyncSession,
        *,
        client_id: int,
        appointment_id: int,
        start: datetime,
        source_channel: Channel | None,
    ) -> Booking:
        return await self.lifecycle.request_alternative(
            session,
            client_id=client_id,
            appointment_id=appointment_id,
            start=start,
            source_channel=source_channel,
        )

    async def approve(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        return await self.lifecycle.approve(session, appointment_id=appointment_id)

    async def decline(
        self,
        session: AsyncSession,
        *,
        appointment_id: int,
        reason: str | None = None,
        alternatives: Sequence[Slot] = (),
        reason_code: str | None = None,
    ) -> Booking:
        return await self.lifecycle.decline(
            session,
            appointment_id=appointment_id,
            reason=reason,
            alternatives=alternatives,
            reason_code=reason_code,
        )

    async def restore(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        return await self.lifecycle.restore(session, appointment_id=appointment_id)

    async def cancel(
        self, session: AsyncSession, *, appointment_id: int, client_id: int | None, reason: str | None = None
    ) -> Booking:
        return await self.lifecycle.cancel(
            session, appointment_id=appointment_id, client_id=client_id, reason=reason
        )

    async def reschedule(
        self, session: AsyncSession, *, appointment_id: int, new_start: datetime, client_id: int | None
    ) -> Booking:
        return await self.lifecycle.reschedule(
            session, appointment_id=appointment_id, new_start=new_start, client_id=client_id
        )

    async def complete(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        return await self.lifecycle.complete(session, appointment_id=appointment_id)

    async def no_show(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        return await self.lifecycle.no_show(session, appointment_id=appointment_id)

    # --- reads ------------------------------------------------------------------------------------
    async def get_booking(self, session: AsyncSession, appointment_id: int) -> Booking:
        return to_booking(await load_appointment(session, appointment_id))

    async def my_appointments(
        self, session: AsyncSession, *, client_id: int, include_past: bool = False
    ) -> list[Booking]:
        query = appointment_query().where(Appointment.client_id == client_id)
        if not include_past:
            query = query.where(Appointment.status.in_(LIVE), Appointment.end_at > self.now())
        rows = await session.execute(query.order_by(Appointment.start_at))
        return [to_booking(a) for a in rows.scalars()]

    async def agenda(self, session: AsyncSession, *, day_from: date, day_to: date) -> list[Booking]:
        start, end = utc_span(day_from, day_to, self.tz)
        shown = (*LIVE, AppointmentStatus.COMPLETED.value, AppointmentStatus.NO_SHOW.value)
        rows = await session.execute(
            appointment_query()
            .where(Appointment.start_at >= start, Appointment.start_at < end, Appointment.status.in_(shown))
            .order_by(Appointment.start_at)
        )
        return [to_booking(a) for a in rows.scalars()]

    async def pending(self, session: AsyncSession) -> list[Booking]:
        rows = await session.execute(
            appointment_query().where(Appointment.status == REQUESTED).order_by(Appointment.start_at)
        )
        return [to_booking(a) for a in rows.scalars()]

    # --- job bodies (called by core/booking/jobs.py, each in its own transaction) -----------------
    async def expire_hold(self, session: AsyncSession, *, appointment_id: int) -> bool:
        return await self.lifecycle.expire_hold(session, appointment_id=appointment_id)

    async def send_reminder(self, session: AsyncSession, *, appointment_id: int) -> bool:
        return await self.reminders.send_reminder(session, appointment_id=appointment_id)

    async def send_rebooking_nudge(self, session: AsyncSession, *, appointment_id: int, weeks: int) -> bool:
        return await self.reminders.send_rebooking_nudge(session, appointment_id=appointment_id, weeks=weeks)

    async def set_calendar_event(self, session: AsyncSession, appointment_id: int, event_id: str) -> None:
        appt = await session.get(Appointment, appointment_id)
        if appt is not None:
            appt.calendar_event_id = event_id

    async def _service(self, session: AsyncSession, code: str) -> Service:
        """The active (non-add-on) service by code (tests build rows with it)."""
        return await load_service(session, code)


__all__ = [
    "CALENDAR_DELETE_JOB",
    "CALENDAR_FAULT",
    "CALENDAR_UPSERT_JOB",
    "EXPIRE_HOLD_JOB",
    "REBOOK_JOB",
    "REMINDER_JOB",
    "BookingError",
    "DefaultBookingService",
    "customer_conversation",
]
