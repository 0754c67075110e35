"""Webhook mode: POST /webhook/telegram on the shared aiohttp app, secret token checked, each
update_id handled once (a Telegram retry of the same update is a no-op)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.deferred import WEBHOOK_PATH
from bot.setup import setup_webhook
from channels import middleware
from channels.app import create_app
from channels.ratelimit import InMemoryRateLimiter
from core.db.database import Database
from core.db.models import Message, ProcessedEvent
from tests.bot.conftest import CUSTOMER, Harness, build_harness, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI

SECRET = "s3cr3t-Token_1"
Served = tuple[Harness, TestClient[web.Request, web.Application]]  # the bot's harness, the app's client


@contextlib.asynccontextmanager
async def serving(
    db: Database, fake_tg: FakeTelegramAPI, aiohttp_client: Any, *, limited: bool = False, **settings_: Any
) -> AsyncIterator[Served]:
    """The webhook on the shared app (`limited`: with the channel middlewares and their limits)."""
    settings = make_settings(
        db.url, public_base_url="https://cheshire.example", telegram_webhook_secret=SECRET, **settings_
    )
    h = await build_harness(db, settings, fake_tg)
    app = create_app(settings, db)
    if limited:
        middleware.install(app, settings=settings, limiter=InMemoryRateLimiter())
    setup_webhook(app, h.dp, h.bot, settings)
    client = await aiohttp_client(app)
    try:
        yield h, client
    finally:
        await h.bot.session.close()


@pytest.fixture
async def webhook(db: Database, fake_tg: FakeTelegramAPI, aiohttp_client: Any) -> AsyncIterator[Served]:
    async with serving(db, fake_tg, aiohttp_client) as served:
        yield served


def _update(h: Harness, update_id: int, text: str = "Hi, do you groom cats?") -> dict[str, Any]:
    return h.message(CUSTOMER, text, update_id=update_id).model_dump(mode="json", exclude_none=True)


async def _inbound(h: Harness) -> list[Message]:
    async with h.db.transaction() as session:
        return list((await session.execute(select(Message).where(Message.direction == "in"))).scalars())


async def test_missing_or_wrong_secret_is_rejected(webhook: Served) -> None:
    h, client = webhook
    body = _update(h, 1)
    missing = await client.post(WEBHOOK_PATH, json=body)
    wrong = await client.post(WEBHOOK_PATH, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
    assert (missing.status, wrong.status) == (401, 401)
    assert await _inbound(h) == []


async def test_a_good_update_is_stored_before_200_and_a_duplicate_is_handled_once(
    webhook: Served,
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


async def test_a_duplicate_admin_press_is_processed_once(webhook: Served) -> None:
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

    from bot.processed_updates import PRUNE_JOB, prune_events, schedule_prune
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


# --- Malformed input (issue 15.5): a 400 or an ignored 200, never a 5xx (Telegram redelivers 5xx) ----

DEEP = 100_000

MALFORMED = {
    "empty object": b"{}",
    "array": b"[]",
    "null": b"null",
    "truncated": b"{",
    "not json": b"update",
    "deep array": b"[" * DEEP + b"]" * DEEP,
    "deep inside an update": b'{"update_id": 1, "message": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3001,
    "update_id a word": b'{"update_id": "one"}',
    "update_id a list": b'{"update_id": [1]}',
    "message a string": b'{"update_id": 1, "message": "hi"}',
    "message a list": b'{"update_id": 1, "message": []}',
    "message without chat": b'{"update_id": 1, "message": {"message_id": 1, "date": 0}}',
    "chat id an object": (
        b'{"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": {}, "type": "private"}}}'
    ),
    "callback without sender": b'{"update_id": 1, "callback_query": {"id": "1", "chat_instance": "x"}}',
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_malformed_update_is_a_400_and_stores_nothing(webhook: Served, raw: bytes) -> None:
    h, client = webhook
    response = await client.post(
        WEBHOOK_PATH,
        data=raw,
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    assert "error" in await response.json()
    assert await _inbound(h) == []
    assert h.fake.calls_to("sendMessage") == []


async def test_a_valid_update_of_an_unknown_type_is_ignored_with_a_log_line(
    webhook: Served, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    h, client = webhook
    caplog.set_level(logging.INFO, logger="bot.webhook")
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    body = {"update_id": 991, "paid_media_purchased_v9": {"from": {"id": 5}, "payload": "x"}}
    response = await client.post(WEBHOOK_PATH, json=body, headers=headers)
    assert response.status == 200
    assert await _inbound(h) == []
    assert any("ignored update 991" in r.getMessage() for r in caplog.records)
    # ...and a known update right after it is still handled.
    assert (await client.post(WEBHOOK_PATH, json=_update(h, 992), headers=headers)).status == 200
    assert [m.text for m in await _inbound(h)] == ["Hi, do you groom cats?"]


async def test_an_oversized_update_is_a_413(webhook: Served) -> None:
    h, client = webhook
    raw = b'{"update_id": 1, "x": "' + b"a" * (h.settings.max_body_bytes + 1) + b'"}'
    response = await client.post(WEBHOOK_PATH, data=raw, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status == 413


async def test_a_database_out_of_connections_is_a_503_on_the_telegram_webhook(
    database_url: str, db: Database, fake_tg: FakeTelegramAPI, aiohttp_client: Any
) -> None:
    """This route is not behind the channel middlewares; the app's own answers the 503 (issue 15.4)."""
    from tests.support.faults import every_connection_busy

    tiny = Database(database_url, pool_size=1, pool_timeout_s=0.2)
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    try:
        async with serving(tiny, fake_tg, aiohttp_client) as (h, client):
            async with every_connection_busy(tiny):
                response = await client.post(WEBHOOK_PATH, json=_update(h, 31), headers=headers)
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
            # Telegram redelivers; with the database back the update is stored once.
            assert (await client.post(WEBHOOK_PATH, json=_update(h, 31), headers=headers)).status == 200
            assert [m.text for m in await _inbound(h)] == ["Hi, do you groom cats?"]
    finally:
        await tiny.dispose()


