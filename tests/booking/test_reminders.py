"""Reminders before confirmed appointments and rebooking nudges after completed ones: scheduled,
moved on reschedule, cancelled on cancel, and what the customer receives."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.booking import payloads
from core.booking.jobs import register_jobs
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.jobs.worker import JobRegistry
from core.settings import Settings
from core.types import Booking
from tests.booking.conftest import Clock, Customer, make_customer
from tests.booking.helpers import jobs, outbound, run_queued

pytestmark = pytest.mark.usefixtures("catalog_db")
NY = ZoneInfo("America/New_York")
FRI = date(2027, 3, 5)


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=NY).astimezone(UTC)


@pytest.fixture
def registry(db: Database, settings: Settings, service: DefaultBookingService) -> JobRegistry:
    reg = JobRegistry()
    register_jobs(reg, db=db, settings=settings, calendar=None, booking=service)
    return reg


async def confirmed(db: Database, service: DefaultBookingService, who: Customer, start: datetime) -> Booking:
    async with db.transaction() as session:
        b = await service.request_booking(
            session,
            client_id=who.client_id,
            service_code="bath_tidy",
            pet_ids=who.pet_ids,
            start=start,
            source_channel=None,
        )
    async with db.transaction() as session:
        return await service.approve(session, appointment_id=b.id)


async def test_reminder_scheduled_moved_and_cancelled(db: Database, service: DefaultBookingService) -> None:
    ann = await make_customer(db, "ann")
    booked = await confirmed(db, service, ann, at(FRI, 9))
    (reminder,) = await jobs(db, "booking_reminder")
    assert reminder.run_at == booked.start - timedelta(hours=24)
    assert reminder.idempotency_key == f"reminder:{booked.id}"

    async with db.transaction() as session:
        moved = await service.reschedule(
            session, appointment_id=booked.id, new_start=at(FRI, 13), client_id=ann.client_id
        )
    (reminder,) = await jobs(db, "booking_reminder")
    assert reminder.run_at == moved.start - timedelta(hours=24)
    assert len(await jobs(db, "booking_reminder", status="cancelled")) == 1

    async with db.transaction() as session:
        await service.cancel(session, appointment_id=booked.id, client_id=ann.client_id)
    assert await jobs(db, "booking_reminder") == []
    assert len(await jobs(db, "booking_reminder", status="cancelled")) == 2


async def test_reminder_message_has_confirm_and_cancel(
    db: Database, service: DefaultBookingService, clock: Clock, registry: JobRegistry
) -> None:
    ann = await make_customer(db, "ann")
    booked = await confirmed(db, service, ann, at(FRI, 9))
    before = len(await outbound(db))
    clock.now = booked.start - timedelta(hours=24)
    assert await run_queued(db, registry, "booking_reminder") == 1
    message = (await outbound(db))[before]
    assert "Reminder" in message.text and "Fri, Mar 5 at 9:00 AM" in message.text
    assert message.conversation_id == ann.conversation_id
    parsed = [payloads.parse(r["payload"]) for r in message.quick_replies]
    assert [(p.action, p.appointment_id) for p in parsed if p] == [
        ("APPT_OK", booked.id),
        ("APPT_MOVE", booked.id),
        ("APPT_CANCEL", booked.id),
    ]


async def test_no_reminder_for_an_appointment_inside_the_window(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    clock.now = at(FRI, 9) - timedelta(hours=20)
    await confirmed(db, service, ann, at(FRI, 9))
    assert await jobs(db, "booking_reminder") == []  # the confirmation is the reminder


async def test_a_stale_reminder_sends_nothing(
    db: Database, service: DefaultBookingService, clock: Clock, registry: JobRegistry
) -> None:
    ann = await make_customer(db, "ann")
    booked = await confirmed(db, service, ann, at(FRI, 9))
    async with db.transaction() as session:  # Kimmie marks it a no-show early, say
        await service.no_show(session, appointment_id=booked.id)
    before = len(await outbound(db))
    async with db.transaction() as session:
        assert await service.send_reminder(session, appointment_id=booked.id) is False
    assert len(await outbound(db)) == before


async def test_rebooking_nudge_after_the_grooming_cadence(
    db: Database, service: DefaultBookingService, clock: Clock, registry: JobRegistry
) -> None:
    ann = await make_customer(db, "ann")  # Biscuit the cockapoo: curly coat, every 4 weeks
    booked = await confirmed(db, service, ann, at(FRI, 9))
    clock.now = booked.end
    async with db.transaction() as session:
        await service.complete(session, appointment_id=booked.id)
    (nudge,) = await jobs(db, "booking_rebook_nudge")
    assert nudge.run_at == booked.end + timedelta(weeks=4)
    assert nudge.payload == {"appointment_id": booked.id, "weeks": 4}
    clock.now = nudge.run_at
    before = len(await outbound(db))
    assert await run_queued(db, registry, "booking_rebook_nudge") == 1
    message = (await outbound(db))[before]
    assert "4 weeks since Biscuit's last groom" in message.text
    assert message.quick_replies == [{"title": "Book now", "payload": "BOOK"}]


async def test_no_nudge_when_already_booked_again(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann", pets=(("Rex", "Beagle", None, None),))  # short coat: 8 weeks
    booked = await confirmed(db, service, ann, at(FRI, 9))
    clock.now = booked.end
    async with db.transaction() as session:
        await service.complete(session, appointment_id=booked.id)
    (nudge,) = await jobs(db, "booking_rebook_nudge")
    assert nudge.payload["weeks"] == 8
    await confirmed(db, service, ann, at(FRI + timedelta(days=14), 9))
    clock.now = booked.end + timedelta(days=1)  # the new booking is still ahead
    async with db.transaction() as session:
        assert await service.send_rebooking_nudge(session, appointment_id=booked.id, weeks=8) is False
