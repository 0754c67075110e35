"""Fixtures for the channel tests: settings with Meta credentials, the app as production builds it
(channels/app.py + our setup_routes), a fake Graph API server, and signed-POST helpers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from channels.app import create_app
from channels.meta import views as meta_views
from channels.meta.views import sign
from channels.ratelimit import InMemoryRateLimiter, RateLimiter
from channels.web import views as web_views
from cheshire.runtime import Runtime, build_runtime
from core.conversation.ingest import PROCESS_JOB
from core.db.database import Database
from core.settings import Settings
from tests.fakes.graph_api import FakeGraphAPI

APP_SECRET = "test-app-secret-0123456789"
IG_APP_SECRET = "test-ig-app-secret-987654"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "payloads" / "meta"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "meta_app_secret": APP_SECRET,
        "facebook_verify_token": "fb-verify-token",
        "instagram_verify_token": "ig-verify-token",
        "facebook_page_access_token": "PAGE_TOKEN",
        "instagram_access_token": "IG_TOKEN",
        "chat_sync_wait_s": 0.0,
        "rate_limit_per_minute": 1000,
        "chat_ip_rate_limit_per_minute": 1000,
        "webhook_rate_limit_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def fixture_bytes(name: str, *, fresh: bool = False) -> bytes:
    """A payload file as Meta sends it: unicode-escaped JSON (the bytes the signature covers).

    `fresh` moves the event timestamps to now (keeping their order), so the customer is inside
    Meta's 24-hour window when the reply goes out."""
    payload = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    if fresh:
        shift = int(time.time() * 1000) - 1732572000000
        for entry in payload["entry"]:
            for event in entry.get("messaging", []):
                event["timestamp"] += shift
    return json.dumps(payload, ensure_ascii=True).encode()


def build_app(db: Database, settings: Settings, limiter: RateLimiter | None = None) -> web.Application:
    app = create_app(settings, db)
    meta_views.setup_routes(app, db=db, settings=settings, limiter=limiter or InMemoryRateLimiter())
    web_views.setup_routes(app, db=db, settings=settings)
    return app


@pytest.fixture
def channel_settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, db: Database, channel_settings: Settings
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(build_app(db, channel_settings))


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphAPI]:
    fake = FakeGraphAPI()
    yield fake
    await fake.stop()


async def post_signed(
    client: TestClient[Any, Any],
    path: str,
    raw: bytes,
    *,
    secret: str | None = APP_SECRET,
    signature: str | None = None,
) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = sign(raw, secret)
    return await client.post(path, data=raw, headers=headers)


# --- A stand-in for the conversation engine (ENG-B's lives in core/conversation/) -----------------


def register_echo_engine(registry: Any, db: Database) -> None:
    """A minimal `process_message` handler that answers through the outbox like the engine does."""

    from core.db.models import Conversation, Message
    from core.outbox import queue_outbound
    from core.types import OutboundMessage, QuickReply

    async def process(job: Any) -> None:
        async with db.transaction() as session:
            inbound = await session.get_one(Message, job.payload["message_id"])
            conversation = await session.get_one(Conversation, job.payload["conversation_id"])
            if inbound.payload == "BOOK":
                answer = OutboundMessage(text="Great! Saturday 10:00 is held for you.")
            else:
                answer = OutboundMessage(
                    text=f"You said: {inbound.text}",
                    quick_replies=(QuickReply("Book", "BOOK"), QuickReply("Prices", "PRICES")),
                )
            await queue_outbound(
                session, conversation_id=conversation.id, channel=conversation.channel, message=answer
            )

    registry.register(PROCESS_JOB, process)


# --- The whole service, as cheshire/runtime.py builds it, on a real port ----------------------------------

ServiceT = tuple[str, Runtime, bool]


@pytest.fixture
async def service(db: Database, database_url: str, graph: FakeGraphAPI) -> AsyncIterator[ServiceT]:
    graph_base = await graph.start()
    settings = make_settings(
        database_url, meta_graph_api_base=graph_base, job_poll_interval_s=0.05, chat_sync_wait_s=10.0
    )
    rt = build_runtime(settings)
    stand_in = PROCESS_JOB not in rt.registry.kinds
    if stand_in:
        register_echo_engine(rt.registry, rt.db)
    runner = web.AppRunner(rt.app, access_log=None)
    await runner.setup()
    for hook in rt.on_startup:
        await hook()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])  # the port the OS picked
    rt.worker.start()
    try:
        yield f"http://127.0.0.1:{port}", rt, stand_in
    finally:
        await rt.worker.stop()
        await runner.cleanup()
        for hook in reversed(rt.on_shutdown):
            await hook()
        await rt.db.dispose()
