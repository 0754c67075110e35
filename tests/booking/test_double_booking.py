"""No double booking: 50 concurrent requests for one slot → exactly one; approving the second of two
overlapping requests fails with nothing half-written (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from core.booking.api import SlotUnavailableError
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.db.models import Appointment, AppointmentPet, Job, Message
from core.types import AppointmentStatus, Booking
from tests.booking.conftest import make_customer

pytestmark = pytest.mark.usefixtures("catalog_db")
NY = ZoneInfo("America/New_York")
TUE = date(2027, 3, 2)


def at(hh: int, mm: int = 0) -> datetime:
    return datetime.combine(TUE, time(hh, mm), tzinfo=NY).astimezone(UTC)


async def test_fifty_concurrent_requests_for_one_slot(db: Database, service: DefaultBookingService) -> None:
    customers = [await make_customer(db, f"c{n}") for n in range(50)]

    async def attempt(n: int) -> Booking:
        async with db.transaction() as session:
            return await service.request_booking(
                session,
                client_id=customers[n].client_id,
                service_code="full_groom",
                pet_ids=customers[n].pet_ids,
                start=at(9),
                source_channel=None,
            )

    results = await asyncio.gather(*(attempt(n) for n in range(50)), return_exceptions=True)
    won = [r for r in results if isinstance(r, Booking)]
    lost = [r for r in results if isinstance(r, SlotUnavailableError)]
    assert len(won) == 1 and len(lost) == 49, [
        type(r).__name__ for r in results if not isinstance(r, Booking)
    ]
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Appointment)) == 1
        assert (
            await session.scalar(select(func.count()).select_from(Job).where(Job.kind == "expire_hold")) == 1
        )


async def _overlapping_requests(db: Database, service: DefaultBookingService) -> tuple[int, int]:
    """Two requested appointments for overlapping times. request_booking refuses the second (the
    first holds the slot), so the second is a row Kimmie-side tooling or a data import could make."""
    ann = await make_customer(db, "ann")
    bob = await make_customer(db, "bob")
    async with db.transaction() as session:
        first = await service.request_booking(
            session,
            client_id=ann.client_id,
            service_code="full_groom",
            pet_ids=ann.pet_ids,
            start=at(9),
            source_channel=None,
        )
        svc = await service._service(session, "full_groom")
        second = Appointment(
            client_id=bob.client_id,
            service_id=svc.id,
            start_at=at(10),
            end_at=at(12),
            status="requested",
            addon_codes=[],
            source_channel="telegram",
        )
        session.add(second)
        await session.flush()
        session.add(AppointmentPet(appointment_id=second.id, pet_id=bob.pet_ids[0]))
    return first.id, second.id


async def test_approving_the_second_of_two_overlapping_requests_fails_cleanly(
    db: Database, service: DefaultBookingService
) -> None:
    first, second = await _overlapping_requests(db, service)
    async with db.transaction() as session:
        await service.approve(session, appointment_id=first)
    async with db.transaction() as session:
        jobs_before = await session.scalar(select(func.count()).select_from(Job))
        messages_before = await session.scalar(select(func.count()).select_from(Message))
    with pytest.raises(SlotUnavailableError, match="overlaps a confirmed appointment"):
        async with db.transaction() as session:
            await service.approve(session, appointment_id=second)
    async with db.transaction() as session:
        row = await session.get_one(Appointment, second)
        assert row.status == "requested" and row.decided_at is None
        assert await session.scalar(select(func.count()).select_from(Job)) == jobs_before
        assert await session.scalar(select(func.count()).select_from(Message)) == messages_before
        assert (await service.get_booking(session, first)).status is AppointmentStatus.CONFIRMED


async def test_concurrent_approvals_of_overlapping_requests(
    db: Database, service: DefaultBookingService
) -> None:
    first, second = await _overlapping_requests(db, service)

    async def approve(appointment_id: int) -> Booking:
        async with db.transaction() as session:
            return await service.approve(session, appointment_id=appointment_id)

    results = await asyncio.gather(approve(first), approve(second), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Booking", "SlotUnavailableError"]
    async with db.transaction() as session:
        confirmed = await session.scalar(
            select(func.count()).select_from(Appointment).where(Appointment.status == "confirmed")
        )
    assert confirmed == 1


@pytest.mark.postgres_only
async def test_exclusion_constraint_is_the_last_line(db: Database, service: DefaultBookingService) -> None:
    first, second = await _overlapping_requests(db, service)
    async with db.transaction() as session:
        await service.approve(session, appointment_id=first)
    with pytest.raises(IntegrityError, match="ex_appointment_no_overlap_confirmed"):
        async with db.transaction() as session:  # bypassing the service's check entirely
            await session.execute(
                text("UPDATE appointment SET status = 'confirmed' WHERE id = :id"), {"id": second}
            )


@pytest.mark.postgres_only
async def test_constraint_violation_surfaces_as_slot_unavailable(
    db: Database, service: DefaultBookingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = await _overlapping_requests(db, service)
    async with db.transaction() as session:
        await service.approve(session, appointment_id=first)

    async def no_check(*args: object, **kwargs: object) -> None:  # as if the check had a bug
        return None

    monkeypatch.setattr(service.guard, "_confirmed_clash", no_check)  # the slot guard's check
    async with db.transaction() as session:
        jobs_before = await session.scalar(select(func.count()).select_from(Job))
        messages_before = await session.scalar(select(func.count()).select_from(Message))
    with pytest.raises(SlotUnavailableError):
        async with db.transaction() as session:
            await service.approve(session, appointment_id=second)
    async with db.transaction() as session:
        assert (await session.get_one(Appointment, second)).status == "requested"
        assert await session.scalar(select(func.count()).select_from(Job)) == jobs_before
        assert await session.scalar(select(func.count()).select_from(Message)) == messages_before
