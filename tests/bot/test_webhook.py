"""Webhook mode: POST /webhook/telegram on the shared aiohttp app, secret token checked, each
update_id handled once (a Telegram retry of the same update is a no-op)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.setup import WEBHOOK_PATH, setup_webhook
from channels.app import create_app
from core.db.database import Database
from core.db.models import Message, ProcessedEvent
from tests.bot.conftest import CUSTOMER, Harness, build_harness, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI

SECRET = "s3cr3t-Token_1"


@pytest.fixture
async def webhook(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI, aiohttp_client: Any
) -> AsyncIterator[tuple[Harness, TestClient]]:
    settings = make_settings(
        database_url, public_base_url="https://cheshire.example", telegram_webhook_secret=SECRET
    )
    h = await build_harness(db, settings, fake_tg)
    app = create_app(settings, db)
    setup_webhook(app, h.dp, h.bot, settings)
    client = await aiohttp_client(app)
    try:
        yield h, client
    finally:
        await h.bot.session.close()


def _update(h: Harness, update_id: int, text: str = "Hi, do you groom cats?") -> dict[str, Any]:
    return h.message(CUSTOMER, text, update_id=update_id).model_dump(mode="json", exclude_none=True)


async def _inbound(h: Harness) -> list[Message]:
    async with h.db.transaction() as session:
        return list((await session.execute(select(Message).where(Message.direction == "in"))).scalars())


async def test_missing_or_wrong_secret_is_rejected(webhook: tuple[Harness, TestClient]) -> None:
    h, client = webhook
    body = _update(h, 1)
    missing = await client.post(WEBHOOK_PATH, json=body)
    wrong = await client.post(WEBHOOK_PATH, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
    assert (missing.status, wrong.status) == (401, 401)
    assert await _inbound(h) == []


async def test_a_good_update_is_stored_before_200_and_a_duplicate_is_handled_once(
    webhook: tuple[Harness, TestClient],
) -> None:
    h, client = webhook
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    body = _update(h, 4242)
    first = await client.post(WEBHOOK_PATH, json=body, headers=headers)
    assert first.status == 200
    stored = await _inbound(h)
    assert [m.text for m in stored] == ["Hi, do you groom cats?"]  # in the database when 200 went back
    assert h.fake.last("sendChatAction").data["action"] == "typing"

    again = await client.post(WEBHOOK_PATH, json=body, headers=headers)
    assert again.status == 200
    assert len(await _inbound(h)) == 1
    assert len(h.fake.calls_to("sendChatAction")) == 1
    async with h.db.transaction() as session:
        seen = await session.scalar(
            select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.source == "telegram")
        )
    assert seen == 1


async def test_a_duplicate_admin_press_is_processed_once(webhook: tuple[Harness, TestClient]) -> None:
    from bot.callbacks import ApptAction
    from tests.bot.conftest import KIMMIE

    h, client = webhook
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    await h.run_jobs()
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    press = h.callback(KIMMIE, ApptAction(action="approve", appointment_id=booking.id).pack(), update_id=77)
    body = press.model_dump(mode="json", exclude_none=True)
    for _ in range(2):
        assert (await client.post(WEBHOOK_PATH, json=body, headers=headers)).status == 200
    assert len(h.fake.calls_to("answerCallbackQuery")) == 1
    assert len(h.fake.calls_to("editMessageText")) == 1


def test_webhook_mode_requires_a_secret(database_url: str) -> None:
    from core.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="TELEGRAM_WEBHOOK_SECRET"):
        Settings.load(
            _env_file=None,
            database_url=database_url,
            telegram_bot_token="1:x",
            public_base_url="https://cheshire.example",
        )


async def test_processed_update_ids_are_kept_a_week(harness: Harness) -> None:
    from datetime import timedelta

    from bot.scope import PRUNE_JOB, prune_events, schedule_prune
    from core.db.models import utcnow

    h = harness
    await h.feed(h.message(CUSTOMER, "old", update_id=1))
    await h.feed(h.message(CUSTOMER, "new", update_id=2))
    async with h.db.transaction() as session:
        old = (
            await session.execute(select(ProcessedEvent).where(ProcessedEvent.event_id == "1"))
        ).scalar_one()
        old.created_at = utcnow() - timedelta(days=8)
    async with h.db.transaction() as session:
        assert await prune_events(session) == 1
        await schedule_prune(session)
        await schedule_prune(session)  # idempotent per day
    async with h.db.transaction() as session:
        left = (await session.execute(select(ProcessedEvent.event_id))).scalars().all()
    assert left == ["2"]
    assert len(await h.jobs(PRUNE_JOB)) == 1 and PRUNE_JOB in h.registry.kinds
