"""Connecting Google Calendar back-fills the events of bookings confirmed before it was connected:
the OAuth callback queues the back-fill, which queues one upsert per booking (once, however often it
runs), and the real googleapiclient writes them to the fake Calendar."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from aiohttp import web

from channels.oauth import setup_routes
from core.booking.jobs import queue_calendar_backfill, register_jobs
from core.booking.service import DefaultBookingService
from core.calendar import oauth
from core.calendar.google import GoogleCalendarProvider, event_id_for
from core.db.database import Database
from core.db.models import Appointment
from core.jobs.worker import JobRegistry
from core.settings import Settings
from tests.booking.conftest import Clock, make_customer
from tests.booking.helpers import jobs, run_queued
from tests.calendar.test_google import local
from tests.fakes.google_calendar import FakeGoogleCalendar

pytestmark = pytest.mark.usefixtures("catalog_db")


async def test_connecting_the_calendar_backfills_bookings_confirmed_before(
    aiohttp_client: Any,
    db: Database,
    settings: Settings,
    google_settings: Settings,
    fake_google: FakeGoogleCalendar,
    clock: Clock,
) -> None:
    # Before: no calendar configured at all, two bookings confirmed, one cancelled.
    before = DefaultBookingService(settings, now=clock)
    customer = await make_customer(db, "cal-bf")
    ids = []
    async with db.transaction() as session:
        for hour in (9, 11, 14):
            booked = await before.request_booking(
                session,
                client_id=customer.client_id,
                service_code="nail_trim",
                pet_ids=customer.pet_ids,
                start=local(hour),
                source_channel=None,
            )
            await before.approve(session, appointment_id=booked.id)
            ids.append(booked.id)
        await before.cancel(session, appointment_id=ids[2], client_id=None)
    assert await jobs(db, "calendar_upsert") == []  # no calendar then: no events

    # Kimmie connects it through the OAuth walk-through (no refresh token in the environment).
    connecting = google_settings.model_copy(update={"google_refresh_token": None})
    provider = GoogleCalendarProvider(connecting)
    service = DefaultBookingService(connecting, provider, now=clock)
    registry = JobRegistry()
    register_jobs(registry, db=db, settings=connecting, calendar=provider, booking=service)
    app = web.Application()
    setup_routes(app, db=db, settings=connecting, calendar=provider)
    client = await aiohttp_client(app)
    link = urlparse(oauth.start_link(connecting))
    started = await client.get(f"/oauth/start?{link.query}", allow_redirects=False)
    state = parse_qs(urlparse(started.headers["Location"]).query)["state"][0]
    done = await client.get(f"/oauth/callback?code=code-ok&state={state}")
    assert done.status == 200

    assert await run_queued(db, registry, "calendar_backfill") == 1
    assert await run_queued(db, registry, "calendar_upsert") == 2
    assert sorted(fake_google.events) == sorted(event_id_for(i) for i in ids[:2])
    assert fake_google.events[event_id_for(ids[0])]["start"]["dateTime"] == "2027-03-02T14:00:00Z"
    async with db.transaction() as session:
        stored = [(await session.get_one(Appointment, i)).calendar_event_id for i in ids]
    assert stored == [event_id_for(ids[0]), event_id_for(ids[1]), None]

    # Connected again (or restarted): nothing is queued twice, no event duplicated.
    async with db.transaction() as session:
        (await session.get_one(Appointment, ids[1])).calendar_event_id = None  # as if the write was lost
    async with db.transaction() as session:
        await queue_calendar_backfill(session, reason="startup")
    assert await run_queued(db, registry, "calendar_backfill") == 1
    assert await run_queued(db, registry, "calendar_upsert") == 0  # keyed per booking: once
    assert len(fake_google.events) == 2
