"""Payments fixtures: the real stripe SDK (through core/payments/stripe_adapter.py) against the local
fake Stripe (tests/fakes/stripe.py), the real booking service and its jobs, the webhook route on an
aiohttp test client, and a worker that runs what is due. Notifications for Kimmie and messages to the
customer are read from the rows and jobs they leave (the outbox, notify_admin payloads)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import delete, select, update

from channels.payments import setup_routes
from core import customers
from core.booking.catalog import load_catalog
from core.booking.jobs import register_jobs as register_booking_jobs
from core.booking.service import DefaultBookingService
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import Appointment, Job, Message, Payment, utcnow
from core.events import FollowUps
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker
from core.payments.service import PaymentPages, Payments
from core.payments.stripe_adapter import StripeGateway
from core.settings import Settings
from core.types import Booking, Channel, InboundMessage, SizeClass
from tests.fakes.stripe import API_KEY, FakeStripe, signed
from tests.support import databases

CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"
WHSEC = "whsec_test_cheshire_secret"


def stripe_settings(database_url: str, base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "stripe_secret_key": API_KEY,
        "stripe_webhook_secret": WHSEC,
        "stripe_api_base": base,
        "public_base_url": "https://cheshire.example",
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@dataclass
class Rig:
    db: Database
    settings: Settings
    booking: DefaultBookingService
    payments: Payments
    registry: JobRegistry
    fake: FakeStripe
    client: TestClient[Any, Any]
    n: int = 0

    async def run_jobs(self, *, due_now: bool = False) -> None:
        """Run what is due until the queue is idle (`due_now`: also what is scheduled later)."""
        if due_now:
            async with self.db.transaction() as session:
                await session.execute(update(Job).where(Job.status == "queued").values(run_at=utcnow()))
        worker = Worker(self.db, self.registry)
        for _ in range(50):
            if not await worker.run_once():
                return

    async def customer(self, *, size: SizeClass = SizeClass.GIANT, name: str = "Bella") -> tuple[int, int]:
        """(client_id, pet_id) of a new customer who wrote once on Messenger."""
        self.n += 1
        async with self.db.transaction() as session:
            result = await ingest(
                session,
                InboundMessage(
                    channel=Channel.MESSENGER,
                    external_user_id=f"psid-{self.n}",
                    platform_message_id=f"m-{self.n}",
                    text="hello",
                    display_name="Ann Lee",
                ),
            )
            pet = await customers.save_pet(
                session, client_id=result.client_id, name=name, breed="Great Dane", size_class=size
            )
            await session.execute(delete(Job).where(Job.kind == "process_message"))
        return result.client_id, pet.id

    async def request(self, client_id: int, pet_id: int, *, days_ahead: int = 1) -> Booking:
        async with self.db.transaction() as session:
            slots = await self.booking.find_slots(
                session,
                service_code="full_groom",
                pet_ids=[pet_id],
                client_id=client_id,
                date_from=(utcnow() + timedelta(days=days_ahead)).astimezone(self.settings.tz).date(),
            )
            return await self.booking.request_booking(
                session,
                client_id=client_id,
                service_code="full_groom",
                pet_ids=[pet_id],
                start=slots[0].start,
                source_channel=Channel.MESSENGER,
            )

    async def requested_with_link(self, *, days_ahead: int = 1) -> tuple[Booking, Payment]:
        client_id, pet_id = await self.customer()
        booking = await self.request(client_id, pet_id, days_ahead=days_ahead)
        await self.run_jobs()
        return booking, await self.payment(booking.id)

    async def payment(self, appointment_id: int) -> Payment:
        async with self.db.transaction() as session:
            return (
                await session.execute(select(Payment).where(Payment.appointment_id == appointment_id))
            ).scalar_one()

    async def appointment(self, appointment_id: int) -> Appointment:
        async with self.db.transaction() as session:
            return await session.get_one(Appointment, appointment_id)

    async def said(self) -> list[str]:
        """What the customer was sent (the outbox), in order."""
        async with self.db.transaction() as session:
            rows = await session.execute(
                select(Message.text).where(Message.direction == "out").order_by(Message.id)
            )
            return list(rows.scalars())

    async def kimmie_heard(self) -> list[str]:
        async with self.db.transaction() as session:
            rows = await session.execute(
                select(Job.payload).where(Job.kind == "notify_admin").order_by(Job.id)
            )
            return [str(p.get("event") or p.get("type")) for p in rows.scalars()]

    async def post_event(self, event: dict[str, Any], *, secret: str = WHSEC, **kw: Any) -> int:
        raw, header = signed(event, secret, **kw)
        response = await self.client.post(
            "/webhook/stripe",
            data=raw,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        return response.status

    async def pay(self, payment: Payment, *, webhook: bool = True) -> dict[str, Any]:
        """The customer pays at Checkout; Stripe sends the signed completion (unless lost)."""
        assert payment.stripe_checkout_session_id
        session = self.fake.complete(payment.stripe_checkout_session_id)
        if webhook:
            assert await self.post_event(self.fake.event("checkout.session.completed", session)) == 200
            await self.run_jobs()
        return session


def recording_registry() -> tuple[JobRegistry, list[ClaimedJob]]:
    """Jobs whose delivery is other tests' business (the channel send, Kimmie's Telegram) are
    recorded and done: what they were asked is in their payloads."""
    registry = JobRegistry()
    seen: list[ClaimedJob] = []

    async def record(job: ClaimedJob) -> None:
        seen.append(job)

    for kind in ("deliver_message", "notify_admin"):
        registry.register(kind, record)
    return registry, seen


@pytest.fixture
async def make_rig(
    database_url: str, fake_stripe: FakeStripe, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Database, StripeGateway | None]] = []

    async def make(*, stripe_on: bool = True, **overrides: Any) -> Rig:
        settings = stripe_settings(database_url, fake_stripe.base_url, **overrides)
        subscribers = FollowUps()
        db = Database(database_url, subscribers=subscribers)
        await databases.wipe(db)
        async with db.transaction() as session:
            await load_catalog(session, CATALOG)
        booking = DefaultBookingService(settings)
        gateway = StripeGateway(settings) if stripe_on else None
        made.append((db, gateway))
        payments = Payments(
            db=db,
            gateway=gateway,
            pages=PaymentPages("https://cheshire.example/pay/success", "https://cheshire.example/pay/cancel"),
            currency=settings.stripe_currency,
            tz=settings.tz,
        )
        payments.subscribe(subscribers)
        registry, _seen = recording_registry()
        register_booking_jobs(registry, db=db, settings=settings, calendar=None, booking=booking)
        payments.register_jobs(registry)
        app = web.Application()
        setup_routes(app, db=db, verify=gateway.verify_event if gateway else _refuse)
        client = await aiohttp_client(app)
        return Rig(db, settings, booking, payments, registry, fake_stripe, client)

    yield make
    for db, gateway in made:
        if gateway is not None:
            await gateway.close()
        await db.dispose()


def _refuse(raw: bytes, signature: str | None) -> Any:
    from core.payments.gateway import SignatureError

    raise SignatureError("off")
