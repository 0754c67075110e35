"""The hardening middlewares on their own: unexpected errors become a JSON 500 with the request id,
and the token bucket refills at its rate."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from channels.ratelimit import InMemoryRateLimiter, RedisRateLimiter
from core.db.database import Database
from core.settings import Settings
from tests.channels.conftest import build_app


async def test_unexpected_error_is_a_json_500_with_the_request_id(
    aiohttp_client: Any, db: Database, channel_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(db, channel_settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("something broke inside")

    app.router.add_get("/api/boom", boom)
    client = await aiohttp_client(app)
    response = await client.get("/api/boom", headers={"X-Request-Id": "req-123"})
    assert response.status == 500
    assert await response.json() == {"error": "internal error", "request_id": "req-123"}
    assert response.headers["X-Request-Id"] == "req-123"
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert "something broke inside" in (record.exc_text or "") or record.exc_info is not None


async def test_unknown_paths_stay_404(client: Any) -> None:
    assert (await client.get("/api/nothing-here")).status == 404


async def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = InMemoryRateLimiter(clock=lambda: now[0])
    assert [(await limiter.hit("k", 2)).allowed for _ in range(3)] == [True, True, False]
    denied = await limiter.hit("k", 2)
    assert denied.retry_after_s == pytest.approx(30.0)
    now[0] += 30.0  # 2 per minute: one token back every 30 s
    assert (await limiter.hit("k", 2)).allowed
    assert not (await limiter.hit("k", 2)).allowed


async def test_redis_down_lets_requests_through() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:9/0")
    try:
        assert all([(await limiter.hit("k", 1)).allowed for _ in range(3)])
    finally:
        await limiter.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_refunded_token_is_back_but_never_above_the_burst(backend: str) -> None:
    import uuid

    limiter: InMemoryRateLimiter | RedisRateLimiter
    if backend == "memory":
        limiter = InMemoryRateLimiter(clock=lambda: 0.0)
    else:
        limiter = RedisRateLimiter("redis://127.0.0.1:6379/0", prefix=f"cheshire-test:{uuid.uuid4().hex}:")
    try:
        assert [(await limiter.hit("k", 2)).allowed for _ in range(3)] == [True, True, False]
        await limiter.refund("k", 2)  # the second hit turned out not to count
        assert (await limiter.hit("k", 2)).allowed
        assert not (await limiter.hit("k", 2)).allowed
        for _ in range(5):
            await limiter.refund("k", 2)
        assert [(await limiter.hit("k", 2)).allowed for _ in range(3)] == [True, True, False]
        await limiter.refund("never-seen", 2)  # no bucket: nothing to give back, no error
    finally:
        await limiter.close()
