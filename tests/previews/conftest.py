"""Fixtures for the preview tests: the fake FAL queue and the whole runtime as cheshire/runtime.py
builds it (routes, jobs, worker) with FAL pointed at the fake, on a real port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from cheshire.runtime import Runtime, build_runtime
from core.db.database import Database
from core.db.models import GroomingDesign, Job, Message
from core.settings import Settings
from tests.channels.conftest import make_settings as channel_settings
from tests.fakes.fal import FakeFal


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    fake = FakeFal()
    await fake.start()
    yield fake
    await fake.stop()


def preview_settings(database_url: str, fal: FakeFal, media: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "fal_ai_key": "fal-test-key",
        "fal_queue_base": fal.base,
        "fal_jwks_url": fal.base + "/.well-known/jwks.json",
        "media_dir": str(media),
        "job_poll_interval_s": 0.05,
        "chat_sync_wait_s": 0.0,
    }
    values.update(overrides)
    return channel_settings(database_url, **values)


@dataclass
class Service:
    base: str
    rt: Runtime


@asynccontextmanager
async def running(settings: Settings, *, port: int = 0) -> AsyncIterator[Service]:
    rt = build_runtime(settings)
    runner = web.AppRunner(rt.app, access_log=None)
    await runner.setup()
    for hook in rt.on_startup:
        await hook()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rt.worker.start()
    if rt.telegram is not None:
        await rt.telegram.build()  # as `python -m bot` does once /healthz answers
    try:
        yield Service(f"http://127.0.0.1:{port}", rt)
    finally:
        await rt.worker.stop()
        await runner.cleanup()
        for hook in reversed(rt.on_shutdown):
            await hook()
        if rt.telegram is not None:
            await rt.telegram.close()
        await rt.db.dispose()


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout_s: float = 30.0) -> Any:
    """Until `check()` returns something truthy (then that)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)


async def outbound(db: Database) -> list[Message]:
    async with db.transaction() as session:
        rows = await session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
        return list(rows)


async def designs(db: Database) -> list[GroomingDesign]:
    async with db.transaction() as session:
        return list(await session.scalars(select(GroomingDesign).order_by(GroomingDesign.id)))


async def jobs(db: Database, kind: str) -> list[Job]:
    async with db.transaction() as session:
        return list(await session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def payloads(message: Message) -> list[str]:
    return [str(q["payload"]) for q in message.quick_replies or []]
