"""End to end, as in production: the runtime built by cheshire/runtime.py (routes, middlewares, senders,
jobs), served on a real port, with its Worker running. A signed Instagram / Messenger event goes in;
the reply comes out at the fake Graph API server.

The conversation engine is ENG-B's when cheshire/runtime.py registers one (with no LLM key configured it
answers through its offline responder); otherwise a stand-in engine replying through the outbox.
"""

from __future__ import annotations

import asyncio

import aiohttp
from sqlalchemy import func, select

from channels.meta.sender import MetaSender
from channels.meta.views import sign
from core.conversation.ingest import PROCESS_JOB
from core.db.database import Database
from core.db.models import Job, Message
from core.types import OutboundMessage, QuickReply
from tests.channels.conftest import APP_SECRET, ServiceT, fixture_bytes
from tests.fakes.graph_api import FakeGraphAPI


async def post(base: str, path: str, raw: bytes) -> int:
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, APP_SECRET)}
        async with http.post(base + path, data=raw, headers=headers) as response:
            return response.status


async def settled(db: Database, graph: FakeGraphAPI, *, timeout_s: float = 30.0) -> None:
    """Until the queue is idle (every job done or dead) and something reached the Graph server."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with db.transaction() as session:
                busy = await session.scalar(
                    select(func.count()).select_from(Job).where(Job.status.in_(("queued", "running")))
                )
            if not busy and graph.sent:
                return
            await asyncio.sleep(0.05)


async def outbound(db: Database) -> list[Message]:
    async with db.transaction() as session:
        rows = await session.execute(select(Message).where(Message.direction == "out").order_by(Message.id))
        return list(rows.scalars())


async def test_signed_instagram_message_gets_a_reply(
    service: ServiceT, db: Database, graph: FakeGraphAPI
) -> None:
    base, _rt, stand_in = service
    assert await post(base, "/webhook/instagram", fixture_bytes("instagram_text", fresh=True)) == 200
    await settled(db, graph)
    replies = await outbound(db)
    assert replies and all(r.delivery_status == "sent" and r.delivered_via == "instagram" for r in replies)
    assert {m["recipient"]["id"] for m in graph.sent} == {"1122334455667788"}
    assert graph.tokens_seen and set(graph.tokens_seen) == {"IG_TOKEN"}
    if stand_in:
        assert graph.texts() == ["You said: hello from insta, how much for a bath?"]


async def test_same_event_five_times_one_message_one_reply(
    service: ServiceT, db: Database, graph: FakeGraphAPI
) -> None:
    base, rt, stand_in = service
    raw = fixture_bytes("messenger_text", fresh=True)
    statuses = await asyncio.gather(*(post(base, "/webhook/facebook", raw) for _ in range(5)))
    assert statuses == [200] * 5
    await settled(db, graph)
    async with db.transaction() as session:
        inbound = await session.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "in")
        )
        processed = await session.scalar(select(func.count()).select_from(Job).where(Job.kind == PROCESS_JOB))
    assert (inbound, processed) == (1, 1)
    replies = await outbound(db)
    # Every reply the engine wrote was delivered exactly once (a long reply is several Send API calls).
    sender = rt.senders["messenger"]
    assert isinstance(sender, MetaSender)
    expected_calls = sum(len(sender.requests_for(_as_outbound(r))) for r in replies)
    assert replies and all(r.delivery_status == "sent" for r in replies)
    assert len(graph.sent) == expected_calls
    if stand_in:
        assert len(graph.sent) == 1


def _as_outbound(row: Message) -> OutboundMessage:
    return OutboundMessage(
        text=row.text,
        quick_replies=tuple(QuickReply(q["title"], q["payload"]) for q in row.quick_replies),
        image_urls=tuple(row.image_urls),
    )
