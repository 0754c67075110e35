"""The Telegram send limiter shared through Redis (REDIS_URL): Telegram counts sends per bot, so two
processes sending as one bot draw on one budget (alone, the second would have had free sends); a
Redis that is down never stops sending. Against the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid

from bot.sender import RedisSendLimiter, SendLimiter
from cheshire.runtime import build_runtime
from tests.bot.conftest import make_settings

REDIS = "redis://127.0.0.1:6379/0"


def _process(prefix: str) -> RedisSendLimiter:
    """One process's limiter: a chat may get 3 sends at once, then one a second; 5 at once overall."""
    return RedisSendLimiter(
        REDIS, prefix=prefix, global_rate=5.0, global_burst=5.0, chat_rate=1.0, chat_burst=3.0
    )


async def test_two_processes_share_one_chats_budget_and_the_global_one() -> None:
    prefix = f"test:tg-send:{uuid.uuid4().hex}:"
    first, second = _process(prefix), _process(prefix)
    try:
        # The first process uses the chat's burst; the second process's next send to that chat must
        # wait (by itself it would have had three free sends).
        assert [await first.reserve("42") for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = await second.reserve("42")
        assert wait is not None and wait > 0
        # Another chat has its own bucket, but the global one is shared: 5 at once in all.
        assert await second.reserve("43") == 0.0
        overall = await first.reserve("44")
        assert overall is not None and overall > 0
    finally:
        await first.close()
        await second.close()


async def test_redis_down_falls_back_to_this_process_and_still_sends() -> None:
    limiter = RedisSendLimiter("redis://127.0.0.1:9/0", chat_burst=3.0)  # nothing listens on port 9
    try:
        assert await limiter.reserve("42") is None
        async with asyncio.timeout(5):
            await limiter.acquire("42")
    finally:
        await limiter.close()


async def test_the_process_uses_the_redis_limiter_when_redis_url_is_set(database_url: str) -> None:
    shared = build_runtime(make_settings(database_url, redis_url=REDIS))
    alone = build_runtime(make_settings(database_url))
    try:
        assert shared.telegram is not None and alone.telegram is not None
        assert isinstance((await shared.telegram.build()).sender.limiter, RedisSendLimiter)
        assert isinstance((await alone.telegram.build()).sender.limiter, SendLimiter)
    finally:
        for rt in (shared, alone):
            assert rt.telegram is not None
            await rt.telegram.close()  # the bot's shutdown hooks, then its session
            await rt.db.dispose()