async def test_the_right_secret_is_not_held_to_the_per_ip_limit_a_wrong_one_is(
    database_url: str, db: Database, fake_tg: FakeTelegramAPI, aiohttp_client: Any
) -> None:
    """Telegram posts everyone's updates from a few addresses (issue 15.6)."""
    async with serving(db, fake_tg, aiohttp_client, limited=True, webhook_rate_limit_per_minute=2) as (
        h,
        client,
    ):
        good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        signed = [
            (await client.post(WEBHOOK_PATH, json=_update(h, 100 + n, f"hi {n}"), headers=good)).status
            for n in range(5)
        ]
        assert signed == [200] * 5
        bad = {"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        forged = [
            (await client.post(WEBHOOK_PATH, json=_update(h, 200 + n), headers=bad)).status for n in range(3)
        ]
        assert forged == [401, 401, 429]
        assert len(await _inbound(h)) == 5


_CHAT = {"id": 555, "type": "private", "first_name": "A"}
_USER = {"id": 555, "is_bot": False, "first_name": "A"}
UNUSUAL = {
    "message without sender": {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": _CHAT}},
    "channel post": {
        "update_id": 2,
        "channel_post": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "channel"}, "text": "x"},
    },
    "button press without its message": {
        "update_id": 3,
        "callback_query": {"id": "1", "chat_instance": "x", "from": _USER, "data": "appt:zz"},
    },
    "a bot writing": {
        "update_id": 4,
        "message": {
            "message_id": 4,
            "date": 0,
            "chat": _CHAT,
            "from": {**_USER, "is_bot": True},
            "text": "hi",
        },
    },
    "blocked by the user": {
        "update_id": 5,
        "my_chat_member": {
            "chat": _CHAT,
            "from": _USER,
            "date": 0,
            "old_chat_member": {"status": "member", "user": _USER},
            "new_chat_member": {"status": "kicked", "user": _USER, "until_date": 0},
        },
    },
}


@pytest.mark.parametrize("body", list(UNUSUAL.values()), ids=list(UNUSUAL))
async def test_valid_but_unusual_updates_are_never_a_5xx(webhook: Served, body: dict[str, Any]) -> None:
    _h, client = webhook
    response = await client.post(WEBHOOK_PATH, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status == 200
