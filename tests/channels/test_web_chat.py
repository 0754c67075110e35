"""/api/chat: schema errors name the field, size and type limits, sync answers and the 202 + poll path,
CORS, rate limits (in memory and in Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from channels.ratelimit import InMemoryRateLimiter, RedisRateLimiter
from channels.web.sender import WebSender
from core.conversation.ingest import PROCESS_JOB
from core.db.database import Database
from core.db.models import Job, Message
from core.delivery import register_jobs
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.settings import Settings
from tests.channels.conftest import build_app, make_settings, register_echo_engine

SESSION = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.fixture
async def worker(db: Database, channel_settings: Settings) -> AsyncIterator[Worker]:
    registry = JobRegistry()
    register_echo_engine(registry, db)
    register_jobs(registry, db=db, senders={"web": WebSender()}, settings=channel_settings)
    running = Worker(db, registry, WorkerConfig(concurrency=2, poll_interval_s=0.05))
    running.start()
    yield running
    await running.stop()


@pytest.fixture
async def sync_client(aiohttp_client: Any, db: Database, database_url: str) -> Any:
    """The chat waits (up to 30 s, far more than needed) for the engine's replies."""
    return await aiohttp_client(build_app(db, make_settings(database_url, chat_sync_wait_s=30.0)))


async def test_message_gets_the_reply_in_the_answer(sync_client: Any, worker: Worker) -> None:
    response = await sync_client.post(
        "/api/chat", json={"session_id": SESSION, "message": "hi there", "name": "Ann"}
    )
    assert response.status == 200
    body = await response.json()
    assert [r["text"] for r in body["replies"]] == ["You said: hi there"]
    assert body["replies"][0]["quick_replies"] == ["Book", "Prices"]
    assert body["replies"][0]["options"][0] == {"title": "Book", "payload": "BOOK"}
    assert body["last_id"] == body["replies"][0]["id"]
    # A tapped quick reply comes back as its payload.
    response = await sync_client.post(
        "/api/chat", json={"session_id": SESSION, "message": "Book", "payload": "BOOK"}
    )
    assert [r["text"] for r in (await response.json())["replies"]] == [
        "Great! Saturday 10:00 is held for you."
    ]


async def test_slow_engine_gives_202_then_the_replies_by_polling(client: Any, db: Database) -> None:
    # chat_sync_wait_s is 0 in the default test settings and no worker runs yet.
    response = await client.post("/api/chat", json={"session_id": SESSION, "message": "anyone?"})
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "processing"
    last_id = body["last_id"]
    poll = await client.get(f"/api/chat/{SESSION}/messages", params={"after": last_id})
    assert (await poll.json()) == {"status": "processing", "replies": [], "last_id": last_id}

    registry = JobRegistry()
    register_echo_engine(registry, db)
    assert await Worker(db, registry).run_once() == 1
    poll = await client.get(f"/api/chat/{SESSION}/messages", params={"after": last_id})
    data = await poll.json()
    assert data["status"] == "idle"
    assert [r["text"] for r in data["replies"]] == ["You said: anyone?"]
    again = await client.get(f"/api/chat/{SESSION}/messages", params={"after": data["last_id"]})
    assert (await again.json())["replies"] == []


