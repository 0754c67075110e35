"""A real aiogram Bot against the fake Bot API server, the real dispatcher, the real booking service
and job worker on the test database. Updates are real `Update` objects fed through
`dp.feed_update(bot, update)`; assertions look at the calls the fake server recorded and the rows."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import Update
from sqlalchemy import delete, select

from bot.sender import SendLimiter, TelegramSender
from bot.setup import build_dispatcher, register_jobs
from core import customers
from core.booking.catalog import load_catalog
from core.booking.service import DefaultBookingService
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import Job
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.settings import Settings
from core.storage import ObjectStorage, S3Storage
from core.types import Booking, Channel, InboundMessage, SizeClass
from tests.fakes.telegram_api import FakeTelegramAPI

KIMMIE = 777
STAFF = 778
CUSTOMER = 555
TOKEN = "123456:TEST-token"
CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "telegram_bot_token": TOKEN,
        "telegram_kimmie_chat_id": KIMMIE,
        "telegram_admin_ids": [STAFF],
        "business_timezone": "America/New_York",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def fast_limiter() -> SendLimiter:
    # Tests send a handful of messages; the production limits are exercised in bench/.
    return SendLimiter(global_rate=1000, global_burst=1000, chat_rate=1000, chat_burst=1000)


@dataclass
class Harness:
    fake: FakeTelegramAPI
    bot: Bot
    dp: Dispatcher
    db: Database
    settings: Settings
    booking: DefaultBookingService
    registry: JobRegistry
    worker: Worker
    sender: TelegramSender
    senders: dict[str, Any] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def next_id(self) -> int:
        return next(self._ids)

    # --- updates ------------------------------------------------------------------------------
    def message(
        self, chat_id: int, text: str | None = None, *, update_id: int | None = None, **extra: Any
    ) -> Update:
        message: dict[str, Any] = {
            "message_id": self.next_id(),
            "date": int(datetime.now(UTC).timestamp()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Ann"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Ann", "last_name": "Lee"},
        }
        if text is not None:
            message["text"] = text
        message.update(extra)
        return Update.model_validate(
            {"update_id": update_id or self.next_id(), "message": message}, context={"bot": self.bot}
        )

    def callback(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int = 1,
        chat_id: int | None = None,
        markup: dict[str, Any] | None = None,
        update_id: int | None = None,
    ) -> Update:
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(datetime.now(UTC).timestamp()),
            "chat": {"id": chat_id or user_id, "type": "private"},
            "from": {"id": self.fake.bot_id, "is_bot": True, "first_name": "Cheshire"},
            "text": "card",
        }
        if markup:
            message["reply_markup"] = markup
        return Update.model_validate(
            {
                "update_id": update_id or self.next_id(),
                "callback_query": {
                    "id": f"cq{self.next_id()}",
                    "from": {"id": user_id, "is_bot": False, "first_name": "U"},
                    "chat_instance": "ci",
                    "data": data,
                    "message": message,
                },
            },
            context={"bot": self.bot},
        )

    async def feed(self, update: Update) -> Any:
        return await self.dp.feed_update(self.bot, update)

    # --- jobs ---------------------------------------------------------------------------------
    async def run_jobs(self, *, rounds: int = 50) -> int:
        """Run due jobs until the queue is idle. Returns how many ran."""
        ran = 0
        for _ in range(rounds):
            n = await self.worker.run_once()
            if n == 0:
                break
            ran += n
        return ran

    async def jobs(self, kind: str | None = None) -> list[Job]:
        async with self.db.transaction() as session:
            query = select(Job).order_by(Job.id)
            if kind:
                query = query.where(Job.kind == kind)
            return list((await session.execute(query)).scalars())

    # --- domain factories ---------------------------------------------------------------------
    async def customer_with_pet(
        self,
        *,
        channel: Channel = Channel.TELEGRAM,
        external_id: str = str(CUSTOMER),
        name: str = "Ann Lee",
        pet_name: str = "Bella",
        breed: str = "Poodle",
        **pet: Any,
    ) -> tuple[int, int, int]:
        """(client_id, pet_id, conversation_id) of a customer who wrote once on `channel`."""
        async with self.db.transaction() as session:
            result = await ingest(
                session,
                InboundMessage(
                    channel=channel,
                    external_user_id=external_id,
                    platform_message_id=f"seed-{external_id}-{self.next_id()}",
                    text="hello",
                    display_name=name,
                ),
            )
            saved = await customers.save_pet(
                session,
                client_id=result.client_id,
                name=pet_name,
                breed=breed,
                size_class=pet.pop("size_class", SizeClass.SMALL),
                **pet,
            )
            await session.execute(delete(Job).where(Job.kind == "process_message"))
        return result.client_id, saved.id, result.conversation_id

    async def request(
        self, client_id: int, pet_id: int, *, channel: Channel = Channel.TELEGRAM, service: str = "full_groom"
    ) -> Booking:
        async with self.db.transaction() as session:
            slots = await self.booking.find_slots(
                session, service_code=service, pet_ids=[pet_id], client_id=client_id
            )
            assert slots, "no free slot in the catalog's hours"
            return await self.booking.request_booking(
                session,
                client_id=client_id,
                service_code=service,
                pet_ids=[pet_id],
                start=slots[0].start,
                source_channel=channel,
                notes="Nervous with dryers",
            )


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def build_harness(
    db: Database,
    settings: Settings,
    fake: FakeTelegramAPI,
    *,
    photos: ObjectStorage | None = None,
    extra_senders: dict[str, Any] | None = None,
) -> Harness:
    from core.delivery import register_jobs as register_delivery

    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))
    async with db.transaction() as session:
        await load_catalog(session, CATALOG)
    booking = DefaultBookingService(settings)
    sender = TelegramSender(bot, limiter=fast_limiter())
    registry = JobRegistry()
    senders: dict[str, Any] = {"telegram": sender, **(extra_senders or {})}
    register_delivery(registry, db=db, senders=senders, settings=settings)
    signer = photos if isinstance(photos, S3Storage) else None
    register_jobs(registry, db=db, bot=bot, settings=settings, booking=booking, photos=signer)
    _register_engine(registry, db, settings, booking)
    dp = build_dispatcher(
        db=db, settings=settings, booking=booking, sender=sender, photos=photos, fsm_storage=MemoryStorage()
    )
    worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.05, lease_s=30))
    return Harness(fake, bot, dp, db, settings, booking, registry, worker, sender, senders)


def _register_engine(
    registry: JobRegistry, db: Database, settings: Settings, booking: DefaultBookingService
) -> None:
    """ENG-B's process_message handler with no LLM configured: the offline responder answers."""
    from core.conversation.engine import ConversationEngine
    from core.conversation.engine import register_jobs as register_conversation

    engine = ConversationEngine(db=db, settings=settings, booking=booking, model=None)
    register_conversation(registry, engine=engine, db=db)


@pytest.fixture
async def harness(db: Database, database_url: str, fake_tg: FakeTelegramAPI) -> AsyncIterator[Harness]:
    h = await build_harness(db, make_settings(database_url), fake_tg)
    try:
        yield h
    finally:
        await h.bot.session.close()
