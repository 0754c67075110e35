"""Conversation fixtures: the real booking service on the repository's catalog, a fixed clock, and
helpers to send a customer message through ingest and run the engine on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.booking.catalog import load_catalog
from core.booking.service import DefaultBookingService
from core.conversation.engine import ConversationEngine
from core.conversation.ingest import ingest
from core.conversation.tools import ContactLinks
from core.db.database import Database
from core.db.models import Message
from core.llm.types import ChatModel
from core.settings import Settings
from core.types import Channel, InboundMessage

CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"
# Monday 2027-03-01 09:00 in New York: a quiet week, Tue-Sat open in catalog.toml.
T0 = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)


@dataclass
class Sent:
    message_id: int
    conversation_id: int
    client_id: int


@pytest.fixture
async def catalog_db(db: Database) -> Database:
    async with db.transaction() as session:
        await load_catalog(session, CATALOG)
    return db


@pytest.fixture
def booking(settings: Settings) -> DefaultBookingService:
    return DefaultBookingService(settings, now=lambda: T0)


@pytest.fixture
def make_engine(
    catalog_db: Database, settings: Settings, booking: DefaultBookingService
) -> Callable[..., ConversationEngine]:
    def _make(
        model: ChatModel | None, *, contact_links: ContactLinks | None = None, **overrides: object
    ) -> ConversationEngine:
        tuned = settings.model_copy(update=overrides) if overrides else settings
        return ConversationEngine(
            db=catalog_db,
            settings=tuned,
            booking=booking,
            model=model,
            contact_links=contact_links,
            now=lambda: T0,
        )

    return _make


_counter = iter(range(1, 1_000_000))


async def send(
    db: Database,
    text: str = "",
    *,
    payload: str | None = None,
    user: str = "psid-1",
    channel: Channel = Channel.MESSENGER,
    name: str | None = "Alice Liddell",
) -> Sent:
    async with db.transaction() as session:
        result = await ingest(
            session,
            InboundMessage(
                channel=channel,
                external_user_id=user,
                platform_message_id=f"m_{next(_counter)}",
                text=text,
                payload=payload,
                display_name=name,
            ),
        )
    assert result.message_id is not None
    return Sent(result.message_id, result.conversation_id, result.client_id)


async def replies(db: Database, conversation_id: int) -> list[Message]:
    """Outbound messages of the conversation, oldest first."""
    async with db.transaction() as session:
        rows = await session.execute(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.direction == "out")
            .order_by(Message.id)
        )
        return list(rows.scalars())
