"""Decisions that forgive (issue 14, section 3), on the booking service: a decline's reason shapes
the customer's message, Undo within 5 minutes restores the request (and tells the customer), and a
customer taking a time Kimmie offered is confirmed at once, after the usual slot check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core import events
from core.booking import payloads
from core.booking.api import PolicyError, SlotUnavailableError
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.db.models import Appointment, DomainEvent
from core.types import AppointmentStatus, Channel, Slot
from tests.booking.conftest import Clock, make_customer
from tests.booking.helpers import admin_events, jobs, outbound
from tests.booking.test_lifecycle import TUE, at, request

pytestmark = pytest.mark.usefixtures("catalog_db")


async def _row(db: Database, appointment_id: int) -> Appointment:
    async with db.transaction() as session:
        return await session.get_one(Appointment, appointment_id)


@pytest.mark.parametrize(
    ("code", "says", "buttons"),
    [
        ("fully_booked", "fully booked on Tue, Mar 2 at 9:00 AM", ["Pick another time"]),
        ("not_a_fit", "isn't a good fit", []),
        ("other", "can't take Biscuit on Tue, Mar 2 at 9:00 AM", ["Pick another time"]),
    ],
)
async def test_the_decline_reason_shapes_the_customers_message(
    db: Database, service: DefaultBookingService, code: str, says: str, buttons: list[str]
) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    async with db.transaction() as session:
        await service.decline(session, appointment_id=booked.id, reason_code=code)
    (message,) = await outbound(db)
    assert says in message.text
    assert [r["title"] for r in message.quick_replies] == buttons
    row = await _row(db, booked.id)
    assert (row.status, row.decline_code, row.decided_at) == ("declined", code, service.now())


async def test_an_unknown_reason_is_refused(db: Database, service: DefaultBookingService) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    async with db.transaction() as session:
        with pytest.raises(PolicyError, match="no decline reason"):
            await service.decline(session, appointment_id=booked.id, reason_code="grumpy")
    assert (await _row(db, booked.id)).status == "requested"


async def test_undo_within_five_minutes_restores_the_request_and_tells_the_customer(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    async with db.transaction() as session:
        await service.decline(session, appointment_id=booked.id, reason_code="fully_booked")
    assert await jobs(db, "expire_hold") == []  # the decline stopped the hold
    clock.advance(minutes=4, seconds=59)
    async with db.transaction() as session:
        restored = await service.restore(session, appointment_id=booked.id)

    assert restored.status is AppointmentStatus.REQUESTED
    row = await _row(db, booked.id)
    assert (row.decline_code, row.decided_at, row.offered_starts) == (None, None, None)
    assert row.hold_expires_at == min(clock.now + timedelta(hours=24), at(TUE, 9))  # a fresh hold
    (hold,) = await jobs(db, "expire_hold")  # holding its slot again, with a fresh expiry
    assert hold.run_at == row.hold_expires_at
    declined_msg, restored_msg = await outbound(db)
    assert "fully booked" in declined_msg.text
    assert "please ignore the last message" in restored_msg.text and "Biscuit" in restored_msg.text
    async with db.transaction() as session:
        types = (await session.execute(select(DomainEvent.type).order_by(DomainEvent.occurred_at))).scalars()
        assert list(types)[-2:] == [events.BOOKING_DECLINED, events.BOOKING_RESTORED]
    assert (await admin_events(db))[-1] == {
        "type": "booking_changed",
        "appointment_id": booked.id,
        "event": "restored",
    }
    # ...and it can be approved as usual.
    async with db.transaction() as session:
        assert (
            await service.approve(session, appointment_id=booked.id)
        ).status is AppointmentStatus.CONFIRMED


async def test_undo_after_five_minutes_is_refused(
    db: Database, service: DefaultBookingService, clock: Clock
) -> None:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    async with db.transaction() as session:
        await service.decline(session, appointment_id=booked.id)
    clock.advance(minutes=5, seconds=1)
    async with db.transaction() as session:
        with pytest.raises(PolicyError, match="Too late to undo"):
            await service.restore(session, appointment_id=booked.id)
    assert (await _row(db, booked.id)).status == "declined"
    assert len(await outbound(db)) == 1  # the customer heard only the decline


async def test_undo_when_the_slot_was_taken_meanwhile_keeps_the_decline(
    db: Database, service: DefaultBookingService
) -> None:
    ann, bob = await make_customer(db, "ann"), await make_customer(db, "bob")
    booked = await request(db, service, ann, at(TUE, 9))
    async with db.transaction() as session:
        await service.decline(session, appointment_id=booked.id)
    await request(db, service, bob, at(TUE, 9))  # Bob takes the freed time at once
    async with db.transaction() as session:
        with pytest.raises(SlotUnavailableError, match="taken meanwhile"):
            await service.restore(session, appointment_id=booked.id)
    assert (await _row(db, booked.id)).status == "declined"


async def _declined_with_offers(db: Database, service: DefaultBookingService) -> tuple[int, int, list[str]]:
    ann = await make_customer(db, "ann")
    booked = await request(db, service, ann, at(TUE, 9))
    offers = [
        Slot(at(TUE, 13), at(TUE, 15)),
        Slot(at(TUE + timedelta(days=1), 9), at(TUE + timedelta(days=1), 11)),
    ]
    async with db.transaction() as session:
        await service.decline(session, appointment_id=booked.id, alternatives=offers)
    (message,) = await outbound(db)
    return booked.id, ann.client_id, [r["payload"] for r in message.quick_replies]


async def _tap(db: Database, service: DefaultBookingService, client_id: int, payload: str):  # type: ignore[no-untyped-def]
    choice = payloads.parse(payload)
    assert choice is not None and choice.start is not None
    async with db.transaction() as session:
        return await service.request_alternative(
            session,
            client_id=client_id,
            appointment_id=choice.appointment_id,
            start=choice.start,
            source_channel=Channel.TELEGRAM,
        )


async def test_accepting_kimmies_offer_confirms_without_her_approving_again(
    db: Database, service: DefaultBookingService
) -> None:
    declined_id, client_id, taps = await _declined_with_offers(db, service)
    taken = await _tap(db, service, client_id, taps[0])

    assert taken.status is AppointmentStatus.CONFIRMED and taken.start == at(TUE, 13)
    row = await _row(db, taken.id)
    assert row.hold_expires_at is None and row.decided_at is not None
    assert await jobs(db, "expire_hold") == []  # nothing waits for Kimmie
    assert [j.payload["appointment_id"] for j in await jobs(db, "booking_reminder")] == [taken.id]
    confirmation = (await outbound(db))[-1]
    assert confirmation.text.startswith("You're booked!")
    # Kimmie is told (not asked): no request card, one update line.
    told = [e for e in await admin_events(db) if e.get("appointment_id") == taken.id]
    assert told == [{"type": "booking_changed", "appointment_id": taken.id, "event": "offer_accepted"}]
    assert (await _row(db, declined_id)).offered_starts is None  # the other offer is used up

    second = await _tap(db, service, client_id, taps[1])  # the other offer, tapped later
    assert second.status is AppointmentStatus.REQUESTED  # a plain request: Kimmie decides


async def test_an_offered_time_taken_meanwhile_is_refused_and_nothing_booked(
    db: Database, service: DefaultBookingService
) -> None:
    _declined_id, client_id, taps = await _declined_with_offers(db, service)
    bob = await make_customer(db, "bob")
    await request(db, service, bob, at(TUE, 13))  # Bob asked for that time first
    with pytest.raises(SlotUnavailableError):
        await _tap(db, service, client_id, taps[0])
    async with db.transaction() as session:
        ann_rows = (
            await session.execute(select(Appointment).where(Appointment.client_id == client_id))
        ).scalars()
        assert [a.status for a in ann_rows] == ["declined"]


async def test_a_time_kimmie_did_not_offer_stays_a_request(
    db: Database, service: DefaultBookingService
) -> None:
    declined_id, client_id, _taps = await _declined_with_offers(db, service)
    forged = payloads.alternative(declined_id, at(TUE + timedelta(days=1), 13))  # never offered
    booked = await _tap(db, service, client_id, forged)
    assert booked.status is AppointmentStatus.REQUESTED
    assert (await admin_events(db))[-1] == {
        "type": "booking_request",
        "appointment_id": booked.id,
        "event": "requested",
    }
