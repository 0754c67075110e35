"""The Send API adapter against a local fake Graph API: wire format, splitting, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from channels.meta.sender import MetaSenders, split_text
from core.ports import (
    ChannelCredentialsError,
    PermanentDeliveryError,
    RecipientUnreachableError,
    RetryableDeliveryError,
    WindowClosedError,
)
from core.settings import Settings
from core.storage import LocalStorage
from core.types import Channel, OutboundMessage, QuickReply, Recipient
from tests.channels.conftest import make_settings
from tests.fakes.graph_api import FakeGraphAPI

PSID = Recipient(channel=Channel.MESSENGER, external_id="6543210987654321")
IGSID = Recipient(channel=Channel.INSTAGRAM, external_id="1122334455667788")


@pytest.fixture
async def senders(graph: FakeGraphAPI, database_url: str) -> AsyncIterator[MetaSenders]:
    base = await graph.start()
    settings: Settings = make_settings(database_url, meta_graph_api_base=base, meta_graph_api_version="v23.0")
    meta = MetaSenders(settings)
    await meta.start()
    yield meta
    await meta.close()


async def test_text_with_quick_replies(senders: MetaSenders, graph: FakeGraphAPI) -> None:
    message = OutboundMessage(
        text="What would you like?",
        quick_replies=(QuickReply("Book", "BOOK"), QuickReply("A very long title for a button", "PRICES")),
    )
    result = await senders.senders["messenger"].send(PSID, message)
    assert result.platform_message_id == "m_out_1"
    assert graph.sent == [
        {
            "recipient": {"id": "6543210987654321"},
            "messaging_type": "RESPONSE",
            "message": {
                "text": "What would you like?",
                "quick_replies": [
                    {"content_type": "text", "title": "Book", "payload": "BOOK"},
                    {"content_type": "text", "title": "A very long title f…", "payload": "PRICES"},
                ],
            },
        }
    ]
    assert graph.tokens_seen == ["PAGE_TOKEN"]


async def test_image_then_text_and_at_most_13_quick_replies(
    senders: MetaSenders, graph: FakeGraphAPI
) -> None:
    message = OutboundMessage(
        text="Biscuit after a teddy cut",
        image_urls=("https://cdn.example/biscuit.png",),
        quick_replies=tuple(QuickReply(f"Option {n}", f"OPT_{n}") for n in range(20)),
    )
    await senders.senders["instagram"].send(IGSID, message)
    assert graph.sent[0]["message"] == {
        "attachment": {
            "type": "image",
            "payload": {"url": "https://cdn.example/biscuit.png"},
        }
    }
    assert graph.sent[1]["message"]["text"] == "Biscuit after a teddy cut"
    assert len(graph.sent[1]["message"]["quick_replies"]) == 13
    assert graph.tokens_seen == ["IG_TOKEN", "IG_TOKEN"]


async def test_messenger_images_are_reusable(senders: MetaSenders, graph: FakeGraphAPI) -> None:
    await senders.senders["messenger"].send(
        PSID, OutboundMessage(text="", image_urls=("https://cdn.example/a.png",))
    )
    payload = graph.sent[0]["message"]["attachment"]["payload"]
    assert payload == {"url": "https://cdn.example/a.png", "is_reusable": True}


async def test_long_text_is_split_at_the_platform_limit(senders: MetaSenders, graph: FakeGraphAPI) -> None:
    words = " ".join(["grooming"] * 600)  # 5,399 characters
    await senders.senders["messenger"].send(PSID, OutboundMessage(text=words))
    assert [len(t) <= 2000 for t in graph.texts()] == [True, True, True]
    assert " ".join(graph.texts()) == words
    graph.sent.clear()
    emoji = "🐶" * 600  # 2,400 bytes: Instagram counts bytes
    await senders.senders["instagram"].send(IGSID, OutboundMessage(text=emoji))
    assert [len(t.encode()) for t in graph.texts()] == [1000, 1000, 400]
    assert "".join(graph.texts()) == emoji


def test_split_prefers_paragraphs() -> None:
    text = "a" * 1500 + "\n\n" + "b" * 1500
    assert split_text(text, 2000) == ["a" * 1500, "b" * 1500]


@pytest.mark.parametrize(
    ("code", "subcode", "status", "error"),
    [
        (613, None, 400, RetryableDeliveryError),
        (4, None, 400, RetryableDeliveryError),
        (2, None, 500, RetryableDeliveryError),
        (1200, None, 400, RetryableDeliveryError),
        (10, 2018278, 400, WindowClosedError),
        (10, 2534022, 400, WindowClosedError),
        (551, None, 400, RecipientUnreachableError),
        (190, 463, 400, ChannelCredentialsError),
        (100, None, 400, PermanentDeliveryError),
        (10, None, 400, PermanentDeliveryError),
    ],
)
async def test_error_codes_map_to_core_errors(
    senders: MetaSenders, graph: FakeGraphAPI, code: int, subcode: int | None, status: int, error: type
) -> None:
    graph.fail_next(code, subcode, status=status)
    with pytest.raises(error):
        await senders.senders["messenger"].send(PSID, OutboundMessage(text="hi"))


async def test_throttling_then_success_carries_the_retry_hint(
    senders: MetaSenders, graph: FakeGraphAPI
) -> None:
    graph.fail_next(4, None, status=429, retry_after="7")
    with pytest.raises(RetryableDeliveryError) as caught:
        await senders.senders["messenger"].send(PSID, OutboundMessage(text="hi"))
    assert caught.value.retry_after_s == 7.0
    result = await senders.senders["messenger"].send(PSID, OutboundMessage(text="hi"))
    assert result.platform_message_id == "m_out_1"
    assert graph.texts() == ["hi"]


async def test_invalid_token_is_a_credentials_error_without_the_token(
    graph: FakeGraphAPI, database_url: str
) -> None:
    base = await graph.start()
    meta = MetaSenders(
        make_settings(database_url, meta_graph_api_base=base, facebook_page_access_token="EXPIRED")
    )
    await meta.start()
    try:
        with pytest.raises(ChannelCredentialsError) as caught:
            await meta.senders["messenger"].send(PSID, OutboundMessage(text="hi"))
    finally:
        await meta.close()
    assert "EXPIRED" not in str(caught.value)


async def test_unreachable_server_is_retryable(database_url: str) -> None:
    meta = MetaSenders(make_settings(database_url, meta_graph_api_base="http://127.0.0.1:9"))
    await meta.start()
    try:
        with pytest.raises(RetryableDeliveryError):
            await meta.senders["messenger"].send(PSID, OutboundMessage(text="hi"))
    finally:
        await meta.close()


def test_only_configured_channels_get_a_sender(database_url: str) -> None:
    meta = MetaSenders(make_settings(database_url, instagram_access_token=None))
    assert sorted(meta.senders) == ["messenger"]
    _: Any = meta


async def test_local_image_is_uploaded_once_then_sent_by_attachment_id(
    graph: FakeGraphAPI, database_url: str, tmp_path: Path
) -> None:
    """An image with a relative link (local storage, no PUBLIC_BASE_URL) goes up as `filedata`; Meta's
    saved attachment_id serves the next send of it; a missing file is retried, not sent without."""
    storage = LocalStorage(tmp_path, public_base_url=None, signing_key=b"k" * 32)
    await storage.put("pets/1/preview/1-0.jpg", b"\xff\xd8\xffjpeg-bytes", content_type="image/jpeg")
    settings = make_settings(database_url, meta_graph_api_base=await graph.start())
    meta = MetaSenders(settings, storage=storage)
    await meta.start()
    try:
        message = OutboundMessage(
            text="Here it is",
            image_urls=("/media/pets/1/preview/1-0.jpg?e=1&s=x",),
            image_keys=("pets/1/preview/1-0.jpg",),
        )
        await meta.senders["messenger"].send(PSID, message)
        await meta.senders["messenger"].send(PSID, message)
        first, _, second, _ = graph.sent
        assert first["filedata"]["content"] == b"\xff\xd8\xffjpeg-bytes"
        assert first["message"] == {"attachment": {"type": "image", "payload": {"is_reusable": True}}}
        (saved,) = graph.attachments
        assert "filedata" not in second
        assert second["message"]["attachment"]["payload"] == {"attachment_id": saved}
        gone = OutboundMessage(text="", image_urls=("/media/none.jpg",), image_keys=("none.jpg",))
        with pytest.raises(RetryableDeliveryError):
            await meta.senders["messenger"].send(PSID, gone)
        assert len(graph.sent) == 4
    finally:
        await meta.close()
