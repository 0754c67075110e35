"""core/linking.py without aiogram: `/start <token>` attaches the chat to the client the signed token
names (no new client) and greets; a bad token only greets; asking for one's bookings feeds the core's
MY_BOOKINGS flow and says whether a phone would link more."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from core import linking
from core.conversation import payloads as pl
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Job, Message
from core.settings import Settings
from core.types import Channel, InboundMessage

CHAT = "555"


@pytest.fixture
def bot_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"telegram_bot_token": SecretStr("123456:TEST-token")})


async def _instagram_client(db: Database) -> int:
    async with db.transaction() as session:
        result = await ingest(
            session,
            InboundMessage(
                channel=Channel.INSTAGRAM,
                external_user_id="igsid-ann",
                platform_message_id="ig-1",
                text="hi",
                display_name="Ann Lee",
            ),
        )
    return result.client_id


async def _start(db: Database, settings: Settings, token: str | None) -> linking.StartedChat:
    async with db.transaction() as session:
        return await linking.start_chat(
            session,
            settings,
            channel=Channel.TELEGRAM,
            external_id=CHAT,
            display_name="Ann Lee",
            token=token,
            sent_at=None,
        )


async def _greeting(db: Database, conversation_id: int) -> Message:
    async with db.transaction() as session:
        return (
            await session.execute(
                select(Message).where(Message.conversation_id == conversation_id, Message.direction == "out")
            )
        ).scalar_one()


async def test_a_valid_token_links_the_chat_to_its_client_and_greets_with_the_menu(
    db: Database, bot_settings: Settings
) -> None:
    client_id = await _instagram_client(db)
    started = await _start(db, bot_settings, linking.start_token(bot_settings, client_id))

    assert started.linked and started.client_id == client_id
    async with db.transaction() as session:
        owner = await session.scalar(
            select(ChannelIdentity.client_id).where(ChannelIdentity.external_id == CHAT)
        )
        assert owner == client_id
        assert await session.scalar(select(func.count()).select_from(Client)) == 1
        assert await session.scalar(select(func.count()).where(Job.kind == "deliver_message")) == 1
    greeting = await _greeting(db, started.conversation_id)
    assert greeting.text.startswith(linking.LINKED_NOTE) and "Hi Ann! I'm Cheshire" in greeting.text
    assert [q["payload"] for q in greeting.quick_replies] == [
        pl.BOOK,
        pl.PRICES,
        pl.HOURS,
        pl.MY_BOOKINGS,
        pl.HUMAN,
    ]


@pytest.mark.parametrize(
    "make_token",
    [
        lambda s, cid: None,
        lambda s, cid: "hello",
        lambda s, cid: f"{cid + 1}_{linking.start_token(s, cid).split('_', 1)[1]}",  # forged client id
        lambda s, cid: linking.start_token(s, cid, clock=lambda: 0.0),  # expired long ago
    ],
    ids=["none", "garbage", "forged", "expired"],
)
async def test_anything_but_a_valid_token_only_greets(
    db: Database, bot_settings: Settings, make_token: Callable[[Settings, int], str | None]
) -> None:
    client_id = await _instagram_client(db)
    started = await _start(db, bot_settings, make_token(bot_settings, client_id))

    assert not started.linked and started.client_id != client_id
    greeting = await _greeting(db, started.conversation_id)
    assert greeting.text.startswith("Hi Ann! I'm Cheshire") and linking.LINKED_NOTE not in greeting.text


async def test_asking_for_my_bookings_feeds_the_core_flow_and_says_whether_a_phone_is_known(
    db: Database,
) -> None:
    asked = InboundMessage(
        channel=Channel.TELEGRAM, external_user_id=CHAT, platform_message_id="555:1", text="/mybookings"
    )
    async with db.transaction() as session:
        first = await linking.request_my_bookings(session, asked)
    assert first.ingested.stored and not first.phone_on_file
    async with db.transaction() as session:
        stored = await session.get_one(Message, first.ingested.message_id)
        assert (stored.text, stored.payload) == ("/mybookings", pl.MY_BOOKINGS)
        assert await session.scalar(select(func.count()).where(Job.kind == "process_message")) == 1
        (await session.get_one(Client, first.ingested.client_id)).phone = "+15551234567"

    again = InboundMessage(
        channel=Channel.TELEGRAM, external_user_id=CHAT, platform_message_id="555:2", text="/mybookings"
    )
    async with db.transaction() as session:
        second = await linking.request_my_bookings(session, again)
    assert second.phone_on_file and second.ingested.client_id == first.ingested.client_id
