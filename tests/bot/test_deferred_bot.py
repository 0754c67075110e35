"""The bot is built after /healthz answers (cheshire/runtime.py); what arrives before then is not lost:
a webhook update waits for the bot briefly, else is answered 503 with Retry-After (Telegram posts it
again), and a delivery or a notification for Kimmie waits, else is retried later (its job lives on)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

import bot.deferred
from bot.deferred import WEBHOOK_PATH
from cheshire.runtime import build_runtime
from core.db.database import Database
from core.db.models import Message
from core.deferred import Deferred, DeferredNotifier, DeferredSender, NotReadyError
from core.jobs.errors import RetryLater
from core.ports import ChannelCapabilities, RetryableDeliveryError, SendResult
from core.types import Channel, OutboundMessage, Recipient
from tests.bot.conftest import CUSTOMER, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI

SECRET = "late-bot-secret_1"


def _update(update_id: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": CUSTOMER, "type": "private"},
            "from": {"id": CUSTOMER, "is_bot": False, "first_name": "Ann"},
            "text": "Hi, do you groom cats?",
        },
    }


async def test_a_webhook_update_before_the_bot_is_built_is_503_or_waits_for_it(
    db: Database,
    database_url: str,
    fake_tg: FakeTelegramAPI,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot.deferred, "WEBHOOK_WAIT_S", 0.2)  # not the 10 s a real update may wait
    settings = make_settings(
        database_url,
        telegram_api_base=fake_tg.base_url,
        public_base_url="https://cheshire.example",
        telegram_webhook_secret=SECRET,
    )
    rt = build_runtime(settings)
    assert rt.telegram is not None
    client: TestClient[Any, Any] = await aiohttp_client(rt.app)
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    try:
        early = await client.post(WEBHOOK_PATH, json=_update(1), headers=headers)
        assert early.status == 503 and early.headers["Retry-After"] == "5"  # Telegram redelivers it

        monkeypatch.setattr(bot.deferred, "WEBHOOK_WAIT_S", 60.0)
        posted = asyncio.create_task(client.post(WEBHOOK_PATH, json=_update(2), headers=headers))
        await asyncio.sleep(0.1)  # the POST is in, waiting for the bot
        await rt.telegram.build()
        assert (await posted).status == 200
        async with db.transaction() as session:
            texts = list((await session.scalars(select(Message.text).where(Message.direction == "in"))).all())
        assert texts == ["Hi, do you groom cats?"]  # handled, once
    finally:
        await rt.telegram.close()
        await rt.db.dispose()


class _Platform:
    """A sender and a notifier that record what reached them."""

    capabilities = ChannelCapabilities()
    credentials_fault_key: str | None = None

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.alerts: list[str] = []

    async def send(self, recipient: Recipient, message: OutboundMessage, **_: Any) -> SendResult:
        self.sent.append(message.text)
        return SendResult(platform_message_id="m1")

    async def alert(self, text: str) -> None:
        self.alerts.append(text)

    async def booking_request(self, appointment_id: int) -> None: ...
    async def booking_changed(self, appointment_id: int, event: str) -> None: ...
    async def handover(self, conversation_id: int, reason: str) -> None: ...
    async def reminder_digest(self, appointment_ids: Sequence[int]) -> None: ...


def _itself(platform: _Platform) -> _Platform:
    return platform


async def test_a_delivery_before_the_bot_is_built_waits_for_it_then_is_retried_later() -> None:
    handle: Deferred[_Platform] = Deferred("the bot")
    sender = DeferredSender(handle, _itself, capabilities=ChannelCapabilities(), wait_s=0.1)
    recipient = Recipient(channel=Channel.TELEGRAM, external_id=str(CUSTOMER))
    with pytest.raises(RetryableDeliveryError):  # delivery's "retry later": the job is queued again
        await sender.send(recipient, OutboundMessage(text="too early"))

    waiting = DeferredSender(handle, _itself, capabilities=ChannelCapabilities(), wait_s=30)
    sending = asyncio.create_task(waiting.send(recipient, OutboundMessage(text="in time")))
    await asyncio.sleep(0.05)
    platform = _Platform()
    handle.resolve(platform)
    assert (await sending).platform_message_id == "m1"
    assert platform.sent == ["in time"]


async def test_kimmies_notification_before_the_bot_is_built_runs_again_later() -> None:
    handle: Deferred[_Platform] = Deferred("the bot")
    notifier = DeferredNotifier(handle, _itself, wait_s=0.1)
    with pytest.raises(RetryLater):  # not lost, not handed to the e-mail fallback
        await notifier.alert("too early")
    platform = _Platform()
    handle.resolve(platform)
    await notifier.alert("now")
    assert platform.alerts == ["now"]


async def test_a_bot_that_could_not_be_built_is_said_at_once() -> None:
    handle: Deferred[_Platform] = Deferred("the bot")
    handle.fail("ValueError: bad")
    with pytest.raises(NotReadyError, match="could not start: ValueError: bad"):
        await handle.get(timeout_s=30)