async def test_retried_post_is_stored_once(client: Any, db: Database) -> None:
    body = {"session_id": SESSION, "message": "hello", "client_message_id": "c-1"}
    for _ in range(3):
        assert (await client.post("/api/chat", json=body)).status == 202
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "hi"}, "session_id"),
        ({"session_id": "short", "message": "hi"}, "session_id"),
        ({"session_id": "has spaces in it!", "message": "hi"}, "session_id"),
        ({"session_id": SESSION}, "message"),
        ({"session_id": SESSION, "message": ""}, "message"),
        ({"session_id": SESSION, "message": "   "}, "message"),
        ({"session_id": SESSION, "message": "x" * 2001}, "message"),
        ({"session_id": SESSION, "message": 42}, "message"),
        ({"session_id": SESSION, "message": "hi", "name": "n" * 101}, "name"),
        ({"session_id": SESSION, "message": "hi", "payload": "ÉCLAIR"}, "payload"),
        ({"session_id": SESSION, "message": "hi", "payload": "P" * 65}, "payload"),
        (["not", "an", "object"], "body"),
    ],
)
async def test_schema_errors_are_400_naming_the_field(
    client: Any, db: Database, body: Any, field: str
) -> None:
    response = await client.post("/api/chat", json=body)
    assert response.status == 400
    data = await response.json()
    assert data["field"] == field
    assert data["error"].startswith(f"{field}:")
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_413_415_and_malformed_json(client: Any) -> None:
    response = await client.post("/api/chat", data=b"session_id=x", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    response = await client.post(
        "/api/chat", data=b'{"session_id": ', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["error"] == "malformed JSON body"
    big = b'{"session_id": "' + b"a" * (300 * 1024) + b'"}'
    response = await client.post("/api/chat", data=big, headers={"Content-Type": "application/json"})
    assert response.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(40):
            yield b"x" * 8192

    response = await client.post("/api/chat", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413


async def test_poll_validation(client: Any) -> None:
    assert (await client.get(f"/api/chat/{SESSION}/messages", params={"after": "-1"})).status == 400
    response = await client.get(f"/api/chat/{SESSION}/messages", params={"after": "abc"})
    assert (await response.json())["field"] == "after"
    assert (await client.get("/api/chat/bad!/messages")).status == 400
    unknown = await client.get(f"/api/chat/{'z' * 32}/messages")
    assert await unknown.json() == {"status": "idle", "replies": [], "last_id": 0}


async def test_cors_allow_list(client: Any) -> None:
    preflight = await client.options(
        "/api/chat",
        headers={
            "Origin": "https://www.lookingglassgroomery.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://www.lookingglassgroomery.com"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    denied = await client.options(
        "/api/chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert denied.status == 403
    assert "Access-Control-Allow-Origin" not in denied.headers
    response = await client.post(
        "/api/chat",
        json={"session_id": SESSION, "message": "hi"},
        headers={"Origin": "http://localhost:3000"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    response = await client.post(
        "/api/chat", json={"session_id": SESSION, "message": "hi"}, headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_per_session_rate_limit(aiohttp_client: Any, db: Database, database_url: str) -> None:
    settings = make_settings(database_url, rate_limit_per_minute=3)
    client = await aiohttp_client(build_app(db, settings))
    statuses = [
        (await client.post("/api/chat", json={"session_id": SESSION, "message": f"m{n}"})).status
        for n in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    limited = await client.post("/api/chat", json={"session_id": SESSION, "message": "again"})
    assert int(limited.headers["Retry-After"]) >= 1
    # Another visitor is not affected.
    other = await client.post("/api/chat", json={"session_id": "f" * 32, "message": "hi"})
    assert other.status == 202


async def test_per_ip_rate_limit_in_memory(aiohttp_client: Any, db: Database, database_url: str) -> None:
    settings = make_settings(database_url, chat_ip_rate_limit_per_minute=2)
    client = await aiohttp_client(build_app(db, settings, limiter=InMemoryRateLimiter()))
    statuses = [
        (await client.post("/api/chat", json={"session_id": f"{n}" * 16, "message": "hi"})).status
        for n in range(3)
    ]
    assert statuses == [202, 202, 429]


async def test_rate_limit_in_redis_is_shared_by_two_processes(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    """Two app instances (as two processes would) with Redis limiters share one budget per IP."""
    settings = make_settings(
        database_url, redis_url="redis://127.0.0.1:6379/0", webhook_rate_limit_per_minute=3
    )
    prefix = f"cheshire-test:{uuid.uuid4().hex}:"
    first = await aiohttp_client(
        build_app(db, settings, limiter=RedisRateLimiter(settings.redis_url or "", prefix=prefix))
    )
    second = await aiohttp_client(
        build_app(db, settings, limiter=RedisRateLimiter(settings.redis_url or "", prefix=prefix))
    )
    statuses = []
    for client in (first, second, first, second):
        response = await client.post(
            "/webhook/facebook", data=b"{}", headers={"Content-Type": "application/json"}
        )
        statuses.append(response.status)
    # 403 = let through to the signature check (unsigned); the fourth request is over the shared budget.
    assert statuses == [403, 403, 403, 429]


async def test_webhook_sender_flood_is_stored_unanswered_and_others_answered(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    import json

    from tests.channels.conftest import post_signed

    settings = make_settings(database_url, rate_limit_per_minute=2)
    client = await aiohttp_client(build_app(db, settings))
    events = [
        {
            "sender": {"id": "flooder"},
            "recipient": {"id": "PAGE"},
            "timestamp": 1732572000000 + n,
            "message": {"mid": f"m_flood_{n}", "text": "spam"},
        }
        for n in range(5)
    ]
    events.append(
        {
            "sender": {"id": "regular"},
            "recipient": {"id": "PAGE"},
            "timestamp": 1732572000100,
            "message": {"mid": "m_regular", "text": "hello"},
        }
    )
    raw = json.dumps({"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": events}]}).encode()
    assert (await post_signed(client, "/webhook/facebook", raw)).status == 200
    async with db.transaction() as session:
        rows = await session.execute(select(Message.platform_message_id, Message.id))
        stored = {str(mid): message_id for mid, message_id in rows.all()}
        jobs = (await session.execute(select(Job.payload).where(Job.kind == PROCESS_JOB))).scalars().all()
    # Nothing is lost: every event is stored for Kimmie to read...
    assert sorted(stored) == [f"m_flood_{n}" for n in range(5)] + ["m_regular"]
    # ...but only the flooder's first two (the limit) and the regular customer get an assistant turn.
    answered = {message_id for message_id in (job["message_id"] for job in jobs)}
    assert answered == {stored["m_flood_0"], stored["m_flood_1"], stored["m_regular"]}


async def test_page_and_widget_are_served(client: Any) -> None:
    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    assert "/static/chat/widget.js" in html and "Looking Glass Groomery" in html
    script = await client.get("/static/chat/widget.js")
    assert script.status == 200 and "/api/chat" in await script.text()
    assert (await client.get("/static/chat/widget.css")).status == 200


async def test_database_down_is_a_503_with_retry_after(
    aiohttp_client: Any, database_url: str, channel_settings: Settings
) -> None:
    """The widget retries a 503; a 500 would read as our bug."""
    down = Database("postgresql+asyncpg://postgres@127.0.0.1:1/cheshire")  # nothing listens on port 1
    try:
        client = await aiohttp_client(build_app(down, channel_settings))
        response = await client.post("/api/chat", json={"session_id": "s" * 16, "message": "hi"})
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert "retry later" in (await response.json())["error"]
        poll = await client.get(f"/api/chat/{'s' * 16}/messages")
        assert poll.status == 503
    finally:
        await down.dispose()
