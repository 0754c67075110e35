"""Start-up with every integration configured, against the local fakes (issue 16.5): the real
`python -m bot` answers /healthz (the Telegram bot is built after that), lists every integration as
enabled once its warm-up has finished, and the bot built late really works: a customer's Telegram
message, through the fake Bot API's getUpdates, gets Claude's answer sent back through the fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import databases
from tests.support.local_integrations import CONFIGURED, LocalIntegrations
from tests.support.service import ServiceProcess, wait_until_logged

CUSTOMER = 4242
WARM = "warm-up finished"


@pytest.fixture
async def fakes() -> AsyncIterator[LocalIntegrations]:
    async with LocalIntegrations() as running:
        yield running


async def test_every_integration_configured_starts_and_the_late_bot_answers(
    tmp_path: Path, fakes: LocalIntegrations
) -> None:
    url = await databases.fresh_empty_url(tmp_path)  # the backend under test
    process = ServiceProcess(
        "all", tmp_path, fakes.env() | {"DATABASE_URL": url, "JOB_POLL_INTERVAL_S": "0.1"}
    )
    process.start()
    try:
        await process.wait_healthy()
        await wait_until_logged(process, WARM, timeout_s=60)
        [line] = [str(r["msg"]) for r in process.logs() if str(r.get("msg", "")).startswith("integrations:")]
        enabled = line.removeprefix("integrations: enabled=").split(" ")[0].split(",")
        assert sorted(enabled) == sorted(CONFIGURED), line
        assert "failed=" not in line

        fakes.telegram.push_update(
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
        async with asyncio.timeout(60):
            while not [c for c in fakes.telegram.delivered("sendMessage") if c.chat_id == CUSTOMER]:
                await asyncio.sleep(0.1)
        replies = [c.text for c in fakes.telegram.delivered("sendMessage") if c.chat_id == CUSTOMER]
        assert "Hello from the fake model." in replies  # Claude's answer: its SDK was loaded late too
        assert fakes.llm.anthropic.requests
    finally:
        code = process.stop()
        await databases.dispose_url(url)
    assert code == 0, process.tail()
    assert process.logs()[-1]["msg"] == "stopped"


async def test_a_telegram_that_does_not_answer_is_listed_failed_not_enabled(tmp_path: Path) -> None:
    # Nothing listens on port 9: the bot is built, but its start-up calls cannot reach the Bot API.
    env = {"TELEGRAM_BOT_TOKEN": "123456:unreachable-api", "TELEGRAM_API_BASE": "http://127.0.0.1:9"}
    process = ServiceProcess("unreachable", tmp_path, env)
    process.start()
    try:
        await process.wait_healthy()  # the rest of the service runs
        await wait_until_logged(process, WARM, timeout_s=60)
        [line] = [str(r["msg"]) for r in process.logs() if str(r.get("msg", "")).startswith("integrations:")]
        assert line.startswith("integrations: enabled=none disabled=") and line.endswith(" failed=telegram")
    finally:
        code = process.stop()
    assert code == 0, process.tail()
