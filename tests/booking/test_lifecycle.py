"""Request → hold → approve / decline / expire; cancel and reschedule within policy; complete and
no-show. Each transition's follow-ups: Kimmie's notification, the customer's message on the channel
they used, the hold-expiry job."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.booking import payloads
from core.booking.api import InvalidTransitionError, NotFoundError, PolicyError, SlotUnavailableError
from core.booking.jobs import register_jobs
from core.booking.service import DefaultBookingService
from core.customers import get_or_create_conversation, get_or_create_identity
from core.db.database import Database
from core.db.models import Appointment, Pet
from core.jobs.worker import JobRegistry
from core.settings import Settings
from core.types import AppointmentStatus, Booking, Channel, Slot
from tests.booking.conftest import Clock, Customer, make_customer
from tests.booking.helpers import admin_events, jobs, outbound, run_queued

pytestmark = pytest.mark.usefixtures("catalog_db")
NY = ZoneInfo("America/New_York")
TUE = date(2027, 3, 2)


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=NY).astimezone(UTC)


@pytest.fixture
def registry(db: Database, settings: Settings, service: DefaultBookingService) -> JobRegistry:
    reg = JobRegistry()
    register_jobs(reg, db=db, settings=settings, calendar=None, booking=service)
    return reg


async def request(
    db: Database,
    service: DefaultBookingService,
    who: Customer,
    start: datetime,
    channel: Channel | None = None,
) -> Booking:
    async with db.transaction() as session:
        return await service.request_booking(
            session,
            client_id=who.client_id,
            service_code="full_groom",
            pet_ids=who.pet_ids,
            start=start,
            source_channel=channel,
        )


async def approve(db: Database, service: DefaultBookingService, appointment_id: int) -> Booking:
    async with db.transaction() as session:
        return await service.approve(session, appointment_id=appointment_id)


async def test_request_holds_the_slot_and_tells_kimmie(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE + timedelta(days=2), 9), Channel.TELEGRAM)
    assert booked.status is AppointmentStatus.REQUESTED
    assert booked.hold_expires_at == clock.now + timedelta(hours=24)
    assert booked.price_min_cents == booked.price_max_cents == 8000  # cockapoo: $75 - 10 small + 15 curly
    (expire,) = await jobs(db, "expire_hold")
    assert expire.run_at == booked.hold_expires_at and expire.payload == {"appointment_id": booked.id}
    assert await admin_events(db) == [
        {"type": "booking_request", "appointment_id": booked.id, "event": "requested"}
    ]
    assert await outbound(db) == []  # the conversation itself answers the customer
    async with db.transaction() as session:
        assert [b.id for b in await service.pending(session)] == [booked.id]
        assert [b.id for b in await service.my_appointments(session, client_id=ann.client_id)] == [booked.id]


async def test_hold_expiry_releases_the_slot(
    db: Database, service: DefaultBookingService, clock: Clock, registry: JobRegistry
) -> None:
    ann = await make_customer(db, "ann")
    start = at(TUE + timedelta(days=3), 9)
    booked = await request(db, service, ann, start)
    clock.advance(hours=25)
    assert await run_queued(db, registry, "expire_hold") == 1
    async with db.transaction() as session:
        assert (await service.get_booking(session, booked.id)).status is AppointmentStatus.EXPIRED
        slots = await service.find_slots(
            session,
            service_code="full_groom",
            pet_ids=ann.pet_ids,
            date_from=start.astimezone(NY).date(),
            date_to=start.astimezone(NY).date(),
        )
    assert slots[0].start == start  # free again
    (message,) = await outbound(db)
    assert "couldn't confirm" in message.text and message.quick_replies[0]["payload"] == "BOOK"
    assert message.conversation_id == ann.conversation_id
    with pytest.raises(InvalidTransitionError):
        await approve(db, service, booked.id)


async def test_approve_confirms_on_the_channel_used(db: Database, service: DefaultBookingService) -> None:
    ann = await make_customer(db, "ann")
    async with db.transaction() as session:  # Ann also writes from the website
        identity = await get_or_create_identity(session, "telegram", "ann")
        web = await get_or_create_identity(session, "web", "ann-web")
        web.client_id = identity.client_id
        await session.flush()
        web_conversation = await get_or_create_conversation(session, web)
    booked = await request(db, service, ann, at(TUE, 9), Channel.WEB)
    confirmed = await approve(db, service, booked.id)
    assert confirmed.status is AppointmentStatus.CONFIRMED and confirmed.hold_expires_at is None
    (message,) = await outbound(db)
    assert message.conversation_id == web_conversation.id and message.channel == "web"
    assert "You're booked" in message.text and "Tue, Mar 2 at 9:00 AM" in message.text
    assert await jobs(db, "expire_hold", status="cancelled")  # the hold job is dropped
    assert {
        "type": "booking_changed",
        "appointment_id": booked.id,
        "event": "confirmed",
    } in await admin_events(db)
    with pytest.raises(InvalidTransitionError):  # a stale card tapped twice
        await approve(db, service, booked.id)


async def test_decline_offers_alternatives(db: Database, service: DefaultBookingService) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    alternatives = [
        Slot(at(TUE, 13), at(TUE, 15)),
        Slot(at(TUE + timedelta(days=1), 9), at(TUE + timedelta(days=1), 11)),
    ]
    async with db.transaction() as session:
        declined = await service.decline(
            session, appointment_id=booked.id, reason="I'm at a show.", alternatives=alternatives
        )
    assert declined.status is AppointmentStatus.DECLINED
    (message,) = await outbound(db)
    assert "I'm at a show." in message.text
    replies = message.quick_replies
    assert [r["title"] for r in replies] == ["Tue Mar 2 13:00", "Wed Mar 3 09:00"]
    assert all(
        len(r["payload"].encode()) <= 64 and r["payload"].isascii() and len(r["title"]) <= 20 for r in replies
    )
    choice = payloads.parse(replies[0]["payload"])
    assert choice is not None and choice.appointment_id == booked.id and choice.start == at(TUE, 13)
    async with db.transaction() as session:  # the customer taps it
        again = await service.request_alternative(
            session,
            client_id=ann.client_id,
            appointment_id=choice.appointment_id,
            start=choice.start,
            source_channel=Channel.TELEGRAM,
        )
    assert again.status is AppointmentStatus.REQUESTED and again.pet_ids == booked.pet_ids
    assert again.start == at(TUE, 13)


async def test_customer_cancel_within_policy(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    bob = await make_customer(db, "bob")
    booked = await request(db, service, ann, at(TUE + timedelta(days=2), 9))
    await approve(db, service, booked.id)
    async with db.transaction() as session:
        with pytest.raises(NotFoundError):  # not Bob's appointment
            await service.cancel(session, appointment_id=booked.id, client_id=bob.client_id)
    clock.now = at(TUE + timedelta(days=1), 10)  # 23 hours before: inside the 24-hour policy
    async with db.transaction() as session:
        with pytest.raises(PolicyError, match="24 hours"):
            await service.cancel(session, appointment_id=booked.id, client_id=ann.client_id)
    clock.now = at(TUE + timedelta(days=1), 8)
    async with db.transaction() as session:
        cancelled = await service.cancel(session, appointment_id=booked.id, client_id=ann.client_id)
    assert cancelled.status is AppointmentStatus.CANCELLED
    assert {
        "type": "booking_changed",
        "appointment_id": booked.id,
        "event": "cancelled_by_customer",
    } in await admin_events(db)


async def test_kimmie_cancels_any_time_and_the_customer_hears(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    await approve(db, service, booked.id)
    clock.now = at(TUE, 8)  # an hour before
    async with db.transaction() as session:
        await service.cancel(session, appointment_id=booked.id, client_id=None, reason="The van broke down.")
    last = (await outbound(db))[-1]
    assert "has been cancelled" in last.text and "The van broke down." in last.text
    async with db.transaction() as session:
        with pytest.raises(InvalidTransitionError):
            await service.cancel(session, appointment_id=booked.id, client_id=None)


async def test_reschedule(db: Database, service: DefaultBookingService, clock: Clock) -> None:
    ann = await make_customer(db, "ann")
    bob = await make_customer(db, "bob")
    booked = await request(db, service, ann, at(TUE + timedelta(days=2), 9))
    await approve(db, service, booked.id)
    other = await request(db, service, bob, at(TUE + timedelta(days=3), 9))
    async with db.transaction() as session:
        with pytest.raises(SlotUnavailableError):  # Bob holds Friday 9:00
            await service.reschedule(
                session, appointment_id=booked.id, new_start=other.start, client_id=ann.client_id
            )
        with pytest.raises(SlotUnavailableError):  # outside hours
            await service.reschedule(
                session, appointment_id=booked.id, new_start=at(TUE, 20), client_id=ann.client_id
            )
    async with db.transaction() as session:
        moved = await service.reschedule(
            session,
            appointment_id=booked.id,
            new_start=at(TUE + timedelta(days=3), 13),
            client_id=ann.client_id,
        )
    assert moved.status is AppointmentStatus.CONFIRMED and moved.start == at(TUE + timedelta(days=3), 13)
    assert moved.end - moved.start == booked.end - booked.start
    assert {
        "type": "booking_changed",
        "appointment_id": booked.id,
        "event": "rescheduled_by_customer",
    } in await admin_events(db)
    clock.now = at(TUE + timedelta(days=3), 1)  # 12 hours before: too late for the customer
    async with db.transaction() as session:
        with pytest.raises(PolicyError):
            await service.reschedule(
                session,
                appointment_id=booked.id,
                new_start=at(TUE + timedelta(days=4), 9),
                client_id=ann.client_id,
            )
        moved = await service.reschedule(  # Kimmie may, even outside hours
            session, appointment_id=booked.id, new_start=at(TUE + timedelta(days=3), 18), client_id=None
        )
    assert "Kimmie moved your appointment" in (await outbound(db))[-1].text


async def test_request_rules(db: Database, service: DefaultBookingService) -> None:
    ann = await make_customer(db, "ann")
    bob = await make_customer(db, "bob")
    with pytest.raises(PolicyError, match="notice"):
        await request(db, service, ann, at(date(2027, 3, 1), 16))  # today, 2 hours ahead
    with pytest.raises(PolicyError, match="60 days"):
        await request(db, service, ann, at(TUE + timedelta(days=90), 9))
    with pytest.raises(SlotUnavailableError, match="working hours"):
        await request(db, service, ann, at(TUE, 7))
    with pytest.raises(SlotUnavailableError, match="working hours"):
        await request(db, service, ann, at(TUE, 11))  # would run into the 12:30 break
    async with db.transaction() as session:
        with pytest.raises(NotFoundError):  # Bob's pet is not Ann's to book
            await service.request_booking(
                session,
                client_id=ann.client_id,
                service_code="full_groom",
                pet_ids=bob.pet_ids,
                start=at(TUE, 9),
                source_channel=None,
            )


async def test_complete_and_no_show(db: Database, service: DefaultBookingService, clock: Clock) -> None:
    ann = await make_customer(db, "ann")
    first = await request(db, service, ann, at(TUE, 9))
    second = await request(db, service, ann, at(TUE, 13))
    with pytest.raises(InvalidTransitionError):  # not confirmed yet
        async with db.transaction() as session:
            await service.complete(session, appointment_id=first.id)
    await approve(db, service, first.id)
    await approve(db, service, second.id)
    clock.now = at(TUE, 17)
    async with db.transaction() as session:
        done = await service.complete(session, appointment_id=first.id)
        missed = await service.no_show(session, appointment_id=second.id)
    assert done.status is AppointmentStatus.COMPLETED and missed.status is AppointmentStatus.NO_SHOW
    async with db.transaction() as session:
        pet = await session.get_one(Pet, ann.pet_ids[0])
        assert pet.last_groomed_at == first.end
        agenda = await service.agenda(session, day_from=TUE, day_to=TUE)
    assert [(b.id, b.status) for b in agenda] == [(first.id, "completed"), (second.id, "no_show")]


async def test_most_recent_conversation_is_the_fallback(db: Database, service: DefaultBookingService) -> None:
    ann = await make_customer(db, "ann")
    async with db.transaction() as session:
        appt = Appointment(  # a booking Kimmie typed in, with no channel
            client_id=ann.client_id,
            service_id=(await service._service(session, "nail_trim")).id,
            start_at=at(TUE, 9),
            end_at=at(TUE, 9, 15),
            status="requested",
            source_channel=None,
            addon_codes=[],
        )
        session.add(appt)
    await approve(db, service, appt.id)
    (message,) = await outbound(db)
    assert message.conversation_id == ann.conversation_id
