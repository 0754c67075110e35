"""The composition root wires Telegram: the whole process in polling mode against the fake Bot API
(a customer's message in getUpdates gets its reply), and webhook mode's route and setWebhook."""

from __future__ import annotations

import asyncio
import gc
import socket

from sqlalchemy import func, select

from bot.deferred import WEBHOOK_PATH
from bot.notifier import TelegramAdminNotifier
from bot.sender import TelegramSender
from cheshire.runtime import build_runtime, run
from core.db.database import Database
from core.db.models import Job
from core.notify.log_notifier import LoggingNotifier
from tests.bot.conftest import CUSTOMER, KIMMIE, STAFF, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_process_in_polling_mode_answers_a_customer(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI
) -> None:
    settings = make_settings(
        database_url, telegram_api_base=fake_tg.base_url, port=_free_port(), job_poll_interval_s=0.05
    )
    stop = asyncio.Event()
    process = asyncio.create_task(run(settings, stop=stop))
    try:
        await fake_tg.wait_for("getMe")
        await fake_tg.wait_for("deleteWebhook")
        # Start-up objects are out of the collector's sight (no ~45 ms full collections later).
        assert gc.get_freeze_count() > 0
        scopes = {c.data["scope"]["type"] for c in fake_tg.calls_to("setMyCommands")}
        assert scopes == {"default", "chat"}
        fake_tg.push_update(
            {
                "update_id": 1,
                "message": {
                    "message_id": 1,
                    "date": 0,
                    "chat": {"id": CUSTOMER, "type": "private"},
                    "from": {"id": CUSTOMER, "is_bot": False, "first_name": "Ann"},
                    "text": "What are your opening hours?",
                },
            }
        )
        await fake_tg.wait_for("sendChatAction")
        async with asyncio.timeout(15):
            while not [c for c in fake_tg.calls_to("sendMessage") if c.chat_id == CUSTOMER]:
                await fake_tg.wait_for("sendMessage", len(fake_tg.calls_to("sendMessage")) + 1)
        reply = next(c for c in fake_tg.calls_to("sendMessage") if c.chat_id == CUSTOMER)
        assert reply.text  # the offline responder's answer (no LLM configured)
        # Let the worker record the delivery before stopping (a stop mid-job waits out its timeout).
        async with asyncio.timeout(10):
            while await _running_jobs(db):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(process, 15)


async def _running_jobs(db: Database) -> int:
    async with db.transaction() as session:
        return int(
            await session.scalar(select(func.count()).select_from(Job).where(Job.status == "running")) or 0
        )


async def test_webhook_mode_mounts_the_route_and_registers_the_secret(
    database_url: str, fake_tg: FakeTelegramAPI
) -> None:
    settings = make_settings(
        database_url,
        telegram_api_base=fake_tg.base_url,
        public_base_url="https://cheshire.example",
        telegram_webhook_secret="hook-secret_1",
    )
    rt = build_runtime(settings)
    try:
        assert "notify_admin" in rt.registry.kinds
        assert any(
            r.method == "POST" and r.resource is not None and r.resource.canonical == WEBHOOK_PATH
            for r in rt.app.router.routes()
        )  # mounted before the bot exists: the router is frozen once the server runs
        assert rt.telegram is not None and rt.telegram.bot.value is None
        tg = await rt.telegram.build()
        assert isinstance(tg.sender, TelegramSender) and isinstance(tg.notifier, TelegramAdminNotifier)
        assert await tg.start()
        hook = fake_tg.last("setWebhook")
        assert hook.data["url"] == "https://cheshire.example/webhook/telegram"
        assert hook.data["secret_token"] == "hook-secret_1"
        assert "callback_query" in hook.data["allowed_updates"] and "message" in hook.data["allowed_updates"]
        chats = {c.data["scope"].get("chat_id") for c in fake_tg.calls_to("setMyCommands")}
        assert {KIMMIE, STAFF} <= chats
    finally:
        if rt.telegram is not None:
            await rt.telegram.close()
        await rt.db.dispose()


async def test_without_a_token_kimmie_hears_through_the_log(database_url: str) -> None:
    rt = build_runtime(make_settings(database_url, telegram_bot_token=None))
    try:
        assert rt.telegram is None and "telegram" not in rt.senders
        assert isinstance(rt.notifier, LoggingNotifier) and "notify_admin" in rt.registry.kinds
    finally:
        await rt.db.dispose()
