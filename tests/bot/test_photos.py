"""Kimmie's photos: downloaded from Telegram, uploaded to S3 (a local moto server) under a stable
key with the content type kept, and linked to the pet (with the appointment for before/after)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bot.callbacks import PhotoAction
from core.db.database import Database
from core.db.models import Pet
from core.storage import S3Storage
from tests.bot.conftest import KIMMIE, Harness, build_harness, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI

BUCKET = "cheshire-photos"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes\xff\xd9"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = _s3(url)
    s3.create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


def _s3(url: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


@pytest.fixture
async def photo_harness(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI, moto_url: str
) -> AsyncIterator[Harness]:
    settings = make_settings(
        database_url,
        s3_bucket=BUCKET,
        s3_prefix="cheshire/",
        aws_endpoint_url_s3=moto_url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    h = await build_harness(db, settings, fake_tg, photos=S3Storage(settings))
    try:
        yield h
    finally:
        await h.bot.session.close()


def _photo_message(h: Harness, caption: str | None) -> Any:
    h.fake.add_file("big-photo", JPEG, "photos/file_7.jpg")
    extra: dict[str, Any] = {
        "photo": [
            {"file_id": "small-photo", "file_unique_id": "AgADsmall", "width": 90, "height": 60},
            {"file_id": "big-photo", "file_unique_id": "AgADbig", "width": 1280, "height": 960},
        ]
    }
    if caption:
        extra["caption"] = caption
    return h.message(KIMMIE, None, **extra)


async def _object(url: str, key: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        obj = _s3(url).get_object(Bucket=BUCKET, Key=key)
        return {"body": obj["Body"].read(), "content_type": obj["ContentType"]}

    return await asyncio.to_thread(get)


async def test_a_captioned_photo_lands_in_s3_and_is_linked_to_the_pet(
    photo_harness: Harness, moto_url: str
) -> None:
    h = photo_harness
    _, pet_id, _ = await h.customer_with_pet()
    await h.feed(_photo_message(h, f"pet {pet_id}"))

    assert h.fake.last("getFile").data["file_id"] == "big-photo"  # the largest size
    key = f"cheshire/pets/{pet_id}/photo/AgADbig.jpg"
    stored = await _object(moto_url, key)
    assert stored == {"body": JPEG, "content_type": "image/jpeg"}
    async with h.db.transaction() as session:
        pet = await session.get_one(Pet, pet_id)
    assert [(p["key"], p["kind"]) for p in pet.photos] == [(key, "photo")]
    assert pet.photos[0]["url"].endswith(f"/{BUCKET}/{key}")
    assert "Saved as Bella's photo" in h.fake.last("sendMessage").text

    await h.feed(_photo_message(h, f"pet {pet_id}"))  # the same photo again: one entry, same key
    async with h.db.transaction() as session:
        assert len((await session.get_one(Pet, pet_id)).photos) == 1


async def test_an_after_photo_picked_with_buttons_is_linked_to_the_appointment(
    photo_harness: Harness, moto_url: str
) -> None:
    h = photo_harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    await h.feed(_photo_message(h, f"appt {booking.id}"))
    question = h.fake.last("sendMessage")
    assert "What is this photo" in question.text
    after = question.button_data("After")
    assert after == PhotoAction(action="kind", target_id=booking.id, kind="after").pack()
    await h.feed(h.callback(KIMMIE, after))

    key = f"cheshire/pets/{pet_id}/after/AgADbig.jpg"
    assert (await _object(moto_url, key))["body"] == JPEG
    async with h.db.transaction() as session:
        pet = await session.get_one(Pet, pet_id)
    assert pet.photos == [
        {
            "url": pet.photos[0]["url"],
            "key": key,
            "kind": "after",
            "content_type": "image/jpeg",
            "appointment_id": booking.id,
        }
    ]
    assert "after photo" in h.fake.last("editMessageText").text


async def test_without_s3_settings_the_upload_is_refused_clearly(harness: Harness) -> None:
    h = harness
    _, pet_id, _ = await h.customer_with_pet()
    await h.feed(_photo_message(h, f"pet {pet_id}"))
    assert "S3_BUCKET" in h.fake.last("sendMessage").text
    assert not h.fake.calls_to("getFile")
    async with h.db.transaction() as session:
        assert (await session.get_one(Pet, pet_id)).photos == []


async def test_a_photo_for_an_unknown_pet_is_refused(photo_harness: Harness) -> None:
    h = photo_harness
    await h.feed(_photo_message(h, "pet 424242"))
    assert "No pet #424242" in h.fake.last("sendMessage").text


async def test_an_image_sent_as_a_file_keeps_its_content_type(photo_harness: Harness, moto_url: str) -> None:
    h = photo_harness
    _, pet_id, _ = await h.customer_with_pet()
    png = b"\x89PNG\r\n\x1a\nfake"
    h.fake.add_file("doc-1", png, "documents/file_3.png")
    document = {
        "file_id": "doc-1",
        "file_unique_id": "AgADdoc",
        "file_name": "cut.png",
        "mime_type": "image/png",
    }
    await h.feed(h.message(KIMMIE, None, document=document, caption=f"pet {pet_id} style"))

    key = f"cheshire/pets/{pet_id}/style_reference/AgADdoc.png"
    assert await _object(moto_url, key) == {"body": png, "content_type": "image/png"}
    async with h.db.transaction() as session:
        assert (await session.get_one(Pet, pet_id)).photos[0]["kind"] == "style_reference"


async def test_the_booking_card_shows_the_stored_pet_photo_through_a_signed_url(
    photo_harness: Harness,
) -> None:
    h = photo_harness
    client_id, pet_id, _ = await h.customer_with_pet()
    await h.feed(_photo_message(h, f"pet {pet_id}"))
    await h.request(client_id, pet_id)
    await h.run_jobs()
    card = [c for c in h.fake.calls_to("sendPhoto") if c.chat_id == KIMMIE][-1]
    # The bucket is private: Telegram gets a short-lived signed link to the stored object.
    assert f"pets/{pet_id}/photo/AgADbig.jpg" in card.data["photo"] and "Signature" in card.data["photo"]
    assert "Booking request" in card.text
