"""Free slots against working hours, breaks, closures, buffers, notice, horizon, per-day limits and
busy times; a property test of the sweep; daylight-saving days in New York and London."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.booking.availability import day_windows, free_starts, naive_free_starts, widen
from core.booking.catalog import Rules, Window, read_rules, set_config
from core.booking.service import DefaultBookingService
from core.db.database import Database
from core.settings import Settings
from core.types import Booking, SizeClass, Slot
from tests.booking.conftest import T0, Clock, Customer, load_text, make_customer, small_catalog

NY = ZoneInfo("America/New_York")
TUE = date(2027, 3, 2)


def at(day: date, hh: int, mm: int = 0, tz: ZoneInfo = NY) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=tz).astimezone(UTC)


def local_times(slots: Sequence[Slot], tz: ZoneInfo = NY) -> list[str]:
    return [s.start.astimezone(tz).strftime("%H:%M") for s in slots]


async def slots_on(service: DefaultBookingService, db: Database, day: date, **kwargs: Any) -> list[Slot]:
    kwargs.setdefault("service_code", "nail_trim")
    async with db.transaction() as session:
        return await service.find_slots(session, date_from=day, date_to=day, limit=100, **kwargs)


async def confirmed(
    db: Database, service: DefaultBookingService, customer: Customer, start: datetime, code: str = "nail_trim"
) -> Booking:
    async with db.transaction() as session:
        b = await service.request_booking(
            session,
            client_id=customer.client_id,
            service_code=code,
            pet_ids=customer.pet_ids,
            start=start,
            source_channel=None,
        )
    async with db.transaction() as session:
        return await service.approve(session, appointment_id=b.id)


@pytest.mark.usefixtures("catalog_db")
async def test_hours_and_breaks(db: Database, service: DefaultBookingService) -> None:
    slots = await slots_on(service, db, TUE)
    times = local_times(slots)
    assert times[0] == "09:00" and times[-1] == "16:30"  # the trim must end by 17:00
    assert "12:30" not in times and "12:00" in times and "13:00" in times  # break 12:30-13:00
    # No pet given: sized for the longest case (a giant dog's trim takes 20 minutes).
    assert all(s.end - s.start == timedelta(minutes=20) for s in slots)
    assert await slots_on(service, db, date(2027, 3, 1)) == []  # Monday: closed
    assert await slots_on(service, db, date(2027, 3, 7)) == []  # Sunday: closed


@pytest.mark.usefixtures("catalog_db")
async def test_closure_dates(db: Database, service: DefaultBookingService) -> None:
    async with db.transaction() as session:
        await set_config(session, "closures", {"dates": ["2027-03-02"]})
    assert await slots_on(service, db, TUE) == []
    assert await slots_on(service, db, TUE + timedelta(days=1))


@pytest.mark.usefixtures("catalog_db")
async def test_buffer_around_appointments(db: Database, service: DefaultBookingService) -> None:
    customer = await make_customer(db, "buf")
    await confirmed(db, service, customer, at(TUE, 10))
    times = local_times(await slots_on(service, db, TUE, pet_ids=customer.pet_ids))
    # 10:00-10:15 booked, 15-minute buffer: 09:30 (ends 09:45) and 10:30 still fit, 10:00 does not.
    assert "09:30" in times and "10:00" not in times and "10:30" in times


@pytest.mark.usefixtures("catalog_db")
async def test_minimum_notice_and_horizon(db: Database, service: DefaultBookingService, clock: Clock) -> None:
    clock.now = at(TUE, 3)  # 12 h notice: nothing before 15:00
    assert local_times(await slots_on(service, db, TUE))[0] == "15:00"
    async with db.transaction() as session:
        rules = await read_rules(session)
        slots = await service.find_slots(
            session, service_code="nail_trim", date_to=TUE + timedelta(days=365), limit=1000
        )
    last_day = TUE + timedelta(days=rules.horizon_days)
    assert max(s.start.astimezone(NY).date() for s in slots) <= last_day
    assert await slots_on(service, db, TUE + timedelta(days=rules.horizon_days + 3)) == []


@pytest.mark.usefixtures("catalog_db")
async def test_giant_dogs_per_day_limit(db: Database, service: DefaultBookingService) -> None:
    giants = await make_customer(db, "giants", pets=(("Bear", "Newfoundland", None, None),))
    small = await make_customer(db, "small", pets=(("Pip", "Chihuahua", None, None),))
    await confirmed(db, service, giants, at(TUE, 9))
    await confirmed(db, service, giants, at(TUE, 13))
    # Two giant dogs on Tuesday already (limit 2): no more giants that day, small dogs still fit.
    assert await slots_on(service, db, TUE, pet_ids=giants.pet_ids, client_id=giants.client_id) == []
    assert await slots_on(service, db, TUE, pet_ids=small.pet_ids, client_id=small.client_id)
    assert await slots_on(service, db, TUE + timedelta(days=1), pet_ids=giants.pet_ids)


@pytest.mark.usefixtures("catalog_db")
async def test_time_of_day(db: Database, service: DefaultBookingService) -> None:
    morning = local_times(await slots_on(service, db, TUE, time_of_day="morning"))
    afternoon = local_times(await slots_on(service, db, TUE, time_of_day="afternoon"))
    assert morning and all(t < "12:00" for t in morning)
    assert afternoon and all(t >= "12:00" for t in afternoon)


@pytest.mark.usefixtures("catalog_db")
async def test_several_pets_back_to_back(db: Database, service: DefaultBookingService) -> None:
    family = await make_customer(
        db, "family", pets=(("Pip", "Chihuahua", None, None), ("Suki", "Shih Tzu", None, None))
    )
    slots = await slots_on(service, db, TUE, service_code="full_groom", pet_ids=family.pet_ids)
    # 90 min (toy, short) + 120 min (small, long) in one block, between opening, break and closing.
    assert all(s.end - s.start == timedelta(minutes=210) for s in slots)
    assert local_times(slots) == ["09:00", "13:00", "13:30"]
    async with db.transaction() as session:
        booked = await service.request_booking(
            session,
            client_id=family.client_id,
            service_code="full_groom",
            pet_ids=family.pet_ids,
            start=slots[0].start,
            source_channel=None,
        )
    assert booked.pet_names == ("Pip", "Suki") and booked.end - booked.start == timedelta(minutes=210)
    assert booked.price_min_cents == 6000 + 7500


@pytest.mark.usefixtures("catalog_db")
async def test_default_choice_is_spread_over_days(db: Database, service: DefaultBookingService) -> None:
    async with db.transaction() as session:
        slots = await service.find_slots(session, service_code="full_groom", limit=6)
    assert len(slots) == 6
    assert len({s.start.astimezone(NY).date() for s in slots}) >= 4
    assert slots == sorted(slots, key=lambda s: s.start)


# --- daylight saving ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("America/New_York", date(2027, 3, 14), date(2027, 11, 7)),
        ("Europe/London", date(2027, 3, 28), date(2027, 10, 31)),
    ],
)
async def test_dst_days(
    db: Database, settings: Settings, tmp_path: Path, zone: str, spring: date, autumn: date
) -> None:
    tz = ZoneInfo(zone)
    await load_text(
        db, tmp_path, small_catalog(hours={"sat": "09:00-12:00", "sun": "00:00-06:00", "mon": "09:00-12:00"})
    )
    clock = Clock(datetime(2027, 1, 1, tzinfo=UTC))
    service = DefaultBookingService(settings.model_copy(update={"business_timezone": zone}), now=clock)

    for change in (spring, autumn):
        # 09:00 wall-clock on the days around the change, whatever the UTC offset.
        for day in (change - timedelta(days=1), change + timedelta(days=1)):
            slots = await slots_on(service, db, day, service_code="groom")
            assert local_times(slots, tz) == ["09:00", "09:30", "10:00", "10:30", "11:00"]
            assert slots[0].start == datetime.combine(day, time(9), tzinfo=tz).astimezone(UTC)
        sunday = await slots_on(service, db, change, service_code="groom")
        starts = [s.start for s in sunday]
        assert all(s.end - s.start == timedelta(hours=1) for s in sunday)  # real hours
        assert len(set(starts)) == len(starts)
        for t in starts:
            wall = t.astimezone(tz)
            assert wall.date() == change
            # Every offered time exists on the wall clock and means that instant.
            assert wall.replace(tzinfo=None).replace(tzinfo=tz, fold=wall.fold).astimezone(UTC) == t
            assert wall.minute in (0, 30)
        window_end = datetime.combine(change, time(6), tzinfo=tz).astimezone(UTC)
        assert max(s.end for s in sunday) == window_end
        if change == spring:  # 5 real hours: 02:00-03:00 (NY) / 01:00-02:00 (London) never offered
            assert len(starts) == 9
            skipped = 2 if zone == "America/New_York" else 1
            assert all(t.astimezone(tz).hour != skipped for t in starts)
        else:  # 7 real hours: the repeated hour is offered twice, as two different instants
            assert len(starts) == 13


# --- the sweep, property-tested ----------------------------------------------------------------

_BASE = datetime(2027, 3, 13, tzinfo=UTC)  # a Saturday: the days cover New York's spring-forward


@hsettings(max_examples=150, deadline=None)
@given(
    open_h=st.integers(0, 10),
    length_h=st.integers(1, 12),
    break_start=st.integers(0, 23 * 60),
    break_len=st.integers(0, 120),
    busy=st.lists(st.tuples(st.integers(-600, 5 * 24 * 60), st.integers(1, 400)), max_size=30),
    duration=st.integers(5, 240),
    step=st.sampled_from([5, 10, 15, 30, 60]),
    buffer=st.integers(0, 45),
    earliest=st.integers(0, 3 * 24 * 60),
)
def test_no_offered_slot_overlaps_busy_or_leaves_hours(
    open_h: int,
    length_h: int,
    break_start: int,
    break_len: int,
    busy: list[tuple[int, int]],
    duration: int,
    step: int,
    buffer: int,
    earliest: int,
) -> None:
    close_h = min(open_h + length_h, 23)
    b0 = time(break_start // 60, break_start % 60)
    b1_min = min(break_start + break_len, 23 * 60 + 59)
    b1 = time(b1_min // 60, b1_min % 60)
    rules = Rules(
        hours={d: Window(time(open_h), time(close_h, 59 if close_h == 23 else 0)) for d in range(7)},
        breaks={d: (Window(b0, b1),) for d in range(7)} if b1 > b0 else {},
    )
    days = [_BASE.date() + timedelta(days=n) for n in range(4)]
    windows = [w for d in days for w in day_windows(rules, d, NY)]
    spans = [(_BASE + timedelta(minutes=s), _BASE + timedelta(minutes=s + n)) for s, n in busy]
    length, every = timedelta(minutes=duration), timedelta(minutes=step)
    start_from = _BASE + timedelta(minutes=earliest)
    got = free_starts(
        windows, widen(spans, timedelta(minutes=buffer)), duration=length, step=every, earliest=start_from
    )
    assert got == naive_free_starts(
        windows, spans, buffer=timedelta(minutes=buffer), duration=length, step=every, earliest=start_from
    )
    gap = timedelta(minutes=buffer)
    for t in got:
        end = t + timedelta(minutes=duration)
        assert t >= start_from
        assert any(ws <= t and end <= we for ws, we in windows), "slot leaves working hours"
        assert not any(t < e + gap and s - gap < end for s, e in spans), "slot overlaps a busy interval"


@pytest.mark.usefixtures("catalog_db")
async def test_service_slots_avoid_bookings_and_requests(
    db: Database, service: DefaultBookingService
) -> None:
    a = await make_customer(db, "a")
    b = await make_customer(db, "b", pets=(("Rex", "Labrador", SizeClass.LARGE, None),))
    await confirmed(db, service, a, at(TUE, 9, 30))
    async with db.transaction() as session:  # a pending request holds its slot too
        await service.request_booking(
            session,
            client_id=b.client_id,
            service_code="nail_trim",
            pet_ids=b.pet_ids,
            start=at(TUE, 14),
            source_channel=None,
        )
    times = local_times(await slots_on(service, db, TUE))
    assert "09:30" not in times and "14:00" not in times and "15:00" in times


@pytest.mark.usefixtures("catalog_db")
async def test_reading_weeks_at_a_time_offers_what_the_whole_horizon_would(
    db: Database, service: DefaultBookingService
) -> None:
    from core.booking.availability import spread

    customer = await make_customer(db, "chunks")
    for n in range(0, 40, 3):  # a busy first few weeks
        day = TUE + timedelta(days=n)
        if day.weekday() in (1, 2, 3, 4, 5):
            await confirmed(db, service, customer, at(day, 9))
    async with db.transaction() as session:
        everything = await service.find_slots(session, service_code="full_groom", limit=100_000)
        for limit in (1, 3, 6, 13):
            chosen = await service.find_slots(session, service_code="full_groom", limit=limit)
            assert [s.start for s in chosen] == spread([s.start for s in everything], NY, limit)


async def hold_requests(db: Database, spans: Sequence[tuple[datetime, datetime, str, datetime]]) -> None:
    """Only these requests (start, end, "held" or "cancelled" or another state, hold expiry), written
    directly: requests may overlap each other and run past closing time, unlike a booking made
    through the service."""
    from sqlalchemy import delete, insert, select

    from core.db.models import Appointment, Client, Service

    async with db.transaction() as session:
        await session.execute(delete(Appointment))
        client_id = await session.scalar(select(Client.id).limit(1))
        if client_id is None:
            client_id = (
                await session.execute(insert(Client).values(name="busy").returning(Client.id))
            ).scalar_one()
        service_id = (
            await session.execute(select(Service.id).where(Service.code == "nail_trim"))
        ).scalar_one()
        rows: list[dict[str, Any]] = [
            {
                "client_id": client_id,
                "service_id": service_id,
                "start_at": start,
                "end_at": end,
                "status": "cancelled" if state == "cancelled" else "requested",
                "hold_expires_at": expires,
                "addon_codes": [],
                "availability_verified": True,
            }
            for start, end, state, expires in spans
        ]
        if rows:
            await session.execute(insert(Appointment), rows)


@pytest.mark.usefixtures("catalog_db")
async def test_a_request_reaching_into_the_next_window_still_blocks_it(
    db: Database, service: DefaultBookingService
) -> None:
    """The first window (Monday to Wednesday) is full, so the search reads on from Thursday; the
    request that began on Wednesday afternoon holds Thursday until 18:30, and only what starts from
    Thursday on is read again: Thursday must still be busy."""
    thu, fri = TUE + timedelta(days=2), TUE + timedelta(days=3)
    held = T0 + timedelta(days=90)
    await hold_requests(
        db,
        [
            (at(TUE, 8), at(TUE + timedelta(days=1), 16), "held", held),
            (at(TUE + timedelta(days=1), 16), at(thu, 18, 30), "held", held),
        ],
    )
    async with db.transaction() as session:
        first = await service.find_slots(session, service_code="nail_trim", limit=1)
        everything = await service.find_slots(session, service_code="nail_trim", limit=100_000)
    assert [s.start for s in first] == [at(fri, 9)]
    assert everything[0].start == at(fri, 9)


GIANT = (("Moose", "Great Dane", SizeClass.GIANT, None),)

_busy_day = st.tuples(
    # Day after T0: often the first days, so the first windows fill up (eight a day is the limit)
    # and the search has to read further.
    st.one_of(st.integers(0, 5), st.integers(0, 20)),
    st.integers(7 * 4, 19 * 4),  # quarter hour of the local day it starts
    # Minutes: up to a working day, and into the next day's or the one after's hours (across the
    # edge of a window, which the later window must still see).
    st.sampled_from((15, 45, 60, 120, 240, 11 * 60, 26 * 60, 50 * 60)),
    st.sampled_from(("held", "expired", "cancelled")),
)


@pytest.mark.usefixtures("catalog_db")
@given(
    appointments=st.lists(_busy_day, max_size=60),
    limit=st.integers(1, 20),
    time_of_day=st.sampled_from(("any", "morning", "afternoon")),
    giant=st.booleans(),
)
@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_a_limited_search_offers_what_spreading_the_whole_horizon_would(
    db: Database,
    service: DefaultBookingService,
    appointments: list[tuple[int, int, int, str]],
    limit: int,
    time_of_day: str,
    giant: bool,
) -> None:
    """find_slots reads a few days, then longer windows only while too few days have a slot: with a
    limit it offers exactly what the unlimited search's starts give, spread (`spread` is what a
    limit means: one start from each of the first days, then more). Later windows read only what
    starts in them and carry the earlier windows' spans, so long appointments cross window edges
    here; limits run from below one window's days to beyond them, and a giant dog takes the
    size-limited read instead of PostgreSQL's busy blocks."""
    from core.booking.availability import spread

    rows = []
    for day, quarter, minutes, state in appointments:
        local = datetime.combine(T0.date() + timedelta(days=day), time(0), tzinfo=NY)
        start = (local + timedelta(minutes=15 * quarter)).astimezone(UTC)
        # Expired holds and cancelled rows must not count.
        expires = T0 + (timedelta(days=90) if state == "held" else -timedelta(hours=1))
        rows.append((start, start + timedelta(minutes=minutes), state, expires))
    await hold_requests(db, rows)
    pet_ids = (await make_customer(db, "giant", pets=GIANT)).pet_ids[:1] if giant else []
    async with db.transaction() as session:
        everything = await service.find_slots(
            session,
            service_code="nail_trim",
            pet_ids=pet_ids,
            limit=100_000,
            time_of_day=time_of_day,  # type: ignore[arg-type]
        )
        chosen = await service.find_slots(
            session,
            service_code="nail_trim",
            pet_ids=pet_ids,
            limit=limit,
            time_of_day=time_of_day,  # type: ignore[arg-type]
        )
    assert [s.start for s in chosen] == spread([s.start for s in everything], NY, limit)
