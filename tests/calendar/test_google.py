"""The real googleapiclient against a local fake Calendar: busy times, idempotent inserts, outage
fallback, and the OAuth walk-through storing the refresh token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select

from channels.oauth import setup_routes
from core.booking.jobs import register_jobs
from core.booking.service import DefaultBookingService
from core.calendar import oauth
from core.calendar.google import GoogleCalendarProvider, event_id_for
from core.db.database import Database
from core.db.models import AdminAlert, StoredCredential
from core.jobs.worker import JobRegistry
from core.ports import CalendarUnavailableError
from core.settings import Settings
from core.types import AppointmentStatus, Booking
from tests.booking.conftest import Clock, make_customer
from tests.booking.helpers import admin_events, jobs, run_queued
from tests.fakes.google_calendar import FakeGoogleCalendar

pytestmark = pytest.mark.usefixtures("catalog_db")

TUE = datetime(2027, 3, 2, tzinfo=UTC)  # Tuesday; New York is UTC-5 in early March


def local(hour: int, minute: int = 0) -> datetime:
    return TUE + timedelta(hours=hour + 5, minutes=minute)


def booking(id_: int, start: datetime, minutes: int = 60) -> Booking:
    return Booking(
        id=id_,
        client_id=1,
        status=AppointmentStatus.CONFIRMED,
        start=start,
        end=start + timedelta(minutes=minutes),
        service_code="full_groom",
        service_name="Full groom",
        pet_ids=(1,),
        pet_names=("Biscuit",),
        source_channel=None,
    )


async def test_busy_times_are_respected(
    db: Database, google_settings: Settings, fake_google: FakeGoogleCalendar, clock: Clock
) -> None:
    fake_google.busy = [(local(9), local(15))]
    provider = GoogleCalendarProvider(google_settings)
    service = DefaultBookingService(google_settings, provider, now=clock)
    customer = await make_customer(db, "cal-1")
    async with db.transaction() as session:
        slots = await service.find_slots(
            session,
            service_code="nail_trim",
            pet_ids=customer.pet_ids,
            client_id=customer.client_id,
            date_from=TUE.date(),
            date_to=TUE.date(),
            limit=50,
        )
    assert slots and all(s.verified for s in slots)
    # 15:00 busy end + 15 min buffer: the first free start on the 30-min grid is 15:30.
    assert slots[0].start == local(15, 30)
    assert all(s.start >= local(15, 15) for s in slots)
    assert fake_google.token_requests[0]["refresh_token"] == "refresh-env"


async def test_retried_insert_does_not_duplicate(
    google_settings: Settings, fake_google: FakeGoogleCalendar
) -> None:
    provider = GoogleCalendarProvider(google_settings)
    first = await provider.upsert_event(
        booking(7, local(10)), summary="Full groom: Biscuit", description="#7"
    )
    again = await provider.upsert_event(
        booking(7, local(10)), summary="Full groom: Biscuit", description="#7"
    )
    assert first == again == event_id_for(7)
    assert list(fake_google.events) == [event_id_for(7)]
    assert fake_google.inserts() == 2  # the retry hit 409 duplicate and patched instead

    moved = await provider.upsert_event(
        booking(7, local(14)), summary="Full groom: Biscuit", description="#7"
    )
    assert moved == first
    assert fake_google.events[first]["start"]["dateTime"] == "2027-03-02T19:00:00Z"
    busy = await provider.busy(local(8), local(18))
    assert [(b.start, b.end) for b in busy] == [(local(14), local(15))]

    await provider.delete_event(7, first)
    await provider.delete_event(7, first)  # already gone (410): fine
    assert fake_google.events[first]["status"] == "cancelled"
    assert await provider.busy(local(8), local(18)) == []


def test_event_ids_are_valid_base32hex() -> None:
    for n in (1, 42, 10**12):
        eid = event_id_for(n)
        assert 5 <= len(eid) <= 1024
        assert set(eid) <= set("0123456789abcdefghijklmnopqrstuv")
    assert event_id_for(1) != event_id_for(2)


async def test_calendar_down_falls_back_to_working_hours(
    db: Database, google_settings: Settings, fake_google: FakeGoogleCalendar, clock: Clock
) -> None:
    fake_google.down = True
    fake_google.busy = [(local(9), local(17))]  # would block the whole day if it could be read
    provider = GoogleCalendarProvider(google_settings)
    service = DefaultBookingService(google_settings, provider, now=clock)
    customer = await make_customer(db, "cal-2")
    async with db.transaction() as session:
        slots = await service.find_slots(
            session,
            service_code="nail_trim",
            pet_ids=customer.pet_ids,
            client_id=customer.client_id,
            date_from=TUE.date(),
            date_to=TUE.date(),
            limit=3,
        )
    assert slots and not any(s.verified for s in slots)
    assert slots[0].start == local(9)
    async with db.transaction() as session:
        booked = await service.request_booking(
            session,
            client_id=customer.client_id,
            service_code="nail_trim",
            pet_ids=customer.pet_ids,
            start=slots[0].start,
            source_channel=None,
        )
    assert booked.availability_verified is False
    async with db.transaction() as session:
        assert (await service.get_booking(session, booked.id)).availability_verified is False
        assert await session.scalar(select(func.count()).select_from(AdminAlert)) == 1
    alerts = [e for e in await admin_events(db) if e["type"] == "alert"]
    assert len(alerts) == 1 and "Google Calendar" in alerts[0]["text"]

    fake_google.down = False  # back: slots are checked against the calendar again, the alert closes
    async with db.transaction() as session:
        slots = await service.find_slots(
            session,
            service_code="nail_trim",
            pet_ids=customer.pet_ids,
            client_id=customer.client_id,
            date_from=TUE.date(),
            date_to=TUE.date(),
            limit=3,
        )
    assert slots == []  # the calendar is busy all day
    async with db.transaction() as session:
        alert = (await session.execute(select(AdminAlert))).scalar_one()
        assert alert.resolved_at is not None


async def test_bad_refresh_token_is_unavailable(google_settings: Settings) -> None:
    provider = GoogleCalendarProvider(google_settings.model_copy(update={"google_refresh_token": None}))
    with pytest.raises(CalendarUnavailableError):
        await provider.busy(local(8), local(18))
    provider.use_refresh_token("revoked")
    with pytest.raises(CalendarUnavailableError, match="authorisation"):
        await provider.busy(local(8), local(18))


async def test_calendar_jobs_create_move_and_delete_the_event(
    db: Database, google_settings: Settings, fake_google: FakeGoogleCalendar, clock: Clock
) -> None:
    provider = GoogleCalendarProvider(google_settings)
    service = DefaultBookingService(google_settings, provider, now=clock)
    registry = JobRegistry()
    register_jobs(registry, db=db, settings=google_settings, calendar=provider, booking=service)
    customer = await make_customer(db, "cal-3")
    async with db.transaction() as session:
        booked = await service.request_booking(
            session,
            client_id=customer.client_id,
            service_code="nail_trim",
            pet_ids=customer.pet_ids,
            start=local(10),
            source_channel=None,
        )
    assert await jobs(db, "calendar_upsert") == []  # nothing on the calendar before approval
    async with db.transaction() as session:
        await service.approve(session, appointment_id=booked.id)
    assert await run_queued(db, registry, "calendar_upsert") == 1
    eid = event_id_for(booked.id)
    assert fake_google.events[eid]["start"]["dateTime"] == "2027-03-02T15:00:00Z"
    async with db.transaction() as session:
        await service.reschedule(
            session, appointment_id=booked.id, new_start=local(14), client_id=customer.client_id
        )
    assert await run_queued(db, registry, "calendar_upsert") == 1
    assert list(fake_google.events) == [eid]
    assert fake_google.events[eid]["start"]["dateTime"] == "2027-03-02T19:00:00Z"
    assert ("PATCH", f"/calendar/v3/calendars/primary/events/{eid}") in fake_google.requests
    async with db.transaction() as session:
        await service.cancel(session, appointment_id=booked.id, client_id=None, reason="Kimmie is ill")
    assert await run_queued(db, registry, "calendar_delete") == 1
    assert fake_google.events[eid]["status"] == "cancelled"


async def test_stored_token_is_preferred(
    db: Database, google_settings: Settings, fake_google: FakeGoogleCalendar
) -> None:
    fake_google.refresh_tokens.add("refresh-stored")
    async with db.transaction() as session:
        session.add(StoredCredential(name=oauth.REFRESH_TOKEN_NAME, value="refresh-stored"))
    provider = GoogleCalendarProvider(google_settings)
    async with db.transaction() as session:
        assert await provider.load_stored_credentials(session)
    await provider.busy(local(8), local(18))
    assert fake_google.token_requests[-1]["refresh_token"] == "refresh-stored"


async def test_oauth_callback_stores_the_refresh_token(
    aiohttp_client: AiohttpClient, db: Database, google_settings: Settings, fake_google: FakeGoogleCalendar
) -> None:
    from aiohttp import web

    provider = GoogleCalendarProvider(google_settings)
    app = web.Application()
    setup_routes(app, db=db, settings=google_settings, calendar=provider)
    client = await aiohttp_client(app)

    refused = await client.get("/oauth/start", allow_redirects=False)
    assert refused.status == 403  # only from the signed link Kimmie's bot gives her
    link = urlparse(oauth.start_link(google_settings))
    started = await client.get(f"/oauth/start?{link.query}", allow_redirects=False)
    assert started.status == 302
    consent = urlparse(started.headers["Location"])
    assert consent.geturl().startswith(fake_google.auth_uri)
    params = parse_qs(consent.query)
    assert params["access_type"] == ["offline"]
    assert params["client_id"] == ["client-1.apps.googleusercontent.com"]
    assert params["redirect_uri"] == ["https://cheshire.example/oauth/callback"]

    forged = await client.get("/oauth/callback?code=code-ok&state=1.abc.def")
    assert forged.status == 400
    done = await client.get(f"/oauth/callback?code=code-ok&state={params['state'][0]}")
    assert done.status == 200
    assert "connected" in await done.text()
    exchange = fake_google.token_requests[-1]
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["redirect_uri"] == "https://cheshire.example/oauth/callback"
    async with db.transaction() as session:
        stored = await session.get(StoredCredential, oauth.REFRESH_TOKEN_NAME)
        assert stored is not None and stored.value == "refresh-from-consent"
    await provider.busy(local(8), local(18))  # the provider switched to the new token at once
    assert fake_google.token_requests[-1]["refresh_token"] == "refresh-from-consent"

    replay = await client.get(f"/oauth/callback?code=code-ok&state={params['state'][0]}")
    assert replay.status == 400  # a used code is refused by Google; nothing overwritten


async def test_service_account_credentials(
    google_settings: Settings, fake_google: FakeGoogleCalendar
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from pydantic import SecretStr

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = google_settings.model_copy(
        update={
            "google_client_id": None,
            "google_client_secret": None,
            "google_refresh_token": None,
            "google_service_account_email": "cheshire@project.iam.gserviceaccount.com",
            # As pasted into .env: one line with literal "\n".
            "google_private_key": SecretStr(pem.replace("\n", "\\n")),
        }
    )
    fake_google.busy = [(local(10), local(11))]
    provider = GoogleCalendarProvider(settings)
    busy = await provider.busy(local(8), local(18))
    assert [(b.start, b.end) for b in busy] == [(local(10), local(11))]
    assert fake_google.token_requests[-1]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


async def test_free_busy_is_cached_briefly(
    google_settings: Settings, fake_google: FakeGoogleCalendar
) -> None:
    ticks = [1000.0]
    provider = GoogleCalendarProvider(
        google_settings.model_copy(update={"calendar_cache_s": 60.0}), monotonic=lambda: ticks[0]
    )

    def calls() -> int:
        return sum(1 for _, path in fake_google.requests if path.endswith("freeBusy"))

    await provider.busy(local(8), local(18))
    await provider.busy(local(9), local(12))  # inside the cached day range
    assert calls() == 1
    ticks[0] += 61
    await provider.busy(local(9), local(12))
    assert calls() == 2
    ticks[0] += 61
    fake_google.down = True
    with pytest.raises(CalendarUnavailableError):
        await provider.busy(local(9), local(12))
    with pytest.raises(CalendarUnavailableError):  # remembered: no second wait on a dead Calendar
        await provider.busy(local(9), local(12))
    assert calls() == 3
    fake_google.down = False
    ticks[0] += 31
    assert await provider.busy(local(9), local(12)) == []


async def test_warm_cache_serves_slot_searches(
    google_settings: Settings, fake_google: FakeGoogleCalendar
) -> None:
    provider = GoogleCalendarProvider(google_settings.model_copy(update={"calendar_cache_s": 60.0}))
    fake_google.busy = [(local(10), local(11))]
    await provider.refresh(days=800)  # from today (real clock) past the test's 2027 dates
    busy = await provider.busy(local(8), local(18))
    assert [(b.start, b.end) for b in busy] == [(local(10), local(11))]
    assert sum(1 for _, path in fake_google.requests if path.endswith("freeBusy")) == 1
    provider.start_warming()
    await provider.stop_warming()  # stops cleanly at shutdown
