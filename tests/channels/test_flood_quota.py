"""The flood quota counts new events only (issue 15.6).

A sender over RATE_LIMIT_PER_MINUTE has its excess events stored unanswered. Meta redelivers events
(after a timeout, an outage, or for no reason); a redelivery is a no-op at ingest, and it must not
take a token either, or after an outage the redeliveries push the customer's real new messages into
"stored unanswered". Nor does a post the database never stored. And a post with a valid signature is
not held to the per-IP limit at all: Meta sends everyone's webhooks from a few addresses.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from core.conversation.ingest import PROCESS_JOB
from core.db.database import Database
from core.db.models import Job, Message
from tests.channels.conftest import build_app, make_settings, post_signed
from tests.support.faults import every_connection_busy

MESSENGER = "/webhook/facebook"


def _post(*mids: str, sender: str = "customer") -> bytes:
    events = [
        {
            "sender": {"id": sender},
            "recipient": {"id": "PAGE"},
            "timestamp": 1732572000000 + n,
            "message": {"mid": mid, "text": f"message {mid}"},
        }
        for n, mid in enumerate(mids)
    ]
    return json.dumps({"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": events}]}).encode()


async def _answered(db: Database) -> list[str]:
    """Platform ids of the stored messages that got an assistant turn (a process job)."""
    async with db.transaction() as session:
        rows = await session.execute(select(Message.id, Message.platform_message_id))
        ids = {message_id: str(mid) for message_id, mid in rows.all()}
        jobs = (await session.execute(select(Job.payload).where(Job.kind == PROCESS_JOB))).scalars().all()
    return sorted(ids[job["message_id"]] for job in jobs)


async def _stored(db: Database) -> list[str]:
    async with db.transaction() as session:
        mids = (await session.execute(select(Message.platform_message_id))).scalars()
        return sorted(str(mid) for mid in mids)


async def test_redeliveries_never_push_a_new_message_over_the_quota(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    client = await aiohttp_client(build_app(db, make_settings(database_url, rate_limit_per_minute=2)))
    assert (await post_signed(client, MESSENGER, _post("m_a"))).status == 200
    for _ in range(5):  # Meta redelivers the first message again and again
        assert (await post_signed(client, MESSENGER, _post("m_a"))).status == 200
    assert (await post_signed(client, MESSENGER, _post("m_b"))).status == 200
    assert await _stored(db) == ["m_a", "m_b"]
    assert await _answered(db) == ["m_a", "m_b"]  # two new messages, a quota of two: both answered
    # The quota still holds for new messages: a third is a flood's excess.
    assert (await post_signed(client, MESSENGER, _post("m_c"))).status == 200
    assert await _answered(db) == ["m_a", "m_b"] and "m_c" in await _stored(db)


async def test_redeliveries_in_the_same_post_do_not_count(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    client = await aiohttp_client(build_app(db, make_settings(database_url, rate_limit_per_minute=3)))
    assert (await post_signed(client, MESSENGER, _post("m_a"))).status == 200
    # One post carrying the old message again and two new ones: three new in all, a quota of three.
    assert (await post_signed(client, MESSENGER, _post("m_a", "m_b", "m_c"))).status == 200
    assert await _answered(db) == ["m_a", "m_b", "m_c"]
    assert (await post_signed(client, MESSENGER, _post("m_d"))).status == 200
    assert await _answered(db) == ["m_a", "m_b", "m_c"]  # the fourth is over it


async def test_a_post_the_database_never_stored_is_not_charged(
    aiohttp_client: Any, database_url: str, db: Database
) -> None:
    tiny = Database(database_url, pool_size=1, pool_timeout_s=0.2)
    try:
        client = await aiohttp_client(build_app(tiny, make_settings(database_url, rate_limit_per_minute=2)))
        async with every_connection_busy(tiny):
            for _ in range(3):  # an outage: Meta's attempts all get a 503
                assert (await post_signed(client, MESSENGER, _post("m_a"))).status == 503
        assert (await post_signed(client, MESSENGER, _post("m_a"))).status == 200
        assert (await post_signed(client, MESSENGER, _post("m_b"))).status == 200
        assert await _answered(db) == ["m_a", "m_b"]
    finally:
        await tiny.dispose()


async def test_signed_posts_are_not_held_to_the_per_ip_limit_invalid_ones_are(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    settings = make_settings(database_url, webhook_rate_limit_per_minute=2)
    client = await aiohttp_client(build_app(db, settings))
    signed = [
        (await post_signed(client, MESSENGER, _post(f"m_{n}", sender=f"customer{n}"))).status
        for n in range(6)
    ]
    assert signed == [200] * 6
    forged = [
        (await post_signed(client, MESSENGER, _post("m_x"), signature="sha256=00")).status for _ in range(3)
    ]
    assert forged == [403, 403, 429]
    assert len(await _stored(db)) == 6
