"""Meta webhooks: each fixture posted signed, checked for what is stored and queued; handshake;
signatures; redeliveries; unknown objects; content type and size limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from channels.meta.parser import parse_webhook
from core.conversation.ingest import PROCESS_JOB
from core.db.database import Database
from core.db.models import ChannelIdentity, Conversation, Job, Message
from tests.channels.conftest import (
    APP_SECRET,
    IG_APP_SECRET,
    build_app,
    fixture_bytes,
    make_settings,
    post_signed,
)

MESSENGER = "/webhook/facebook"
INSTAGRAM = "/webhook/instagram"

# fixture → (path, [(channel, sender, mid, text, payload, attachment kinds, reply_to)]);
# reply_to is checked on the parser (the message table has no column for it).
EXPECTED: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
    "messenger_text": (
        MESSENGER,
        [
            (
                "messenger",
                "6543210987654321",
                "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
                "Hi! Do you have anything Saturday for a doodle? 🐶",
                None,
                [],
                None,
            )
        ],
    ),
    "messenger_quick_reply": (
        "/webhook/fb",
        [("messenger", "6543210987654321", "m_qr_0001", "Full groom", "SERVICE_FULL_GROOM", [], None)],
    ),
    "messenger_postback": (
        MESSENGER,
        [("messenger", "6543210987654321", "m_pb_0001", "Book now", "BOOK", [], None)],
    ),
    "messenger_image": (
        MESSENGER,
        [("messenger", "6543210987654321", "m_img_0001", "", None, ["image"], None)],
    ),
    "messenger_echo": (MESSENGER, []),
    "messenger_read": (MESSENGER, []),
    "messenger_delivery": (MESSENGER, []),
    "instagram_text": (
        INSTAGRAM,
        [
            (
                "instagram",
                "1122334455667788",
                "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAwOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTIyMzc5NDk5MjEwODEyMTo3MjA1MzY4MDc4MjQ0NTI4MTc2",
                "hello from insta, how much for a bath?",
                None,
                [],
                None,
            )
        ],
    ),
    "instagram_image": (
        INSTAGRAM,
        [
            (
                "instagram",
                "1122334455667788",
                "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOmltYWdl",
                "",
                None,
                ["image"],
                None,
            )
        ],
    ),
    "instagram_deleted": (INSTAGRAM, []),
    "instagram_reply_to": (
        INSTAGRAM,
        [
            (
                "instagram",
                "1122334455667788",
                "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOnJlcGx5",
                "Yes, that one please",
                None,
                [],
                "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOm9yaWdpbmFs",
            )
        ],
    ),
    # Sorted by timestamp across entries; the read and the echo are skipped.
    "messenger_batch": (
        MESSENGER,
        [
            ("messenger", "1000000000000001", "m_batch_a1", "first (earliest)", None, [], None),
            ("messenger", "1000000000000001", "m_batch_a2", "Prices", "PRICES", [], None),
            ("messenger", "1000000000000002", "m_batch_b1", "second (later)", None, [], None),
        ],
    ),
}


async def inbound_rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(Message, ChannelIdentity.external_id)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
                .where(Message.direction == "in")
                .order_by(Message.id)
            )
        ).all()
    return [
        (
            m.channel,
            external_id,
            m.platform_message_id,
            m.text,
            m.payload,
            [a["kind"] for a in m.attachments],
        )
        for m, external_id in rows
    ]


async def process_jobs(db: Database) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        jobs = (await session.execute(select(Job).where(Job.kind == PROCESS_JOB).order_by(Job.id))).scalars()
        return [job.payload for job in jobs]


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_fixture_posted_signed_is_stored_and_queued(client: Any, db: Database, name: str) -> None:
    path, expected = EXPECTED[name]
    response = await post_signed(client, path, fixture_bytes(name))
    assert response.status == 200
    assert await response.text() == "EVENT_RECEIVED"
    rows = await inbound_rows(db)
    assert [row[:6] for row in rows] == [row[:6] for row in expected]
    jobs = await process_jobs(db)
    async with db.transaction() as session:
        ids = list((await session.execute(select(Message.id).order_by(Message.id))).scalars())
    assert [job["message_id"] for job in jobs] == ids


def test_parser_keeps_reply_to_and_image_urls() -> None:
    result = parse_webhook(json.loads(fixture_bytes("instagram_reply_to")))
    assert result.messages[0].reply_to == "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOm9yaWdpbmFs"
    image = parse_webhook(json.loads(fixture_bytes("messenger_image"))).messages[0]
    assert image.attachments[0].url == "https://scontent.xx.fbcdn.net/v/t1.15752-9/biscuit.jpg"
    batch = parse_webhook(json.loads(fixture_bytes("messenger_batch")))
    assert batch.skipped == {"read": 1, "echo": 1}


async def test_unknown_object_is_ignored_with_200(client: Any, db: Database) -> None:
    raw = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    response = await post_signed(client, MESSENGER, raw)
    assert response.status == 200
    assert await inbound_rows(db) == []


@pytest.mark.parametrize(
    "how",
    ["missing", "wrong", "right_over_different_bytes", "wrong_secret", "not_sha256"],
)
async def test_bad_signature_is_403_and_nothing_stored(client: Any, db: Database, how: str) -> None:
    from channels.meta.views import sign

    raw = fixture_bytes("messenger_text")
    signatures = {
        "missing": None,
        "wrong": "sha256=" + "0" * 64,
        # A valid signature of the same JSON serialised differently (not unicode-escaped).
        "right_over_different_bytes": sign(
            json.dumps(json.loads(raw), ensure_ascii=False).encode(), APP_SECRET
        ),
        "wrong_secret": sign(raw, "another-secret"),
        "not_sha256": "sha1=" + sign(raw, APP_SECRET).removeprefix("sha256="),
    }
    response = await post_signed(client, MESSENGER, raw, secret=None, signature=signatures[how])
    assert response.status == 403
    assert await inbound_rows(db) == []
    assert await process_jobs(db) == []


async def test_instagram_accepts_its_own_app_secret(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    settings = make_settings(database_url, instagram_app_secret=IG_APP_SECRET)
    client = await aiohttp_client(build_app(db, settings))
    response = await post_signed(client, INSTAGRAM, fixture_bytes("instagram_text"), secret=IG_APP_SECRET)
    assert response.status == 200
    # ...but the Messenger webhook does not.
    response = await post_signed(client, MESSENGER, fixture_bytes("messenger_text"), secret=IG_APP_SECRET)
    assert response.status == 403
    assert len(await inbound_rows(db)) == 1


async def test_without_app_secret_posts_are_refused_503(
    aiohttp_client: Any, db: Database, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, meta_app_secret=None)
    client = await aiohttp_client(build_app(db, settings))
    response = await post_signed(client, MESSENGER, fixture_bytes("messenger_text"), secret=None)
    assert response.status == 503
    assert "META_APP_SECRET" in caplog.text
    assert await inbound_rows(db) == []


async def test_unsigned_allowed_only_when_explicitly_enabled(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    settings = make_settings(database_url, meta_app_secret=None, meta_allow_unsigned=True)
    client = await aiohttp_client(build_app(db, settings))
    response = await post_signed(client, MESSENGER, fixture_bytes("messenger_text"), secret=None)
    assert response.status == 200
    assert len(await inbound_rows(db)) == 1


async def test_same_event_five_times_is_stored_once(client: Any, db: Database) -> None:
    raw = fixture_bytes("messenger_text")
    for _ in range(5):
        assert (await post_signed(client, MESSENGER, raw)).status == 200
    assert len(await inbound_rows(db)) == 1
    assert len(await process_jobs(db)) == 1


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/webhook/facebook", "fb-verify-token", 200),
        ("/webhook/fb", "fb-verify-token", 200),
        ("/webhook/instagram", "ig-verify-token", 200),
        ("/webhook/facebook", "ig-verify-token", 403),
        ("/webhook/instagram", "wrong", 403),
    ],
)
async def test_handshake(client: Any, path: str, token: str, status: int) -> None:
    response = await client.get(
        path, params={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"}
    )
    assert response.status == status
    if status == 200:
        assert response.content_type == "text/plain"
        assert await response.text() == "1158201444"


async def test_handshake_wrong_mode_is_403(client: Any) -> None:
    response = await client.get(
        MESSENGER,
        params={"hub.mode": "unsubscribe", "hub.verify_token": "fb-verify-token", "hub.challenge": "1"},
    )
    assert response.status == 403


async def test_wrong_content_type_415_malformed_json_400_too_large_413(client: Any, db: Database) -> None:
    raw = fixture_bytes("messenger_text")
    from channels.meta.views import sign

    response = await client.post(
        MESSENGER,
        data=raw,
        headers={"Content-Type": "text/plain", "X-Hub-Signature-256": sign(raw, APP_SECRET)},
    )
    assert response.status == 415
    broken = b'{"object": "page", "entry": ['
    response = await post_signed(client, MESSENGER, broken)
    assert response.status == 400
    assert (await response.json())["error"] == "malformed JSON body"
    huge = b'{"object": "page", "pad": "' + b"x" * (300 * 1024) + b'"}'
    response = await post_signed(client, MESSENGER, huge)
    assert response.status == 413
    assert await inbound_rows(db) == []


async def test_responses_carry_a_request_id(client: Any) -> None:
    response = await post_signed(client, MESSENGER, fixture_bytes("messenger_read"))
    assert response.status == 200
    assert response.headers.get("X-Request-Id")
    response = await post_signed(client, MESSENGER, b"{}", secret=None)
    assert response.status == 403
    body = await response.json()
    assert body["request_id"] == response.headers["X-Request-Id"]


async def test_logs_hold_no_message_text_or_secrets(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO)
    await post_signed(client, MESSENGER, fixture_bytes("messenger_text"))
    await client.get(
        MESSENGER,
        params={"hub.mode": "subscribe", "hub.verify_token": "fb-verify-token", "hub.challenge": "7"},
    )
    # (aiohttp.access is the test server's own access log; production runs with access_log=None.)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert "doodle" not in ours
    assert "fb-verify-token" not in ours
    assert APP_SECRET not in ours
    assert "1 new" in ours


async def test_database_down_is_a_503_and_the_redelivery_is_stored(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    """Meta redelivers on anything but 200: while the database is away the POST gets a clear 503
    (never a 500), and the same event posted again once it is back is stored, once."""
    settings = make_settings(database_url)
    down = Database("postgresql+asyncpg://postgres@127.0.0.1:1/cheshire")  # nothing listens on port 1
    try:
        unavailable = await aiohttp_client(build_app(down, settings))
        raw = fixture_bytes("messenger_text")
        response = await post_signed(unavailable, MESSENGER, raw)
        assert response.status == 503
        assert "retry later" in (await response.json())["error"]
    finally:
        await down.dispose()
    available = await aiohttp_client(build_app(db, settings))
    assert (await post_signed(available, MESSENGER, raw)).status == 200
    assert (await post_signed(available, MESSENGER, raw)).status == 200
    assert len(await inbound_rows(db)) == 1
    assert len(await process_jobs(db)) == 1
