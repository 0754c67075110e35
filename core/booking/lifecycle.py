"""The booking lifecycle: every change of an appointment's status, each a short recipe.

Each change: load (and lock) the row, ask the transition table (core/booking/transitions.py), check
the time with the slot guard where a time is involved, write, and emit the transition's event. What
follows (Kimmie's card, the customer's message, calendar, timers) is the follow-ups table's business
(core/booking/followups.py), never written out here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from core.booking import payloads, texts
from core.booking.api import InvalidTransitionError, NotFoundError, PolicyError, SlotUnavailableError
from core.booking.availability import day_windows, inside_windows
from core.booking.catalog import Rules, read_rules
from core.booking.followups import BookingChange, booking_facts
from core.booking.guard import (
    Against,
    SlotCheck,
    SlotGuard,
    flush_confirmed,
    overlap_with_confirmed_refused,
)
from core.booking.records import (
    CONFIRMED,
    find_appointment,
    insert_appointment,
    load_addons,
    load_appointment,
    load_pets,
    load_service,
    owned,
    to_booking,
)
from core.booking.sizing import cadence_weeks, quote_pets, size_counts
from core.booking.transitions import UNDO_WINDOW, Action, allowed, transition
from core.db.models import Appointment
from core.events import FollowUps, emit
from core.settings import Settings
from core.types import AppointmentStatus, Booking, Channel, QuickReply, Slot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewBooking:
    """What a new appointment is filed with (a request, or a customer taking Kimmie's offer)."""

    client_id: int
    service_code: str
    pet_ids: tuple[int, ...]
    start: datetime
    source_channel: Channel | None
    addon_codes: tuple[str, ...] = ()
    notes: str | None = None


class Lifecycle:
    def __init__(
        self, settings: Settings, guard: SlotGuard, follow_ups: FollowUps, *, now: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.follow_ups = follow_ups
        self.now = now
        self.tz: ZoneInfo = settings.tz

    # --- changes ------------------------------------------------------------------------------------
    async def request(
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
        return await self._file(
            session,
            NewBooking(
                client_id, service_code, tuple(pet_ids), start, source_channel, tuple(addon_codes), notes
            ),
        )

    async def _file(self, session: AsyncSession, new: NewBooking, *, offer_of: int | None = None) -> Booking:
        """File a new appointment: a request for Kimmie, or (`offer_of`: the declined request whose
        offered time the customer took) confirmed at once. Both after the same slot check."""
        step = transition(Action.REQUEST if offer_of is None else Action.ACCEPT_OFFER, None)
        client_id, start = new.client_id, new.start
        rules = await read_rules(session)
        now = self.now()
        start = self.utc(start)
        service = await load_service(session, new.service_code)
        addons = await load_addons(session, new.addon_codes)
        pets = await load_pets(session, new.pet_ids, client_id)
        quote = quote_pets(rules, service, addons, pets)
        end = start + timedelta(minutes=quote.duration_min)
        if offer_of is None:
            self._check_notice_and_horizon(rules, start, now)
        elif start <= now:  # her own offer needs no notice, but it must still lie ahead
            raise PolicyError(texts.ALREADY_PASSED)
        day = self.guard.local_day(start)
        if not inside_windows(start, end, day_windows(rules, day, self.tz)):
            raise SlotUnavailableError(texts.OUTSIDE_HOURS)
        check = SlotCheck(
            start,
            end,
            timedelta(minutes=rules.buffer_min),
            sizes=size_counts(rules, pets),
            taken=texts.JUST_TAKEN,
        )
        verified = await self.guard.calendar_allows(session, check, refusal=texts.JUST_TAKEN)
        await self.guard.lock_days(session, [day])
        await self.guard.ensure_free(session, check, rules=rules, now=now)

        confirmed = step.to.value == CONFIRMED
        values: dict[str, Any] = {
            "client_id": client_id,
            "service_id": service.id,
            "start_at": start,
            "end_at": end,
            "status": step.to.value,
            "hold_expires_at": None
            if confirmed
            else min(now + timedelta(hours=self._hold_hours(rules)), start),
            "decided_at": now if confirmed else None,
            "source_channel": new.source_channel.value if new.source_channel else None,
            "addon_codes": [a.code for a in addons],
            "price_min_cents": quote.price_min_cents,
            "price_max_cents": quote.price_max_cents,
            "availability_verified": verified,
            "notes": new.notes,
        }
        # A confirmed booking's times meet the exclusion constraint: its refusal is "taken".
        refusing = overlap_with_confirmed_refused(session) if confirmed else contextlib.nullcontext()
        async with refusing:
            appointment_id = await insert_appointment(session, values, [p.id for p in pets])
        # The row as written, for the event's follow-ups (not attached: nothing reads it back).
        appt = Appointment(id=appointment_id, **values)
        booking = to_booking(appt, service=service, pets=pets)
        extra: dict[str, Any] = {} if offer_of is None else {"offer_of": offer_of}
        await self._emit(session, step.event, appt, booking, by="customer", **extra)
        log.info(
            "booking filed", extra={"appointment_id": appt.id, "verified": verified, "status": appt.status}
        )
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
        """A booking like an earlier one (same service, pets, add-ons) at another time: what the
        customer's tap on an alternative offered with a decline (payload "ALT:...") asks for. A time
        Kimmie offered is confirmed at once (after the slot check: she does not approve her own
        offer again), and her offers are then used up; any other time is a new request for her."""
        old = await load_appointment(session, appointment_id, for_update=True)
        if old.client_id != client_id:
            raise NotFoundError(texts.NO_APPOINTMENT)
        start = self.utc(start)
        offered = old.status == AppointmentStatus.DECLINED.value and start.isoformat() in (
            old.offered_starts or []
        )
        new = NewBooking(
            client_id,
            old.service.code,
            tuple(p.id for p in old.pets),
            start,
            source_channel or (Channel(old.source_channel) if old.source_channel else None),
            tuple(old.addon_codes or []),
            old.notes,
        )
        if not offered:
            return await self._file(session, new)
        booking = await self._file(session, new, offer_of=old.id)
        old.offered_starts = None  # one offer taken: the others are not held for a second booking
        await session.flush()
        return booking

    async def approve(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        # A first, unlocked read: the Calendar call (usually a cache hit) must not hold row locks.
        appt = await load_appointment(session, appointment_id)
        transition(Action.APPROVE, appt.status, appointment_id=appt.id)
        when = (appt.start_at, appt.end_at)
        now = self.now()
        if appt.start_at <= now:
            raise PolicyError(texts.ALREADY_PASSED)
        rules = await read_rules(session)
        check = SlotCheck(
            when[0], when[1], timedelta(minutes=rules.buffer_min), against=Against.CONFIRMED, exclude=appt.id
        )
        verified = await self.guard.calendar_allows(session, check, refusal=texts.CALENDAR_BUSY_ON_APPROVE)
        await self.guard.lock_days(session, [self.guard.local_day(when[0])])
        appt = await load_appointment(session, appointment_id, for_update=True)
        step = transition(Action.APPROVE, appt.status, appointment_id=appt.id)
        if (appt.start_at, appt.end_at) != when:
            raise InvalidTransitionError(texts.REQUEST_CHANGED)
        await self.guard.ensure_free(session, check, rules=rules, now=now)
        appt.status = step.to.value
        appt.decided_at = now
        appt.hold_expires_at = None
        appt.availability_verified = verified  # checked against the calendar just now (or not)
        await flush_confirmed(session)
        booking = to_booking(appt)
        await self._emit(session, step.event, appt, booking, by="kimmie")
        return booking

    async def decline(
        self,
        session: AsyncSession,
        *,
        appointment_id: int,
        reason: str | None = None,
        alternatives: Sequence[Slot] = (),
        reason_code: str | None = None,
    ) -> Booking:
        if reason_code is not None and reason_code not in texts.DECLINE_REASONS:
            raise PolicyError(texts.unknown_decline_reason(reason_code))
        appt = await load_appointment(session, appointment_id, for_update=True)
        step = transition(Action.DECLINE, appt.status, appointment_id=appt.id)
        appt.status = step.to.value
        appt.decided_at = self.now()
        appt.decision_reason = reason
        appt.decline_code = reason_code
        appt.hold_expires_at = None
        offered = list(alternatives)[:10]
        appt.offered_starts = [self.utc(s.start).isoformat() for s in offered] or None
        await session.flush()
        booking = to_booking(appt)
        replies = tuple(
            QuickReply(
                title=texts.short_when(s.start, self.tz), payload=payloads.alternative(appt.id, s.start)
            )
            for s in offered
        )
        if not replies and reason_code != "not_a_fit":  # not a fit: another time would not help
            replies = (QuickReply(title=texts.PICK_ANOTHER_TIME, payload=payloads.BOOK),)
        await self._emit(
            session,
            step.event,
            appt,
            booking,
            replies=replies,
            by="kimmie",
            reason=reason,
            reason_code=reason_code,
            alternatives=[{"start": s.start, "end": s.end} for s in offered],
        )
        return booking

    async def restore(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        """Undo a decline within UNDO_WINDOW: the request is back, holding its slot again (if nobody
        took it meanwhile), and the customer is told to disregard the decline."""
        appt = await load_appointment(session, appointment_id)
        transition(Action.RESTORE, appt.status, appointment_id=appt.id)
        now = self.now()
        if appt.decided_at is None or now - appt.decided_at > UNDO_WINDOW:
            raise PolicyError(texts.UNDO_TOO_LATE)
        if appt.start_at <= now:
            raise PolicyError(texts.ALREADY_PASSED)
        rules = await read_rules(session)
        check = SlotCheck(
            appt.start_at,
            appt.end_at,
            timedelta(minutes=rules.buffer_min),
            exclude=appt.id,
            sizes=size_counts(rules, list(appt.pets)),
            taken=texts.UNDO_SLOT_TAKEN,
        )
        await self.guard.lock_days(session, [self.guard.local_day(appt.start_at)])
        appt = await load_appointment(session, appointment_id, for_update=True)
        step = transition(Action.RESTORE, appt.status, appointment_id=appt.id)
        await self.guard.ensure_free(session, check, rules=rules, now=now)
        appt.status = step.to.value
        appt.hold_expires_at = min(now + timedelta(hours=self._hold_hours(rules)), appt.start_at)
        appt.decided_at = None
        appt.decision_reason = None
        appt.decline_code = None
        appt.offered_starts = None
        await session.flush()
        booking = to_booking(appt)
        await self._emit(session, step.event, appt, booking, by="kimmie")
        return booking

    async def cancel(
        self, session: AsyncSession, *, appointment_id: int, client_id: int | None, reason: str | None = None
    ) -> Booking:
        appt = await load_appointment(session, appointment_id, for_update=True)
        owned(appt, client_id)
        step = transition(Action.CANCEL, appt.status, appointment_id=appt.id)
        rules = await read_rules(session)
        was_confirmed = appt.status == CONFIRMED
        if client_id is not None and was_confirmed:
            self._check_change_notice(rules, appt)
        appt.status = step.to.value
        appt.decision_reason = reason
        appt.decided_at = self.now()
        appt.hold_expires_at = None
        await session.flush()
        booking = to_booking(appt)
        replies = (QuickReply(title=texts.BOOK_ANOTHER_TIME, payload=payloads.BOOK),)
        by = "customer" if client_id is not None else "kimmie"
        await self._emit(
            session,
            step.event,
            appt,
            booking,
            replies=replies,
            by=by,
            reason=reason,
            was_confirmed=was_confirmed,
        )
        return booking

    async def reschedule(
        self, session: AsyncSession, *, appointment_id: int, new_start: datetime, client_id: int | None
    ) -> Booking:
        appt = await load_appointment(session, appointment_id)  # unlocked: Calendar is called below
        owned(appt, client_id)
        transition(Action.RESCHEDULE, appt.status, appointment_id=appt.id)
        before = (appt.status, appt.start_at, appt.end_at)
        rules = await read_rules(session)
        now = self.now()
        by_customer = client_id is not None
        new_start = self.utc(new_start)
        new_end = new_start + (appt.end_at - appt.start_at)
        old_day, new_day = self.guard.local_day(appt.start_at), self.guard.local_day(new_start)
        if by_customer:
            if appt.status == CONFIRMED:
                self._check_change_notice(rules, appt)
            self._check_notice_and_horizon(rules, new_start, now)
            if not inside_windows(new_start, new_end, day_windows(rules, new_day, self.tz)):
                raise SlotUnavailableError(texts.OUTSIDE_HOURS)
        elif new_start <= now:
            raise PolicyError(texts.NEW_TIME_IN_PAST)
        check = SlotCheck(
            new_start,
            new_end,
            timedelta(minutes=rules.buffer_min),
            exclude=appt.id,
            sizes=size_counts(rules, list(appt.pets)),
            day_limits=by_customer and new_day != old_day,
        )
        has_own_event = bool(appt.calendar_event_id) or appt.status == CONFIRMED
        own = (appt.start_at, appt.end_at) if has_own_event else None
        if by_customer:
            verified = await self.guard.calendar_allows(session, check, refusal=texts.TAKEN, own=own)
        else:  # Kimmie may book over her own calendar; the check only says whether it was consulted
            _busy, verified = await self.guard.calendar(
                session, new_start - check.buffer, new_end + check.buffer
            )

        await self.guard.lock_days(session, [old_day, new_day])
        appt = await load_appointment(session, appointment_id, for_update=True)
        if (appt.status, appt.start_at, appt.end_at) != before:
            raise InvalidTransitionError(texts.APPOINTMENT_CHANGED)
        step = transition(Action.RESCHEDULE, appt.status, appointment_id=appt.id)
        await self.guard.ensure_free(session, check, rules=rules, now=now)
        previous = {"start": appt.start_at, "end": appt.end_at}
        appt.start_at, appt.end_at = new_start, new_end
        appt.availability_verified = verified
        if appt.status == CONFIRMED:
            await flush_confirmed(session)
        else:
            appt.hold_expires_at = min(now + timedelta(hours=self._hold_hours(rules)), new_start)
            await session.flush()
        booking = to_booking(appt)
        await self._emit(
            session, step.event, appt, booking, by="customer" if by_customer else "kimmie", previous=previous
        )
        return booking

    async def complete(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        appt = await load_appointment(session, appointment_id, for_update=True)
        step = transition(Action.COMPLETE, appt.status, appointment_id=appt.id)
        appt.status = step.to.value
        for pet in appt.pets:
            if pet.last_groomed_at is None or pet.last_groomed_at < appt.end_at:
                pet.last_groomed_at = appt.end_at
        await session.flush()
        rules = await read_rules(session)
        weeks = cadence_weeks(rules, list(appt.pets), self.settings.rebooking_weeks)
        booking = to_booking(appt)
        await self._emit(session, step.event, appt, booking, rebook_weeks=weeks, by="kimmie")
        return booking

    async def no_show(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        appt = await load_appointment(session, appointment_id, for_update=True)
        step = transition(Action.NO_SHOW, appt.status, appointment_id=appt.id)
        appt.status = step.to.value
        await session.flush()
        booking = to_booking(appt)
        await self._emit(session, step.event, appt, booking, by="kimmie")
        return booking

    async def expire_hold(self, session: AsyncSession, *, appointment_id: int) -> bool:
        """Release a request whose hold ran out. Returns True when it expired it."""
        appt = await find_appointment(session, appointment_id, for_update=True)
        if appt is None or not allowed(Action.EXPIRE, appt.status):
            return False
        if appt.hold_expires_at is not None and appt.hold_expires_at > self.now():
            return False  # the hold was extended (the request moved); its new job will come
        step = transition(Action.EXPIRE, appt.status, appointment_id=appt.id)
        appt.status = step.to.value
        appt.decided_at = self.now()
        await session.flush()
        booking = to_booking(appt)
        replies = (QuickReply(title=texts.PICK_ANOTHER_TIME, payload=payloads.BOOK),)
        await self._emit(session, step.event, appt, booking, replies=replies, by="hold")
        return True

    # --- helpers ------------------------------------------------------------------------------------
    async def _emit(
        self,
        session: AsyncSession,
        event_type: str,
        appt: Appointment,
        booking: Booking,
        *,
        replies: tuple[QuickReply, ...] = (),
        rebook_weeks: int | None = None,
        **facts: Any,
    ) -> None:
        await emit(
            session,
            event_type,
            subject=f"appointment:{appt.id}",
            data={"booking": booking_facts(booking, self.tz), **facts},
            detail=BookingChange(appt, booking, replies, rebook_weeks),
            follow_ups=self.follow_ups,
        )

    def utc(self, value: datetime) -> datetime:
        # A naive time from a tool is the business's local wall-clock time.
        return (value.replace(tzinfo=self.tz) if value.tzinfo is None else value).astimezone(UTC)

    def _hold_hours(self, rules: Rules) -> float:
        return rules.hold_hours or self.settings.booking_hold_hours

    def _check_notice_and_horizon(self, rules: Rules, start: datetime, now: datetime) -> None:
        if start < now + timedelta(hours=rules.min_notice_hours):
            raise PolicyError(texts.notice_needed(rules.min_notice_hours))
        last_day = now.astimezone(self.tz).date() + timedelta(days=rules.horizon_days)
        if start.astimezone(self.tz).date() > last_day:
            raise PolicyError(texts.beyond_horizon(rules.horizon_days))

    def _check_change_notice(self, rules: Rules, appt: Appointment) -> None:
        if appt.start_at - self.now() < timedelta(hours=rules.cancellation_notice_hours):
            policy = dict(rules.policies).get("cancellation")
            raise PolicyError(policy or texts.change_notice_needed(rules.cancellation_notice_hours))
