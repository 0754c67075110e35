"""Telegram: a photo (the largest size is fetched through getFile) → style buttons → a tap → the
preview with sendPhoto, and three angles as one sendMediaGroup album. The whole runtime with the real
aiogram Bot against the fake Bot API server; FAL is the local fake."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update
from PIL import Image

from core.db.database import Database
from tests.bot.conftest import TOKEN
from tests.fakes.fal import FakeFal
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.previews import test_web_chat as web_chat
from tests.previews.conftest import designs, eventually, outbound, payloads, preview_settings, running

CUSTOMER = 4242
KIMMIE = 777


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI()
    await fake.start()
    yield fake
    await fake.stop()


_ids = itertools.count(5000)


def photo_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1280, 960), (200, 180, 160)).save(out, format="JPEG")
    return out.getvalue()


def update(bot: Any, *, chat_kimmie: bool = False, **message: Any) -> Update:
    chat = KIMMIE if chat_kimmie else CUSTOMER
    body = {
        "message_id": next(_ids),
        "date": int(datetime.now(UTC).timestamp()),
        "chat": {"id": chat, "type": "private", "first_name": "Ann"},
        "from": {"id": chat, "is_bot": False, "first_name": "Ann"},
        **message,
    }
    return Update.model_validate({"update_id": next(_ids), "message": body}, context={"bot": bot})


def tap(bot: Any, data: str) -> Update:
    query = {
        "id": f"cq{next(_ids)}",
        "from": {"id": CUSTOMER, "is_bot": False, "first_name": "Ann"},
        "chat_instance": "ci",
        "data": data,
        "message": {
            "message_id": 1,
            "date": int(datetime.now(UTC).timestamp()),
            "chat": {"id": CUSTOMER, "type": "private"},
            "from": {"id": 1, "is_bot": True, "first_name": "Cheshire"},
            "text": "buttons",
        },
    }
    return Update.model_validate({"update_id": next(_ids), "callback_query": query}, context={"bot": bot})


async def test_photo_in_preview_out_on_telegram(
    db: Database, database_url: str, fal: FakeFal, fake_tg: FakeTelegramAPI, tmp_path: Path
) -> None:
    settings = preview_settings(
        database_url,
        fal,
        tmp_path,
        telegram_bot_token=TOKEN,
        telegram_api_base=fake_tg.base_url,
        telegram_kimmie_chat_id=KIMMIE,
    )
    async with running(settings) as service:
        assert service.rt.telegram is not None
        tg = service.rt.telegram.bot.value
        assert tg is not None
        fake_tg.add_file("dog-big", photo_bytes(), "photos/dog.jpg")
        sizes = [
            {"file_id": "dog-small", "file_unique_id": "s", "width": 90, "height": 60},
            {"file_id": "dog-big", "file_unique_id": "b", "width": 1280, "height": 960},
        ]
        await tg.dispatcher.feed_update(tg.bot, update(tg.bot, photo=sizes))

        async def buttons() -> Any:
            return [
                c for c in fake_tg.calls_to("sendMessage") if ("Teddy bear", "PV:s:teddy_bear") in c.buttons()
            ]

        await eventually(buttons)
        assert [c.data["file_id"] for c in fake_tg.calls_to("getFile")] == ["dog-big"]  # the largest size

        await tg.dispatcher.feed_update(tg.bot, tap(tg.bot, "PV:s:teddy_bear"))
        (photo,) = await eventually(lambda: _calls(fake_tg, "sendPhoto"))
        assert photo.chat_id == CUSTOMER
        # Local storage and no PUBLIC_BASE_URL: Telegram could not fetch a link, so the JPEG itself
        # went up (multipart), the bytes FAL's result was stored as.
        assert settings.public_base_url is None and not settings.s3_bucket
        upload = photo.data[str(photo.data["photo"]).removeprefix("attach://")]
        stored = (await designs(db))[0].storage_keys[0]
        assert isinstance(upload, dict) and upload["content"] == (tmp_path / stored).read_bytes()
        assert upload["content"][:3] == b"\xff\xd8\xff"
        # The buttons ride on the text after the photo (a photo then its words and choices).
        design_id = (await designs(db))[0].id

        async def ready() -> Any:
            return [
                c
                for c in fake_tg.calls_to("sendMessage")
                if ("Book this style", f"PV:b:{design_id}") in c.buttons()
            ]

        (words,) = await eventually(ready)
        assert ("Try another style", "PV:m") in words.buttons() and "AI sketch" in words.text
        assert fake_tg.calls.index(photo) < fake_tg.calls.index(words)

        await tg.dispatcher.feed_update(tg.bot, tap(tg.bot, "PV:f:teddy_bear"))
        (album,) = await eventually(lambda: _calls(fake_tg, "sendMediaGroup"))
        assert len(album.data["media"]) == 3 and album.chat_id == CUSTOMER
        # Each angle is an attach:// part of the same multipart request, with the stored bytes.
        parts = [item["media"] for item in album.data["media"]]
        assert all(part.startswith("attach://") for part in parts)
        uploaded = [album.data[part.removeprefix("attach://")]["content"] for part in parts]
        assert all(blob[:3] == b"\xff\xd8\xff" for blob in uploaded) and len(set(uploaded)) >= 1
        assert len(fal.submissions) == 4  # 1 + 3 angles, each submitted once

        # Kimmie sees the dog's previews from /client.
        await tg.dispatcher.feed_update(tg.bot, update(tg.bot, text="/client Ann", chat_kimmie=True))

        async def listed() -> Any:
            return [c for c in fake_tg.calls_to("sendMessage") if "Looking Glass previews" in c.text]

        (listing,) = await eventually(listed)
        assert listing.chat_id == 777
        assert listing.text.count("teddy_bear") == 4 and "(side)" in listing.text and "$0.08" in listing.text
        # ... and the latest ones as pictures, uploaded from local storage (no link Telegram can reach).
        (pictures,) = await eventually(lambda: _calls_for(fake_tg, "sendMediaGroup", KIMMIE))
        parts = [item["media"].removeprefix("attach://") for item in pictures.data["media"]]
        keys = [k for d in reversed(await designs(db)) for k in d.storage_keys][:3]
        assert [pictures.data[p]["content"] for p in parts] == [(tmp_path / k).read_bytes() for k in keys]


async def _calls(fake: FakeTelegramAPI, method: str) -> Any:
    return fake.calls_to(method)


async def _calls_for(fake: FakeTelegramAPI, method: str, chat: int) -> Any:
    return [c for c in fake.calls_to(method) if c.chat_id == chat]


async def test_kimmies_card_shows_the_preview_from_local_storage(
    db: Database, database_url: str, fal: FakeFal, fake_tg: FakeTelegramAPI, tmp_path: Path
) -> None:
    """A web customer books the style they previewed; files under MEDIA_DIR, no PUBLIC_BASE_URL:
    Kimmie's booking card is a photo card whose picture is the preview's bytes, uploaded."""
    settings = preview_settings(
        database_url,
        fal,
        tmp_path,
        telegram_bot_token=TOKEN,
        telegram_api_base=fake_tg.base_url,
        telegram_kimmie_chat_id=KIMMIE,
    )
    assert settings.public_base_url is None and not settings.s3_bucket
    async with running(settings) as service:
        await web_chat.upload(service.base, web_chat.jpeg(), caption="Can you do a puppy cut?")
        ready = await eventually(lambda: web_chat._nth_preview(db, 1))
        await web_chat.chat(service.base, "Book this style", payloads(ready)[0])

        async def days() -> Any:
            return [m for m in await outbound(db) if any(p.startswith("BK:") for p in payloads(m))]

        (choose_day,) = await eventually(days)
        await web_chat.chat(service.base, "day", payloads(choose_day)[0])

        async def times() -> Any:
            return [m for m in await outbound(db) if any(":t" in p for p in payloads(m))]

        (choose_time,) = await eventually(times)
        await web_chat.chat(service.base, "time", next(p for p in payloads(choose_time) if ":t" in p))
        await web_chat.answer_before_filing(service.base, db, since_id=choose_time.id)

        (card,) = await eventually(lambda: _calls_for(fake_tg, "sendPhoto", KIMMIE))
        (design,) = await designs(db)
        upload = card.data[str(card.data["photo"]).removeprefix("attach://")]
        assert upload["content"] == (tmp_path / design.storage_keys[0]).read_bytes()
        assert "Puppy cut" in card.text  # the caption is the card (the note names the style)
