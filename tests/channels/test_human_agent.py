"""META_HUMAN_AGENT_TAG: Kimmie's own replies between 24 h and 7 days after the customer's last message
go out with Meta's HUMAN_AGENT tag; inside 24 h they are ordinary replies, past 7 days they take the
fallback route, and automated messages are never tagged. Meta is the fake Graph API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from channels.meta.sender import MetaSenders
from core.db.database import Database
from core.delivery import Delivery
from core.ports import ChannelSender
from core.types import Author, Channel
from tests.channels.conftest import make_settings
from tests.channels.test_delivery import RecordingSender, customer_writes, job_for, message, reply
from tests.fakes.graph_api import FakeGraphAPI

RESPONSE = {"messaging_type": "RESPONSE"}
HUMAN_AGENT = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}


@pytest.fixture(params=[True], ids=["tag-on"])
def tag_enabled(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def meta(graph: FakeGraphAPI, database_url: str, tag_enabled: bool) -> AsyncIterator[MetaSenders]:
    base = await graph.start()
    senders = MetaSenders(
        make_settings(database_url, meta_graph_api_base=base, meta_human_agent_tag=tag_enabled)
    )
    await senders.start()
    yield senders
    await senders.close()


@pytest.fixture
def telegram() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def delivery(db: Database, meta: MetaSenders, telegram: RecordingSender, database_url: str) -> Delivery:
    senders: dict[str, ChannelSender] = {**meta.senders, "telegram": telegram}
    return Delivery(db=db, senders=senders, settings=make_settings(database_url))


def how_sent(graph: FakeGraphAPI) -> list[dict[str, Any]]:
    """What Meta saw about each call: its messaging type and tag."""
    return [{k: m[k] for k in ("messaging_type", "tag") if k in m} for m in graph.sent]


async def deliver(db: Database, delivery: Delivery, conversation: int, channel: str, author: Author) -> int:
    message_id = await reply(db, conversation, channel, "Hi, Kimmie here!", author=author)
    await delivery.handle(await job_for(db, message_id))
    return message_id


@pytest.mark.parametrize("channel", [Channel.MESSENGER, Channel.INSTAGRAM])
async def test_kimmie_between_24h_and_7_days_is_tagged(
    db: Database, delivery: Delivery, graph: FakeGraphAPI, channel: Channel
) -> None:
    conversation = await customer_writes(db, channel, f"{channel}-1", ago=timedelta(days=3))
    message_id = await deliver(db, delivery, conversation, channel.value, Author.KIMMIE)
    assert graph.texts() == ["Hi, Kimmie here!"]
    assert how_sent(graph) == [HUMAN_AGENT]
    assert (await message(db, message_id)).delivery_status == "sent"


async def test_kimmie_inside_24h_is_an_ordinary_reply(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-fresh", ago=timedelta(hours=2))
    await deliver(db, delivery, conversation, "messenger", Author.KIMMIE)
    assert how_sent(graph) == [RESPONSE]


async def test_every_part_of_a_long_kimmie_reply_is_tagged(
    db: Database, delivery: Delivery, graph: FakeGraphAPI
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-long", ago=timedelta(hours=30))
    message_id = await reply(db, conversation, "messenger", "word " * 500, author=Author.KIMMIE)
    await delivery.handle(await job_for(db, message_id))
    assert len(graph.sent) == 2
    assert how_sent(graph) == [HUMAN_AGENT, HUMAN_AGENT]


async def test_assistant_is_never_tagged(
    db: Database, delivery: Delivery, graph: FakeGraphAPI, telegram: RecordingSender
) -> None:
    fresh = await customer_writes(db, Channel.INSTAGRAM, "igsid-fresh", ago=timedelta(hours=2))
    await deliver(db, delivery, fresh, "instagram", Author.ASSISTANT)
    assert how_sent(graph) == [RESPONSE]
    stale = await customer_writes(db, Channel.INSTAGRAM, "igsid-stale", ago=timedelta(days=3))
    message_id = await deliver(db, delivery, stale, "instagram", Author.ASSISTANT)
    assert how_sent(graph) == [RESPONSE]  # no second call: outside 24 h automated messages never go
    row = await message(db, message_id)
    assert row.delivery_status == "dead" and "24-hour" in (row.delivery_error or "")


async def test_kimmie_after_7_days_takes_the_fallback(
    db: Database, delivery: Delivery, graph: FakeGraphAPI, telegram: RecordingSender
) -> None:
    await customer_writes(db, Channel.TELEGRAM, "4242", ago=timedelta(days=9), phone="+15550111")
    conversation = await customer_writes(
        db, Channel.MESSENGER, "psid-old", ago=timedelta(days=8), phone="+15550111"
    )
    message_id = await deliver(db, delivery, conversation, "messenger", Author.KIMMIE)
    assert graph.calls == 0
    assert [(r.channel, m.text) for r, m in telegram.sent] == [(Channel.TELEGRAM, "Hi, Kimmie here!")]
    assert not any(m.human_agent for _, m in telegram.sent)
    row = await message(db, message_id)
    assert (row.delivery_status, row.delivered_via) == ("sent", "telegram")


@pytest.mark.parametrize("tag_enabled", [False], ids=["tag-off"], indirect=True)
@pytest.mark.parametrize("ago", [timedelta(hours=2), timedelta(days=3), timedelta(days=8)])
async def test_setting_off_changes_nothing(
    db: Database, delivery: Delivery, graph: FakeGraphAPI, ago: timedelta
) -> None:
    conversation = await customer_writes(db, Channel.MESSENGER, "psid-off", ago=ago)
    await deliver(db, delivery, conversation, "messenger", Author.KIMMIE)
    assert how_sent(graph) == [RESPONSE]  # tried untagged, as before: Meta decides
