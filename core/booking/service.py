"""DefaultBookingService: the `BookingService` contract (core/booking/api.py) on the database.

Every method runs in the caller's unit of work and never commits. Writes that must not race (a new
request, an approval, a move) first take a per-local-day lock: `pg_advisory_xact_lock` on PostgreSQL
(released at commit, so the next holder's queries see the winner's row); on SQLite the writes are
already serialized by `Database.transaction()`. The exclusion constraint on confirmed appointments
(PostgreSQL) is the last line of defence; hitting it surfaces as `SlotUnavailableError`.

Follow-ups (Kimmie's notification, the customer's message, calendar writes, the hold expiry, the
reminder and the rebooking nudge) are jobs enqueued in the same session.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Float, Select, and_, cast, func, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core.alerts import notify_admin, raise_alert, resolve_alert
from core.booking import payloads, texts
from core.booking.api import (
    BookingError,
    BusinessInfo,
    InvalidTransitionError,
    NotFoundError,
    PolicyError,
    ServiceInfo,
    SlotUnavailableError,
    TimeOfDay,
)
from core.booking.availability import (
    Seconds,
    Span,
    day_windows,
    free_starts_s,
    from_seconds,
    inside_windows,
    local_to_utc,
    merge_s,
    overlaps_any,
    spread,
    subtract,
)
from core.booking.catalog import WEEKDAYS, Rules, read_rules
from core.booking.quotes import PetTraits, PriceSpec, breed_hint, combine, quote_pet, traits
from core.db.database import dialect_name
from core.db.models import Appointment, AppointmentPet, Conversation, Pet, Service, utcnow
from core.jobs.queue import cancel_jobs, enqueue
from core.outbox import queue_outbound
from core.ports import CalendarProvider, CalendarUnavailableError
from core.settings import Settings
from core.types import (
    AppointmentStatus,
    Author,
    Booking,
    Channel,
    CoatType,
    OutboundMessage,
    QuickReply,
    Quote,
    SizeClass,
    Slot,
)

log = logging.getLogger(__name__)

# Job kinds (handlers in core/booking/jobs.py).
EXPIRE_HOLD_JOB = "expire_hold"
REMINDER_JOB = "booking_reminder"
REBOOK_JOB = "booking_rebook_nudge"
CALENDAR_UPSERT_JOB = "calendar_upsert"
CALENDAR_DELETE_JOB = "calendar_delete"

CALENDAR_FAULT = "calendar_unavailable"
SEARCH_CHUNK_DAYS = 14
OUTSIDE_HOURS = "That time is outside Kimmie's working hours. Please pick an offered slot."
_LOCK_NAMESPACE = 0x4348  # "CH": the first key of the two-int advisory lock; the second is the day
_REQUESTED = AppointmentStatus.REQUESTED.value
_CONFIRMED = AppointmentStatus.CONFIRMED.value
_LIVE = (_REQUESTED, _CONFIRMED)


def expire_key(appointment_id: int) -> str:
    return f"expire_hold:{appointment_id}"


def reminder_key(appointment_id: int) -> str:
    return f"reminder:{appointment_id}"


def rebook_key(appointment_id: int) -> str:
    return f"rebook:{appointment_id}"


@dataclass(slots=True)
class Occupancy:
    """Live appointments in a time range: their spans and what they use up per local day."""

    spans: list[Span] = field(default_factory=list)
    seconds: list[Seconds] = field(default_factory=list)  # the same spans as POSIX seconds (find_slots)
    per_day: Counter[date] = field(default_factory=Counter)
    sizes_per_day: dict[date, Counter[str]] = field(default_factory=dict)


class DefaultBookingService:
    def __init__(
        self,
        settings: Settings,
        calendar: CalendarProvider | None = None,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.calendar = calendar
        self.now = now
        self.tz = settings.tz
        self._calendar_down = False

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
            policies.append(
                ("closures", "Closed on " + ", ".join(f"{d:%a %b} {d.day}" for d in upcoming[:8]))
            )
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
        service = await self._service(session, service_code)
        addons = await self._addons(session, addon_codes)
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
        rules = await read_rules(session)
        now = self.now()
        service = await self._service(session, service_code)
        addons = await self._addons(session, addon_codes)
        pets = await self._pets(session, pet_ids, client_id)
        quote = self._quote_pets(rules, service, addons, pets)
        duration = timedelta(minutes=quote.duration_min)
        sizes = self._size_counts(rules, pets)

        today = now.astimezone(self.tz).date()
        last_allowed = today + timedelta(days=rules.horizon_days)
        first = max(date_from or today, today)
        last = min(date_to or last_allowed, last_allowed)
        if first > last:
            return []
        range_start, range_end = self._utc_span(first, last)
        # Calendar once for the whole range (one cached freeBusy call), before any day is computed.
        calendar_busy, verified = await self._calendar_busy(session, range_start, range_end)
        calendar_s = [(s.timestamp(), e.timestamp()) for s, e in calendar_busy]
        earliest = (now + timedelta(hours=rules.min_notice_hours)).timestamp()
        starts: list[datetime] = []
        days_found: set[date] = set()
        chunk_first = first
        # Appointments are read a few weeks at a time: a customer's "when can you fit us in?" is
        # answered from the first weeks, not by reading the whole horizon. Stopping once `limit`
        # different days have slots gives exactly what `spread` would pick from the whole horizon.
        # A long list (Kimmie's "show me everything") reads the whole range at once instead.
        chunk_days = SEARCH_CHUNK_DAYS if limit <= SEARCH_CHUNK_DAYS else (last - first).days + 1
        while chunk_first <= last and len(days_found) < limit:
            chunk_last = min(chunk_first + timedelta(days=chunk_days - 1), last)
            chunk = await self._free_in(
                session,
                rules,
                chunk_first,
                chunk_last,
                sizes=sizes,
                now=now,
                duration=duration,
                calendar_s=calendar_s,
                earliest=earliest,
            )
            if time_of_day in ("morning", "afternoon"):
                want_morning = time_of_day == "morning"
                chunk = [t for t in chunk if (t.astimezone(self.tz).hour < 12) == want_morning]
            starts.extend(chunk)
            days_found.update(t.astimezone(self.tz).date() for t in chunk)
            chunk_first = chunk_last + timedelta(days=1)
        return [Slot(start=t, end=t + duration, verified=verified) for t in spread(starts, self.tz, limit)]

    async def _free_in(
        self,
        session: AsyncSession,
        rules: Rules,
        first: date,
        last: date,
        *,
        sizes: Counter[str],
        now: datetime,
        duration: timedelta,
        calendar_s: list[Seconds],
        earliest: float,
    ) -> list[datetime]:
        """Every free start between two local dates (inclusive)."""
        buffer = timedelta(minutes=rules.buffer_min)
        range_start, range_end = self._utc_span(first, last)
        occupancy = await self._occupancy(
            session,
            range_start - buffer,
            range_end + buffer,
            rules=rules,
            now=now,
            sizes_needed=sizes,
            as_seconds=True,
        )
        windows: list[Seconds] = []
        day = first
        while day <= last:
            if self._day_has_room(rules, occupancy, day, sizes):
                windows.extend((s.timestamp(), e.timestamp()) for s, e in day_windows(rules, day, self.tz))
            day += timedelta(days=1)
        if not windows:
            return []
        # The hot path works in POSIX seconds: sorting and sweeping floats, not datetimes.
        busy = merge_s([*occupancy.seconds, *calendar_s], buffer.total_seconds())
        found = free_starts_s(
            windows,
            busy,
            duration=duration.total_seconds(),
            step=rules.slot_step_min * 60.0,
            earliest=earliest,
        )
        return [from_seconds(t) for t in found]

    # --- lifecycle --------------------------------------------------------------------------------
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
        rules = await read_rules(session)
        now = self.now()
        start = self._utc(start)
        service = await self._service(session, service_code)
        addons = await self._addons(session, addon_codes)
        pets = await self._pets(session, pet_ids, client_id)
        quote = self._quote_pets(rules, service, addons, pets)
        end = start + timedelta(minutes=quote.duration_min)
        self._check_notice_and_horizon(rules, start, now)
        day = start.astimezone(self.tz).date()
        if not inside_windows(start, end, day_windows(rules, day, self.tz)):
            raise SlotUnavailableError(
                "That time is outside Kimmie's working hours. Please pick an offered slot."
            )
        buffer = timedelta(minutes=rules.buffer_min)
        # Calendar first (a network call, cached): never while holding the day lock.
        calendar_busy, verified = await self._calendar_busy(session, start - buffer, end + buffer)
        if overlaps_any(start, end, calendar_busy, buffer):
            raise SlotUnavailableError("Sorry, that time was just taken. Please pick another slot.")

        await self._lock_days(session, [day])
        sizes = self._size_counts(rules, pets)
        day_start, day_end = self._utc_span(day, day)
        occupancy = await self._occupancy(
            session,
            min(day_start, start - buffer),
            max(day_end, end + buffer),
            rules=rules,
            now=now,
            sizes_needed=sizes,
        )
        if overlaps_any(start, end, occupancy.spans, buffer):
            raise SlotUnavailableError("Sorry, that time was just taken. Please pick another slot.")
        if not self._day_has_room(rules, occupancy, day, sizes):
            raise PolicyError("Kimmie's schedule is full for that day. Please pick another day.")

        hold_until = min(now + timedelta(hours=self._hold_hours(rules)), start)
        appt = Appointment(
            client_id=client_id,
            service_id=service.id,
            start_at=start,
            end_at=end,
            status=_REQUESTED,
            hold_expires_at=hold_until,
            source_channel=source_channel.value if source_channel else None,
            addon_codes=[a.code for a in addons],
            price_min_cents=quote.price_min_cents,
            price_max_cents=quote.price_max_cents,
            availability_verified=verified,
            notes=notes,
        )
        session.add(appt)
        await session.flush()
        if pets:
            await session.execute(
                insert(AppointmentPet), [{"appointment_id": appt.id, "pet_id": p.id} for p in pets]
            )
        await enqueue(
            session,
            EXPIRE_HOLD_JOB,
            {"appointment_id": appt.id},
            run_at=hold_until,
            idempotency_key=expire_key(appt.id),
        )
        await notify_admin(session, "booking_request", appointment_id=appt.id, event="requested")
        booking = self._to_booking(appt, service=service, pets=pets)
        log.info("booking requested", extra={"appointment_id": appt.id, "verified": verified})
        return booking

    async def request_alternative(
        self,
        session: AsyncSession,
        *,
        client_id: int,
        appointment_id: int,
        start: datetime,
        source_channel: Channel | None,
    ) -> Booking:
        """A new request like an earlier one (same service, pets, add-ons) at another time: what the
        customer's tap on an alternative offered with a decline (payload "ALT:...") asks for."""
        old = await self._appointment(session, appointment_id)
        if old.client_id != client_id:
            raise NotFoundError("I can't find that appointment.")
        return await self.request_booking(
            session,
            client_id=client_id,
            service_code=old.service.code,
            pet_ids=[p.id for p in old.pets],
            start=start,
            source_channel=source_channel or (Channel(old.source_channel) if old.source_channel else None),
            addon_codes=list(old.addon_codes or []),
            notes=old.notes,
        )

    async def get_booking(self, session: AsyncSession, appointment_id: int) -> Booking:
        return self._to_booking(await self._appointment(session, appointment_id))

    async def my_appointments(
        self, session: AsyncSession, *, client_id: int, include_past: bool = False
    ) -> list[Booking]:
        query = self._query().where(Appointment.client_id == client_id)
        if not include_past:
            query = query.where(Appointment.status.in_(_LIVE), Appointment.end_at > self.now())
        rows = await session.execute(query.order_by(Appointment.start_at))
        return [self._to_booking(a) for a in rows.scalars()]

    async def agenda(self, session: AsyncSession, *, day_from: date, day_to: date) -> list[Booking]:
        start, end = self._utc_span(day_from, day_to)
        shown = (*_LIVE, AppointmentStatus.COMPLETED.value, AppointmentStatus.NO_SHOW.value)
        rows = await session.execute(
            self._query()
            .where(Appointment.start_at >= start, Appointment.start_at < end, Appointment.status.in_(shown))
            .order_by(Appointment.start_at)
        )
        return [self._to_booking(a) for a in rows.scalars()]

    async def pending(self, session: AsyncSession) -> list[Booking]:
        rows = await session.execute(
            self._query().where(Appointment.status == _REQUESTED).order_by(Appointment.start_at)
        )
        return [self._to_booking(a) for a in rows.scalars()]

    async def approve(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        # A first, unlocked read: the Calendar call (usually a cache hit) must not hold row locks.
        appt = await self._appointment(session, appointment_id)
        self._expect(appt, (_REQUESTED,), "approve")
        when = (appt.start_at, appt.end_at)
        now = self.now()
        if appt.start_at <= now:
            raise PolicyError("That appointment time has already passed.")
        rules = await read_rules(session)
        buffer = timedelta(minutes=rules.buffer_min)
        calendar_busy, verified = await self._calendar_busy(session, when[0] - buffer, when[1] + buffer)
        if overlaps_any(when[0], when[1], calendar_busy, buffer):
            raise SlotUnavailableError(
                "Your Google Calendar is busy at that time: the request was not approved."
            )
        await self._lock_days(session, [when[0].astimezone(self.tz).date()])
        appt = await self._appointment(session, appointment_id, for_update=True)
        self._expect(appt, (_REQUESTED,), "approve")
        if (appt.start_at, appt.end_at) != when:
            raise InvalidTransitionError("The request was changed meanwhile: please look at it again.")
        clash = await self._confirmed_clash(session, appt.start_at, appt.end_at, buffer, exclude=appt.id)
        if clash is not None:
            raise SlotUnavailableError(
                f"That time overlaps a confirmed appointment (#{clash}): the request was not approved."
            )
        appt.status = _CONFIRMED
        appt.decided_at = now
        appt.hold_expires_at = None
        appt.availability_verified = verified  # checked against the calendar just now (or not)
        await self._flush_confirmed(session)
        await cancel_jobs(session, idempotency_key=expire_key(appt.id))
        booking = self._to_booking(appt)
        await self._calendar_upsert(session, appt.id)
        await self._schedule_reminder(session, booking)
        await self._tell_customer(session, appt, texts.confirmed(booking, self.tz))
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event="confirmed")
        return booking

    async def decline(
        self,
        session: AsyncSession,
        *,
        appointment_id: int,
        reason: str | None = None,
        alternatives: Sequence[Slot] = (),
    ) -> Booking:
        appt = await self._appointment(session, appointment_id, for_update=True)
        self._expect(appt, (_REQUESTED,), "decline")
        appt.status = AppointmentStatus.DECLINED.value
        appt.decided_at = self.now()
        appt.decision_reason = reason
        appt.hold_expires_at = None
        await session.flush()
        await cancel_jobs(session, idempotency_key=expire_key(appt.id))
        booking = self._to_booking(appt)
        replies = tuple(
            QuickReply(
                title=texts.short_when(s.start, self.tz), payload=payloads.alternative(appt.id, s.start)
            )
            for s in list(alternatives)[:10]
        )
        if not replies:
            replies = (QuickReply(title="Pick another time", payload=payloads.BOOK),)
        await self._tell_customer(
            session, appt, texts.declined(booking, self.tz, reason, bool(alternatives)), replies
        )
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event="declined")
        return booking

    async def cancel(
        self, session: AsyncSession, *, appointment_id: int, client_id: int | None, reason: str | None = None
    ) -> Booking:
        appt = await self._appointment(session, appointment_id, for_update=True)
        self._owned(appt, client_id)
        self._expect(appt, _LIVE, "cancel")
        rules = await read_rules(session)
        was_confirmed = appt.status == _CONFIRMED
        if client_id is not None and was_confirmed:
            self._check_change_notice(rules, appt)
        appt.status = AppointmentStatus.CANCELLED.value
        appt.decision_reason = reason
        appt.decided_at = self.now()
        appt.hold_expires_at = None
        await session.flush()
        await cancel_jobs(session, idempotency_key=expire_key(appt.id))
        await cancel_jobs(session, idempotency_key=reminder_key(appt.id))
        if was_confirmed or appt.calendar_event_id:
            await self._calendar_delete(session, appt)
        booking = self._to_booking(appt)
        by = "customer" if client_id is not None else "kimmie"
        if client_id is None:
            await self._tell_customer(
                session,
                appt,
                texts.cancelled_by_salon(booking, self.tz, reason),
                (QuickReply(title="Book another time", payload=payloads.BOOK),),
            )
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event=f"cancelled_by_{by}")
        return booking

    async def reschedule(
        self, session: AsyncSession, *, appointment_id: int, new_start: datetime, client_id: int | None
    ) -> Booking:
        appt = await self._appointment(session, appointment_id)  # unlocked: Calendar is called below
        self._owned(appt, client_id)
        self._expect(appt, _LIVE, "reschedule")
        before = (appt.status, appt.start_at, appt.end_at)
        rules = await read_rules(session)
        now = self.now()
        by_customer = client_id is not None
        new_start = self._utc(new_start)
        new_end = new_start + (appt.end_at - appt.start_at)
        buffer = timedelta(minutes=rules.buffer_min)
        old_day = appt.start_at.astimezone(self.tz).date()
        new_day = new_start.astimezone(self.tz).date()
        if by_customer:
            if appt.status == _CONFIRMED:
                self._check_change_notice(rules, appt)
            self._check_notice_and_horizon(rules, new_start, now)
            if not inside_windows(new_start, new_end, day_windows(rules, new_day, self.tz)):
                raise SlotUnavailableError(OUTSIDE_HOURS)
        elif new_start <= now:
            raise PolicyError("The new time is in the past.")
        calendar_busy, verified = await self._calendar_busy(session, new_start - buffer, new_end + buffer)
        if appt.calendar_event_id or appt.status == _CONFIRMED:
            calendar_busy = subtract(calendar_busy, (appt.start_at, appt.end_at))  # its own event
        if by_customer and overlaps_any(new_start, new_end, calendar_busy, buffer):
            raise SlotUnavailableError("Sorry, that time is taken. Please pick another slot.")

        await self._lock_days(session, [old_day, new_day])
        appt = await self._appointment(session, appointment_id, for_update=True)
        if (appt.status, appt.start_at, appt.end_at) != before:
            raise InvalidTransitionError("The appointment was changed meanwhile: please look at it again.")
        pets = list(appt.pets)
        sizes = self._size_counts(rules, pets)
        day_start, day_end = self._utc_span(new_day, new_day)
        occupancy = await self._occupancy(
            session,
            min(day_start, new_start - buffer),
            max(day_end, new_end + buffer),
            rules=rules,
            now=now,
            sizes_needed=sizes if by_customer and new_day != old_day else Counter(),
            exclude=appt.id,
        )
        if overlaps_any(new_start, new_end, occupancy.spans, buffer):
            raise SlotUnavailableError("Sorry, that time is taken. Please pick another slot.")
        if by_customer and new_day != old_day and not self._day_has_room(rules, occupancy, new_day, sizes):
            raise PolicyError("Kimmie's schedule is full for that day. Please pick another day.")

        appt.start_at, appt.end_at = new_start, new_end
        appt.availability_verified = verified
        if appt.status == _REQUESTED:
            appt.hold_expires_at = min(now + timedelta(hours=self._hold_hours(rules)), new_start)
            await cancel_jobs(session, idempotency_key=expire_key(appt.id))
            await enqueue(
                session,
                EXPIRE_HOLD_JOB,
                {"appointment_id": appt.id},
                run_at=appt.hold_expires_at,
                idempotency_key=expire_key(appt.id),
            )
            await session.flush()
        else:
            await self._flush_confirmed(session)
            await self._calendar_upsert(session, appt.id)
        booking = self._to_booking(appt)
        await cancel_jobs(session, idempotency_key=reminder_key(appt.id))
        if appt.status == _CONFIRMED:
            await self._schedule_reminder(session, booking)
        if not by_customer:
            await self._tell_customer(session, appt, texts.moved_by_salon(booking, self.tz))
        by = "customer" if by_customer else "kimmie"
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event=f"rescheduled_by_{by}")
        return booking

    async def complete(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        appt = await self._appointment(session, appointment_id, for_update=True)
        self._expect(appt, (_CONFIRMED,), "complete")
        appt.status = AppointmentStatus.COMPLETED.value
        for pet in appt.pets:
            if pet.last_groomed_at is None or pet.last_groomed_at < appt.end_at:
                pet.last_groomed_at = appt.end_at
        await session.flush()
        await cancel_jobs(session, idempotency_key=reminder_key(appt.id))
        rules = await read_rules(session)
        weeks = self._cadence_weeks(rules, list(appt.pets))
        await enqueue(
            session,
            REBOOK_JOB,
            {"appointment_id": appt.id, "weeks": weeks},
            run_at=max(appt.end_at, self.now()) + timedelta(weeks=weeks),
            idempotency_key=rebook_key(appt.id),
        )
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event="completed")
        return self._to_booking(appt)

    async def no_show(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        appt = await self._appointment(session, appointment_id, for_update=True)
        self._expect(appt, (_CONFIRMED,), "mark as no-show")
        appt.status = AppointmentStatus.NO_SHOW.value
        await session.flush()
        await cancel_jobs(session, idempotency_key=reminder_key(appt.id))
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event="no_show")
        return self._to_booking(appt)

    # --- job bodies (called by core/booking/jobs.py, each in its own transaction) -----------------
    async def expire_hold(self, session: AsyncSession, *, appointment_id: int) -> bool:
        """Release a request whose hold ran out. Returns True when it expired it."""
        appt = await self._appointment(session, appointment_id, for_update=True, missing_ok=True)
        if appt is None or appt.status != _REQUESTED:
            return False
        if appt.hold_expires_at is not None and appt.hold_expires_at > self.now():
            return False  # the hold was extended (the request moved); its new job will come
        appt.status = AppointmentStatus.EXPIRED.value
        appt.decided_at = self.now()
        await session.flush()
        booking = self._to_booking(appt)
        await self._tell_customer(
            session,
            appt,
            texts.expired(booking, self.tz),
            (QuickReply(title="Pick another time", payload=payloads.BOOK),),
        )
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event="expired")
        return True

    async def send_reminder(self, session: AsyncSession, *, appointment_id: int) -> bool:
        appt = await self._appointment(session, appointment_id, missing_ok=True)
        if appt is None or appt.status != _CONFIRMED or appt.start_at <= self.now():
            return False
        booking = self._to_booking(appt)
        replies = (
            QuickReply(title="Confirm", payload=payloads.appointment_action(payloads.CONFIRM, appt.id)),
            QuickReply(title="Reschedule", payload=payloads.appointment_action(payloads.MOVE, appt.id)),
            QuickReply(title="Cancel", payload=payloads.appointment_action(payloads.CANCEL, appt.id)),
        )
        return await self._tell_customer(session, appt, texts.reminder(booking, self.tz), replies)

    async def send_rebooking_nudge(self, session: AsyncSession, *, appointment_id: int, weeks: int) -> bool:
        appt = await self._appointment(session, appointment_id, missing_ok=True)
        if appt is None:
            return False
        upcoming = await session.scalar(
            select(Appointment.id)
            .where(
                Appointment.client_id == appt.client_id,
                Appointment.status.in_(_LIVE),
                Appointment.start_at > self.now(),
            )
            .limit(1)
        )
        if upcoming is not None:
            return False  # already booked again: no nudge
        booking = self._to_booking(appt)
        return await self._tell_customer(
            session,
            appt,
            texts.rebooking(texts.pets(booking), weeks),
            (QuickReply(title="Book now", payload=payloads.BOOK),),
        )

    async def set_calendar_event(self, session: AsyncSession, appointment_id: int, event_id: str) -> None:
        appt = await session.get(Appointment, appointment_id)
        if appt is not None:
            appt.calendar_event_id = event_id

    # --- helpers ----------------------------------------------------------------------------------
    def _query(self) -> Select[Appointment]:
        return select(Appointment).options(selectinload(Appointment.pets), selectinload(Appointment.service))

    async def _appointment(
        self,
        session: AsyncSession,
        appointment_id: int,
        *,
        for_update: bool = False,
        missing_ok: bool = False,
    ) -> Appointment:
        query = self._query().where(Appointment.id == appointment_id)
        if for_update and dialect_name(session) == "postgresql":
            query = query.with_for_update(of=Appointment)
        query = query.execution_options(populate_existing=True)
        appt: Appointment | None = (await session.execute(query)).scalar_one_or_none()
        if appt is None:
            if missing_ok:
                return None  # type: ignore[return-value]
            raise NotFoundError("I can't find that appointment.")
        return appt

    async def _service(self, session: AsyncSession, code: str) -> Service:
        row = (
            await session.execute(
                select(Service).where(
                    Service.code == code, Service.active.is_(True), Service.is_addon.is_(False)
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"There is no service called {code!r}.")
        return row

    async def _addons(self, session: AsyncSession, codes: Sequence[str]) -> list[PriceSpec]:
        if not codes:
            return []
        rows = await session.execute(
            select(Service).where(
                Service.code.in_(list(codes)), Service.active.is_(True), Service.is_addon.is_(True)
            )
        )
        found = {s.code: PriceSpec.of(s) for s in rows.scalars()}
        missing = [c for c in codes if c not in found]
        if missing:
            raise NotFoundError(f"There is no add-on called {missing[0]!r}.")
        return [found[c] for c in dict.fromkeys(codes)]

    async def _pets(self, session: AsyncSession, pet_ids: Sequence[int], client_id: int | None) -> list[Pet]:
        if not pet_ids:
            return []
        query = select(Pet).where(Pet.id.in_(list(pet_ids)))
        if client_id is not None:
            query = query.where(Pet.client_id == client_id)
        pets = list((await session.execute(query.order_by(Pet.id))).scalars())
        if len(pets) != len(set(pet_ids)):
            raise NotFoundError("I can't find that pet on your profile.")
        return pets

    @staticmethod
    def _pet_traits(rules: Rules, pet: Pet) -> PetTraits:
        return traits(
            rules,
            breed=pet.breed,
            size_class=SizeClass(pet.size_class) if pet.size_class else None,
            coat_type=CoatType(pet.coat_type) if pet.coat_type else None,
            weight_kg=pet.weight_kg,
        )

    def _quote_pets(self, rules: Rules, service: Service, addons: list[PriceSpec], pets: list[Pet]) -> Quote:
        spec = PriceSpec.of(service)
        if not pets:
            return quote_pet(rules, spec, addons, PetTraits(None, None), matted=False)
        # One groomer: several pets are done back to back, so durations and prices add up.
        return combine(
            [quote_pet(rules, spec, addons, self._pet_traits(rules, p), matted=False) for p in pets]
        )

    def _size_counts(self, rules: Rules, pets: Iterable[Pet]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for pet in pets:
            size = self._pet_traits(rules, pet).size
            if size is not None and size.value in rules.max_pets_per_day_by_size:
                counts[size.value] += 1
        return counts

    def _cadence_weeks(self, rules: Rules, pets: list[Pet]) -> int:
        weeks = [
            rules.rebooking_weeks_by_coat[t.coat.value]
            for t in (self._pet_traits(rules, p) for p in pets)
            if t.coat is not None and t.coat.value in rules.rebooking_weeks_by_coat
        ]
        return min(weeks) if weeks else (rules.rebooking_weeks or self.settings.rebooking_weeks)

    def _hold_hours(self, rules: Rules) -> float:
        return rules.hold_hours or self.settings.booking_hold_hours

    def _live_condition(self, now: datetime):  # type: ignore[no-untyped-def]
        """Confirmed, or requested with a hold that has not run out (its expiry job may lag)."""
        return or_(
            Appointment.status == _CONFIRMED,
            and_(
                Appointment.status == _REQUESTED,
                or_(Appointment.hold_expires_at.is_(None), Appointment.hold_expires_at > now),
            ),
        )

    def _utc_span(self, first: date, last: date) -> tuple[datetime, datetime]:
        """From local midnight of `first` to local midnight after `last`, in UTC (DST-aware)."""
        return local_to_utc(first, time(0), self.tz), local_to_utc(last + timedelta(days=1), time(0), self.tz)

    async def _occupancy(
        self,
        session: AsyncSession,
        start: datetime,
        end: datetime,
        *,
        rules: Rules,
        now: datetime,
        sizes_needed: Counter[str],
        exclude: int | None = None,
        as_seconds: bool = False,
    ) -> Occupancy:
        conditions = [
            Appointment.status.in_(_LIVE),
            Appointment.start_at < end,
            Appointment.end_at > start,
            self._live_condition(now),
        ]
        if exclude is not None:
            conditions.append(Appointment.id != exclude)
        occupancy = Occupancy()
        day_of = self._local_day_lookup(start, end)
        count_days = rules.max_appointments_per_day is not None
        # Core-level execution: thousands of rows over a 60-day horizon, no ORM identity map needed.
        conn = await session.connection()
        if not sizes_needed and as_seconds:
            if dialect_name(session) == "postgresql":
                # Epoch seconds straight from the server: no datetime objects for the hot path.
                columns = (
                    cast(func.extract("epoch", Appointment.start_at), Float),
                    cast(func.extract("epoch", Appointment.end_at), Float),
                )
                result = (await conn.execute(select(*columns).where(*conditions))).all()
                occupancy.seconds = [(r[0], r[1]) for r in result]
            else:
                result = (
                    await conn.execute(select(Appointment.start_at, Appointment.end_at).where(*conditions))
                ).all()
                occupancy.seconds = [(r[0].timestamp(), r[1].timestamp()) for r in result]
            if count_days:
                days, edges = self._local_day_edges(start, end)
                for begin, _ in occupancy.seconds:
                    n = bisect_right(edges, begin) - 1
                    occupancy.per_day[days[n] if 0 <= n < len(days) else from_seconds(begin).date()] += 1
            return occupancy
        if not sizes_needed:
            rows = (
                await conn.execute(select(Appointment.start_at, Appointment.end_at).where(*conditions))
            ).all()
            spans = occupancy.spans
            for s, e in rows:
                spans.append((s, e))
            if count_days:
                for s, _ in spans:
                    occupancy.per_day[day_of(s)] += 1
            return occupancy
        rows2_result = await conn.execute(
            select(
                Appointment.id,
                Appointment.start_at,
                Appointment.end_at,
                Pet.size_class,
                Pet.breed,
                Pet.weight_kg,
            )
            .outerjoin(AppointmentPet, AppointmentPet.appointment_id == Appointment.id)
            .outerjoin(Pet, Pet.id == AppointmentPet.pet_id)
            .where(*conditions)
        )
        rows2 = rows2_result.all()
        seen: set[int] = set()
        hints: dict[str | None, SizeClass | None] = {}
        for appt_id, s, e, size_class, breed, weight in rows2:
            day = day_of(s)
            if appt_id not in seen:
                seen.add(appt_id)
                occupancy.spans.append((s, e))
                if as_seconds:
                    occupancy.seconds.append((s.timestamp(), e.timestamp()))
                occupancy.per_day[day] += 1
            size = size_class
            if size is None and (breed or weight):
                if breed not in hints:
                    hints[breed] = breed_hint(rules, breed)[0]
                t = traits(rules, breed=None, size_class=hints[breed], coat_type=None, weight_kg=weight)
                size = t.size.value if t.size else None
            if size is not None:
                occupancy.sizes_per_day.setdefault(day, Counter())[size] += 1
        return occupancy

    def _local_day_edges(self, start: datetime, end: datetime) -> tuple[list[date], list[float]]:
        """Local dates around [start, end) and the POSIX second each one begins (sorted)."""
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date() + timedelta(days=1)
        days: list[date] = []
        edges: list[float] = []
        while day <= last:
            days.append(day)
            edges.append(local_to_utc(day, time(0), self.tz).timestamp())
            day += timedelta(days=1)
        return days, edges

    def _local_day_lookup(self, start: datetime, end: datetime) -> Callable[[datetime], date]:
        """Local business date of a UTC instant in [start, end) by bisecting precomputed local
        midnights: one zone conversion per day instead of one per appointment."""
        days, edges = self._local_day_edges(start, end)

        def day_of(instant: datetime) -> date:
            n = bisect_right(edges, instant.timestamp()) - 1
            return days[n] if 0 <= n < len(days) else instant.astimezone(self.tz).date()

        return day_of

    @staticmethod
    def _day_has_room(rules: Rules, occupancy: Occupancy, day: date, sizes: Counter[str]) -> bool:
        if (
            rules.max_appointments_per_day is not None
            and occupancy.per_day[day] >= rules.max_appointments_per_day
        ):
            return False
        used = occupancy.sizes_per_day.get(day, Counter())
        for size, n in sizes.items():
            limit = rules.max_pets_per_day_by_size.get(size)
            if limit is not None and used[size] + n > limit:
                return False
        return True

    async def _confirmed_clash(
        self, session: AsyncSession, start: datetime, end: datetime, buffer: timedelta, *, exclude: int
    ) -> int | None:
        return await session.scalar(
            select(Appointment.id)
            .where(
                Appointment.status == _CONFIRMED,
                Appointment.id != exclude,
                Appointment.start_at < end + buffer,
                Appointment.end_at > start - buffer,
            )
            .limit(1)
        )

    async def _flush_confirmed(self, session: AsyncSession) -> None:
        """Flush a confirmed appointment's times; the PostgreSQL exclusion constraint is the last word."""
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            if "ex_appointment_no_overlap_confirmed" in str(exc.orig):
                raise SlotUnavailableError("That time overlaps a confirmed appointment.") from None
            raise

    async def _lock_days(self, session: AsyncSession, days: Iterable[date]) -> None:
        if dialect_name(session) != "postgresql":
            return  # SQLite: Database.transaction() already serializes every write
        for day in sorted(set(days)):  # one order everywhere: no deadlock between two days
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :day)"),
                {"ns": _LOCK_NAMESPACE, "day": day.toordinal()},
            )

    async def _calendar_busy(
        self, session: AsyncSession, start: datetime, end: datetime
    ) -> tuple[list[Span], bool]:
        """Busy spans from Google Calendar, and whether it could be consulted. When it cannot,
        availability falls back to working hours and Kimmie hears about it once."""
        if self.calendar is None:
            return [], True
        try:
            intervals = await self.calendar.busy(start, end)
        except (CalendarUnavailableError, TimeoutError, OSError) as exc:
            self._calendar_down = True
            await raise_alert(
                session,
                CALENDAR_FAULT,
                "Google Calendar could not be reached, so offered slots are checked against working hours "
                f"and bookings only (not your calendar). ({type(exc).__name__}: {str(exc)[:200]})",
            )
            return [], False
        if self._calendar_down:
            self._calendar_down = False
            await resolve_alert(session, CALENDAR_FAULT)
        return [(i.start, i.end) for i in intervals], True

    async def _calendar_upsert(self, session: AsyncSession, appointment_id: int) -> None:
        if self.calendar is not None:
            await enqueue(
                session,
                CALENDAR_UPSERT_JOB,
                {"appointment_id": appointment_id},
                queue_key=f"calendar:{appointment_id}",
            )

    async def _calendar_delete(self, session: AsyncSession, appt: Appointment) -> None:
        if self.calendar is not None:
            await enqueue(
                session,
                CALENDAR_DELETE_JOB,
                {"appointment_id": appt.id, "event_id": appt.calendar_event_id},
                queue_key=f"calendar:{appt.id}",
            )

    async def _schedule_reminder(self, session: AsyncSession, booking: Booking) -> None:
        run_at = booking.start - timedelta(hours=self.settings.reminder_hours_before)
        if run_at <= self.now():
            return  # booked inside the reminder window: the confirmation is the reminder
        await enqueue(
            session,
            REMINDER_JOB,
            {"appointment_id": booking.id},
            run_at=run_at,
            idempotency_key=reminder_key(booking.id),
        )

    async def _tell_customer(
        self, session: AsyncSession, appt: Appointment, body: str, replies: Sequence[QuickReply] = ()
    ) -> bool:
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

    def _utc(self, value: datetime) -> datetime:
        # A naive time from a tool is the business's local wall-clock time.
        return (value.replace(tzinfo=self.tz) if value.tzinfo is None else value).astimezone(UTC)

    def _check_notice_and_horizon(self, rules: Rules, start: datetime, now: datetime) -> None:
        if start < now + timedelta(hours=rules.min_notice_hours):
            raise PolicyError(
                f"Bookings need at least {rules.min_notice_hours:g} hours' notice. Please pick a later time."
            )
        last_day = now.astimezone(self.tz).date() + timedelta(days=rules.horizon_days)
        if start.astimezone(self.tz).date() > last_day:
            raise PolicyError(f"Bookings open {rules.horizon_days} days ahead. Please pick an earlier date.")

    def _check_change_notice(self, rules: Rules, appt: Appointment) -> None:
        if appt.start_at - self.now() < timedelta(hours=rules.cancellation_notice_hours):
            policy = dict(rules.policies).get("cancellation")
            raise PolicyError(
                policy
                or f"Changes need {rules.cancellation_notice_hours:g} hours' notice: please message Kimmie."
            )

    @staticmethod
    def _owned(appt: Appointment, client_id: int | None) -> None:
        if client_id is not None and appt.client_id != client_id:
            raise NotFoundError("I can't find that appointment.")

    @staticmethod
    def _expect(appt: Appointment, statuses: Sequence[str], action: str) -> None:
        if appt.status not in statuses:
            raise InvalidTransitionError(
                f"Can't {action} appointment #{appt.id}: it is already {appt.status}."
            )

    def _to_booking(
        self, appt: Appointment, *, service: Service | None = None, pets: Sequence[Pet] | None = None
    ) -> Booking:
        """The DTO. `service`/`pets` given for a row just inserted (no relationship reload)."""
        pets = list(appt.pets) if pets is None else list(pets)
        service = service or appt.service
        return Booking(
            id=appt.id,
            client_id=appt.client_id,
            status=AppointmentStatus(appt.status),
            start=appt.start_at,
            end=appt.end_at,
            service_code=service.code,
            service_name=service.name,
            pet_ids=tuple(p.id for p in pets),
            pet_names=tuple(p.name for p in pets),
            source_channel=Channel(appt.source_channel) if appt.source_channel else None,
            availability_verified=appt.availability_verified,
            price_min_cents=appt.price_min_cents,
            price_max_cents=appt.price_max_cents,
            hold_expires_at=appt.hold_expires_at,
            notes=appt.notes,
        )


async def customer_conversation(
    session: AsyncSession, client_id: int, channel: str | None
) -> Conversation | None:
    """The client's conversation on the channel they booked from, else their most recent one."""
    order = (Conversation.last_inbound_at.desc().nulls_last(), Conversation.id.desc())
    if channel:
        found = (
            await session.execute(
                select(Conversation)
                .where(Conversation.client_id == client_id, Conversation.channel == channel)
                .order_by(*order)
                .limit(1)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    return (
        await session.execute(
            select(Conversation).where(Conversation.client_id == client_id).order_by(*order).limit(1)
        )
    ).scalar_one_or_none()


__all__ = ["BookingError", "DefaultBookingService", "customer_conversation"]
