"""The booking service's contract: what the conversation tools, the offline responder and Kimmie's
Telegram buttons call. The implementation lives beside this file (core/booking/service.py).

Every method takes the caller's `AsyncSession` (the unit of work): it never commits. Follow-up work
(notify Kimmie, confirm to the customer, calendar writes, reminders) is enqueued as jobs in that same
session, so it commits with the change or not at all.

`client_id=None` on cancel/reschedule means "by Kimmie" (no policy limits). Customer-side calls
always pass the conversation's own client id, and the service refuses appointments of other clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from core.types import Booking, Channel, CoatType, Quote, SizeClass, Slot


class BookingError(Exception):
    """A booking rule said no. `str(exc)` is safe to show the customer or Kimmie."""

    code = "booking_error"


class SlotUnavailableError(BookingError):
    code = "slot_unavailable"


class PolicyError(BookingError):
    """Outside the cancellation policy, notice period, horizon or a per-day limit."""

    code = "policy"


class NotFoundError(BookingError):
    """No such appointment/pet/service for this client (also used for other clients' ids)."""

    code = "not_found"


class InvalidTransitionError(BookingError):
    """E.g. approving an appointment that is already decided: the card is stale."""

    code = "invalid_transition"


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    code: str
    name: str
    description: str | None
    base_price_cents: int
    base_duration_min: int
    is_addon: bool


@dataclass(frozen=True, slots=True)
class BusinessInfo:
    """Facts the assistant may state: from the catalog file and settings, never hard-coded."""

    name: str
    address: str
    phone: str
    timezone: str
    hours: tuple[str, ...]  # human-readable, one line per weekday: "Tue 09:00-17:00 (break 12:30-13:00)"
    policies: tuple[tuple[str, str], ...]  # (topic, text): cancellation, deposit, vaccination, matting...


TimeOfDay = str  # "morning" | "afternoon" | "any"


class BookingService(Protocol):
    async def business_info(self, session: AsyncSession) -> BusinessInfo: ...

    async def list_services(self, session: AsyncSession) -> list[ServiceInfo]: ...

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
    ) -> Quote: ...

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
    ) -> list[Slot]: ...

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
    ) -> Booking: ...

    async def get_booking(self, session: AsyncSession, appointment_id: int) -> Booking: ...

    async def my_appointments(
        self, session: AsyncSession, *, client_id: int, include_past: bool = False
    ) -> list[Booking]: ...

    async def agenda(self, session: AsyncSession, *, day_from: date, day_to: date) -> list[Booking]: ...

    async def pending(self, session: AsyncSession) -> list[Booking]: ...

    async def approve(self, session: AsyncSession, *, appointment_id: int) -> Booking: ...

    async def decline(
        self,
        session: AsyncSession,
        *,
        appointment_id: int,
        reason: str | None = None,
        alternatives: Sequence[Slot] = (),
        reason_code: str | None = None,
    ) -> Booking:
        """`reason_code`: the reason Kimmie tapped (texts.DECLINE_REASONS), shaping the customer's
        message; `alternatives`: times offered instead (the customer taking one is confirmed)."""
        ...

    async def restore(self, session: AsyncSession, *, appointment_id: int) -> Booking:
        """Undo a decline within 5 minutes of it: the request is back, the customer told."""
        ...

    async def cancel(
        self, session: AsyncSession, *, appointment_id: int, client_id: int | None, reason: str | None = None
    ) -> Booking: ...

    async def reschedule(
        self, session: AsyncSession, *, appointment_id: int, new_start: datetime, client_id: int | None
    ) -> Booking: ...

    async def complete(self, session: AsyncSession, *, appointment_id: int) -> Booking: ...

    async def no_show(self, session: AsyncSession, *, appointment_id: int) -> Booking: ...
