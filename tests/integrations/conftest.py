"""Integration fixtures: the fakes of n8n and Twenty, and a process wired the way cheshire/runtime.py
wires it (the process's subscribers on the Database, `wire_integrations`, a real job worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import select, update

from channels.app import create_app
from cheshire.wiring import IntegrationsWiring, wire_integrations
from core import events
from core.booking.catalog import load_catalog
from core.booking.service import DefaultBookingService
from core.conversation.engine import ConversationEngine
from core.db.database import Database
from core.db.models import Job, Message, utcnow
from core.events import FollowUps
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.metrics import Metrics
from core.settings import Settings
from tests.conversation.conftest import CATALOG, T0, replies, send
from tests.fakes.n8n import FakeN8n
from tests.fakes.twenty import FakeTwenty

N8N_SECRET = "n8n-signing-secret"


@pytest.fixture
async def n8n() -> AsyncIterator[FakeN8n]:
    fake = FakeN8n(api_key="n8n-api-key")
    fake.add_workflow("Salon events", path="cheshire", active=True)
    fake.base_url = await fake.start()  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        await fake.stop()


@dataclass
class Process:
    """One wired process: its database (with the subscribers), registry, worker and what it counted."""

    db: Database
    settings: Settings
    registry: JobRegistry
    worker: Worker
    app: web.Application
    wiring: IntegrationsWiring
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def drain(self, *, rounds: int = 100) -> None:
        """Run due jobs until none is left (jobs of kinds nobody registered here end dead)."""
        for _ in range(rounds):
            if await self.worker.run_once() == 0:
                return
        raise AssertionError("jobs kept coming")

    async def due_now(self) -> None:
        """Move every waiting retry to now (the clock jumping past the backoff)."""
        async with self.db.transaction() as session:
            await session.execute(update(Job).where(Job.status == "queued").values(run_at=utcnow()))

    async def jobs(self, kind: str) -> list[Job]:
        async with self.db.transaction() as session:
            rows = await session.execute(select(Job).where(Job.kind == kind).order_by(Job.id))
            return list(rows.scalars())

    def booking(self) -> DefaultBookingService:
        return DefaultBookingService(self.settings, now=lambda: T0)


ProcessFactory = Callable[..., Any]


@pytest.fixture
async def make_process(database_url: str, db: Database, settings: Settings) -> AsyncIterator[ProcessFactory]:
    """`await make_process(**settings)`: a process on the (wiped) test database with these settings,
    the catalog loaded."""
    opened: list[Process] = []

    async def make(**overrides: Any) -> Process:
        tuned = settings.model_copy(update=overrides)
        subscribers = FollowUps()
        wired_db = Database(database_url, subscribers=subscribers)
        registry = JobRegistry()
        events.register_jobs(registry, db=wired_db, subscribers=subscribers)
        app = create_app(tuned, wired_db, Metrics())  # the real app: its middleware and body limit
        calls: list[tuple[str, str]] = []
        wiring = wire_integrations(
            settings=tuned,
            db=wired_db,
            registry=registry,
            app=app,
            subscribers=subscribers,
            on_call=lambda integration, outcome: calls.append((integration, outcome)),
        )
        worker = Worker(wired_db, registry, WorkerConfig(concurrency=1, lease_s=30.0))
        process = Process(wired_db, tuned, registry, worker, app, wiring, calls)
        opened.append(process)
        return process

    async with db.transaction() as session:
        await load_catalog(session, CATALOG)
    try:
        yield make
    finally:
        for process in opened:
            for hook in reversed(process.wiring.on_shutdown):
                await hook()
            await process.db.dispose()


async def book_by_buttons(process: Process) -> int:
    """A customer books through the offline responder's buttons alone (no LLM); the appointment id."""
    engine = ConversationEngine(
        db=process.db, settings=process.settings, booking=process.booking(), model=None, now=lambda: T0
    )
    hello = await send(process.db, "hi there")
    await engine.process(hello.message_id, hello.conversation_id)
    last = (await replies(process.db, hello.conversation_id))[-1]
    # A new customer: no "Another dog" step (issue 14); before filing, the dog's name is asked (typed)
    # and, on Messenger, a way to reach them later (skipped here).
    for contains, index in (("Book", 0), ("Full groom", 0), ("Medium", 0), ("Curly", 0), ("", 1), ("", 0)):
        last = await _tap(process, engine, last, contains, index)
    named = await send(process.db, "Biscuit")
    await engine.process(named.message_id, named.conversation_id)
    last = (await replies(process.db, named.conversation_id))[-1]
    done = await _tap(process, engine, last, "Skip", 0)
    assert done.text.startswith("Request sent!"), done.text
    from core.db.models import Appointment

    async with process.db.transaction() as session:
        return (await session.execute(select(Appointment.id))).scalar_one()


async def _tap(
    process: Process, engine: ConversationEngine, last: Message, contains: str, index: int
) -> Message:
    options = [q for q in last.quick_replies if contains in q["title"]]
    assert options, f"no button with {contains!r} in {last.quick_replies}"
    sent = await send(process.db, options[index]["title"], payload=options[index]["payload"])
    await engine.process(sent.message_id, sent.conversation_id)
    return (await replies(process.db, sent.conversation_id))[-1]


TWENTY_KEY = "twenty-api-key"
TWENTY_WEBHOOK_SECRET = "twenty-webhook-secret"


@pytest.fixture
async def twenty() -> AsyncIterator[FakeTwenty]:
    fake = FakeTwenty(api_key=TWENTY_KEY)
    fake.base_url = await fake.start()  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        await fake.stop()


def twenty_settings(fake: FakeTwenty, **more: object) -> dict[str, object]:
    return {
        "twenty_base_url": fake.base_url,  # type: ignore[attr-defined]
        "twenty_api_key": SecretStr(TWENTY_KEY),
        **more,
    }
