"""`/start <token>`: the signed link the assistant offers on Instagram/Messenger ties the Telegram chat
to that customer's record (no new client); bad, forged or expired tokens just greet."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from bot import links
from core import linking
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Conversation
from core.types import Channel, InboundMessage
from tests.bot.conftest import CUSTOMER, Harness, build_harness, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI


@pytest.fixture
async def linked_harness(db: Database, database_url: str, fake_tg: FakeTelegramAPI) -> AsyncIterator[Harness]:
    settings = make_settings(database_url, telegram_bot_username="LookingGlassBot")
    h = await build_harness(db, settings, fake_tg)
    try:
        yield h
    finally:
        await h.bot.session.close()


async def instagram_customer(h: Harness) -> int:
    async with h.db.transaction() as session:
        result = await ingest(
            session,
            InboundMessage(
                channel=Channel.INSTAGRAM,
                external_user_id="igsid-ann",
                platform_message_id="ig-m-1",
                text="Hi, can I book a bath?",
                display_name="Ann Lee",
            ),
        )
    return result.client_id


async def telegram_owner(h: Harness) -> int | None:
    async with h.db.transaction() as session:
        return await session.scalar(
            select(ChannelIdentity.client_id).where(
                ChannelIdentity.channel == "telegram", ChannelIdentity.external_id == str(CUSTOMER)
            )
        )


async def clients(h: Harness) -> int:
    async with h.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Client)) or 0)


def texts(h: Harness) -> list[str]:
    return [c.text for c in h.fake.calls_to("sendMessage") if c.chat_id == CUSTOMER]


async def test_the_link_is_a_t_me_deep_link_within_telegrams_limits(linked_harness: Harness) -> None:
    link = links.telegram_link(linked_harness.settings, 123456789)
    assert link is not None and link.startswith("https://t.me/LookingGlassBot?start=")
    token = link.rpartition("=")[2]
    assert len(token) <= 64 and all(ch.isalnum() or ch in "_-" for ch in token)
    # Without the bot's username there is nothing to offer.
    unnamed = linked_harness.settings.model_copy(update={"telegram_bot_username": None})
    assert links.telegram_link(unnamed, 1) is None


async def test_start_with_a_valid_token_links_telegram_to_the_existing_client(
    linked_harness: Harness,
) -> None:
    h = linked_harness
    client_id = await instagram_customer(h)
    token = linking.start_token(h.settings, client_id)

    await h.feed(h.message(CUSTOMER, f"/start {token}"))
    await h.run_jobs()

    assert await telegram_owner(h) == client_id
    assert await clients(h) == 1  # no new client
    assert any(t.startswith("✅ Your Telegram is now linked") for t in texts(h))
    async with h.db.transaction() as session:
        conversation = (
            await session.execute(select(Conversation).where(Conversation.channel == "telegram"))
        ).scalar_one()
        assert conversation.client_id == client_id


async def test_a_chat_that_said_start_before_is_moved_and_its_empty_stub_dropped(
    linked_harness: Harness,
) -> None:
    h = linked_harness
    await h.feed(h.message(CUSTOMER, "/start"))  # plain /start first: a stub client of its own
    client_id = await instagram_customer(h)
    assert await clients(h) == 2

    await h.feed(h.message(CUSTOMER, f"/start {linking.start_token(h.settings, client_id)}"))
    await h.run_jobs()

    assert await telegram_owner(h) == client_id
    assert await clients(h) == 1


@pytest.mark.parametrize("kind", ["garbage", "forged", "expired", "other-bot"])
async def test_a_bad_or_expired_token_greets_without_linking(linked_harness: Harness, kind: str) -> None:
    h = linked_harness
    client_id = await instagram_customer(h)
    good = linking.start_token(h.settings, client_id)
    token = {
        "garbage": "hello",
        # Someone edits the client id in a link they were given: the signature no longer matches.
        "forged": f"{client_id + 1}_{good.split('_', 1)[1]}",
        "expired": linking.start_token(
            h.settings, client_id, clock=lambda: time.time() - linking.LINK_TTL_S - 60
        ),
        # Signed with another bot's token.
        "other-bot": linking.start_token(
            h.settings.model_copy(update={"telegram_bot_token": SecretStr("999:OTHER")}), client_id
        ),
    }[kind]

    await h.feed(h.message(CUSTOMER, f"/start {token}"))
    await h.run_jobs()

    owner = await telegram_owner(h)
    assert owner is not None and owner != client_id
    assert await clients(h) == 2
    assert any("I'm Cheshire" in t for t in texts(h))
    assert not any("linked" in t for t in texts(h))
