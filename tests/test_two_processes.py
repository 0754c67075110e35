"""Two `python -m bot` processes on one PostgreSQL database (issue 15.9): they share the queue, the Meta
webhooks and the web chat (a message posted to either is answered once, even when Meta redelivers it
to the other), and only one of them polls Telegram's getUpdates; when that one is killed with SIGKILL,
the other takes polling over and answers the next Telegram message.

Real processes, the real aiogram and Meta sender against the local fake Bot API and Graph API.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.support import databases
from tests.support.service import ServiceProcess, meta_event, wait_until_logged

pytestmark = pytest.mark.postgres_only

SECRET = "two-process-app-secret"
TOKEN = "123456:TWO-process-token"
KIMMIE = 777
WAITING = "telegram polling runs in another process"
POLLING = "telegram polling runs in this process"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegramAPI, FakeGraphAPI, str]]:
    telegram, graph = FakeTelegramAPI(), FakeGraphAPI()
    await telegram.start()
    graph_base = await graph.start()
    yield telegram, graph, graph_base
    await telegram.stop()
    await graph.stop()


@pytest.fixture
async def shared_database() -> AsyncIterator[str]:
    url = await databases.create_pg_database()
    yield url
    await databases.drop_pg_database(url)


def _update(update_id: int, chat: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "Ann"},
            "text": text,
        },
    }


async def _post_webhook(http: aiohttp.ClientSession, process: ServiceProcess, mid: str, sender: str) -> int:
    body, signature = meta_event(SECRET, mid=mid, sender=sender, text="What are your opening hours?")
    async with http.post(
        f"{process.url}/webhook/facebook",
        data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    ) as response:
        return response.status


async def _chat(http: aiohttp.ClientSession, process: ServiceProcess, session_id: str) -> list[str]:
    """Post one web chat message and return the replies' texts (waiting through a 202 if need be)."""
    async with http.post(
        f"{process.url}/api/chat",
        json={"session_id": session_id, "message": "What are your opening hours?", "client_message_id": "m1"},
    ) as response:
        assert response.status in (200, 202), await response.text()
        answer = await response.json()
    async with asyncio.timeout(30):
        while answer.get("status") == "processing" or not answer["replies"]:
            await asyncio.sleep(0.2)
            async with http.get(f"{process.url}/api/chat/{session_id}/messages", params={"after": 0}) as r:
                answer = await r.json()
    return [reply["text"] for reply in answer["replies"]]


async def _replies_to(telegram: FakeTelegramAPI, chat: int, timeout_s: float = 30.0) -> list[str]:
    async with asyncio.timeout(timeout_s):
        while not [c for c in telegram.delivered("sendMessage") if c.chat_id == chat]:
            await asyncio.sleep(0.1)
    return [c.text for c in telegram.delivered("sendMessage") if c.chat_id == chat]


async def _graph_sends_settle(
    graph: FakeGraphAPI, senders: set[str], timeout_s: float = 60.0
) -> Counter[str]:
    async with asyncio.timeout(timeout_s):
        while {m["recipient"]["id"] for m in graph.sent} < senders:
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # room for a second (doubled) answer to show itself
    return Counter(m["recipient"]["id"] for m in graph.sent)


async def test_two_processes_share_the_work_and_hand_polling_over(
    tmp_path: Path, fakes: tuple[FakeTelegramAPI, FakeGraphAPI, str], shared_database: str
) -> None:
    telegram, graph, graph_base = fakes

    def process(name: str) -> ServiceProcess:
        return ServiceProcess(
            name,
            tmp_path,
            {
                "DATABASE_URL": shared_database,
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "TELEGRAM_API_BASE": telegram.via(name),
                "TELEGRAM_KIMMIE_CHAT_ID": str(KIMMIE),
                "META_APP_SECRET": SECRET,
                "FACEBOOK_PAGE_ACCESS_TOKEN": "PAGE_TOKEN",
                "META_GRAPH_API_BASE": graph_base,
                "JOB_POLL_INTERVAL_S": "0.1",
            },
        )

    a, b = process("a"), process("b")
    try:
        for p in (a, b):
            p.start()
        await asyncio.gather(a.wait_healthy(), b.wait_healthy())

        # One polls, the other knows it and waits.
        await telegram.wait_for_poll(lambda polls: len(polls) >= 1, timeout=30)
        poller, follower = (a, b) if telegram.polls[0] == "a" else (b, a)
        await wait_until_logged(follower, WAITING)
        assert poller.logged(POLLING) and not follower.logged(POLLING)
        telegram.push_update(_update(1, 501, "What are your opening hours?"))
        assert await _replies_to(telegram, 501)
        assert set(telegram.polls) == {poller.name}
        assert telegram.max_open_polls == 1

        async with aiohttp.ClientSession() as http:
            # Meta webhooks to both: each message answered once, also when Meta redelivers it to the
            # other process.
            senders = {f"psid-{n}" for n in range(8)}
            statuses = []
            for n in range(8):
                first, second = (a, b) if n % 2 else (b, a)
                statuses.append(await _post_webhook(http, first, f"mid-{n}", f"psid-{n}"))
                statuses.append(await _post_webhook(http, second, f"mid-{n}", f"psid-{n}"))
            assert statuses == [200] * 16
            answers = await _graph_sends_settle(graph, senders)
            assert answers == Counter({sender: 1 for sender in senders})

            # The web chat on both; a reply written by either process's worker reaches the waiting POST.
            for n, p in enumerate((a, b, a, b)):
                assert await _chat(http, p, f"web-session-{n:04d}")

        # kill -9 the poller: the follower takes polling over and answers the next Telegram message.
        poller.kill()
        await telegram.wait_for_poll(lambda polls: follower.name in polls, timeout=60)
        await wait_until_logged(follower, POLLING)
        telegram.push_update(_update(2, 502, "What are your opening hours?"))
        assert await _replies_to(telegram, 502)
        assert telegram.max_open_polls == 1
    finally:
        a.stop()
        b.stop()
