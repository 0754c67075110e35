"""The website chat, end to end: a photo uploaded → style buttons → one tap → the preview of the
customer's own photo comes back as an image in the chat, with "Book this style"; bad uploads get
415/413/400. The real runtime, worker, fal-client and Pillow; FAL is the local fake."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image
from sqlalchemy import select

from core.db.database import Database
from core.db.models import Appointment, GroomingDesign, Pet
from core.notify.views import load_card
from core.previews import texts
from tests.fakes.fal import FakeFal
from tests.previews.conftest import designs, eventually, outbound, payloads, preview_settings, running

SESSION = "web-session-0001"


def jpeg(size: tuple[int, int] = (900, 700), **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (150, 110, 60)).save(out, format="JPEG", **save)
    return out.getvalue()


async def upload(
    base: str, data: bytes, *, filename: str = "dog.jpg", caption: str | None = None
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("photo", data, filename=filename, content_type="image/jpeg")
    if caption is not None:
        form.add_field("caption", caption)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/api/chat/{SESSION}/photos", data=form) as r,
    ):
        return r.status, await r.json()


async def chat(base: str, message: str, payload: str | None = None) -> int:
    body: dict[str, Any] = {"session_id": SESSION, "message": message}
    if payload:
        body["payload"] = payload
    async with aiohttp.ClientSession() as http, http.post(f"{base}/api/chat", json=body) as response:
        return response.status


async def polled(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/chat/{SESSION}/messages") as response:
        return list((await response.json())["replies"])


async def test_photo_to_preview_in_the_web_chat(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    async with running(preview_settings(database_url, fal, tmp_path)) as service:
        status, answer = await upload(service.base, jpeg(exif=b"Exif\x00\x00secret-gps"))
        assert status == 202 and answer["status"] == "processing"

        async def style_buttons() -> Any:
            return [m for m in await outbound(db) if "PV:s:teddy_bear" in payloads(m)]

        (pick,) = await eventually(style_buttons)
        assert "Which style" in pick.text
        assert {"PV:s:puppy_cut", "PV:s:lion_cut", "PV:s:summer_shave"} <= set(payloads(pick))
        async with db.transaction() as session:
            pet = (await session.scalars(select(Pet))).one()
        assert pet.placeholder and [p["kind"] for p in pet.photos] == ["photo"]
        stored = (tmp_path / pet.photos[0]["key"]).read_bytes()
        assert b"secret-gps" not in stored  # EXIF gone before it was stored

        assert await chat(service.base, "Teddy bear", "PV:s:teddy_bear") in (200, 202)

        async def preview() -> Any:
            return [m for m in await outbound(db) if m.image_urls]

        (ready,) = await eventually(preview)
        assert "teddy bear" in ready.text and "AI sketch" in ready.text
        assert payloads(ready)[:2] == [f"PV:b:{(await designs(db))[0].id}", "PV:m"]
        # FAL got the customer's own (cleaned) photo, as a data URI (no public address here).
        assert len(fal.submissions) == 1 and fal.inputs_fetched == [len(stored)]
        assert fal.submissions[0].arguments["image_urls"][0].startswith("data:image/jpeg;base64,")
        (design,) = await designs(db)
        assert (design.status, design.style_code, design.angle, design.model) == (
            "done",
            "teddy_bear",
            "front",
            "fal-ai/nano-banana-2/edit",
        )
        assert design.cost_usd == 0.08 and design.seed is not None and design.delivered_at is not None
        assert design.provider_request_id == fal.submissions[0].id and len(design.storage_keys) == 1
        # The widget shows the image from our storage (FAL's URL expires), by a signed link.
        shown = [r for r in await polled(service.base) if r["images"]]
        link = shown[0]["images"][0]
        assert link.startswith("/media/") and "&s=" in link
        async with aiohttp.ClientSession() as http:
            async with http.get(service.base + link) as response:
                assert response.status == 200 and response.content_type == "image/jpeg"
            async with http.get(service.base + link.replace("&s=", "&s=0")) as response:
                assert response.status == 403

        # A second style: no disclaimer this time; "All 3 angles" gives one album of three.
        await chat(service.base, "Lion cut", "PV:s:lion_cut")
        second = await eventually(lambda: _nth_preview(db, 2))
        assert "AI sketch" not in second.text
        await chat(service.base, "All 3 angles", "PV:f:lion_cut")
        album = await eventually(lambda: _nth_preview(db, 3))
        assert len(album.image_urls) == 3
        assert [d.angle for d in (await designs(db))[2:]] == ["front", "side", "back"]


async def _nth_preview(db: Database, n: int) -> Any:
    shown = [m for m in await outbound(db) if m.image_urls]
    return shown[n - 1] if len(shown) >= n else None


async def answer_before_filing(base: str, db: Database, *, since_id: int) -> None:
    """Answer what a website customer is asked before a request is filed (issue 14): the dog's name,
    their own name, and a way to reach them later (skipped with one tap). Counted from `since_id`
    (the time question), not from the newest message: the first question may already be there."""
    seen = since_id

    async def newer() -> Any:
        fresh = [m for m in await outbound(db) if m.id > seen]
        return fresh[-1] if fresh else None

    for _ in range(4):
        last = await eventually(newer)
        seen = last.id
        if "dog's name" in last.text:
            await chat(base, "Biscuit")
        elif "your name" in last.text:
            await chat(base, "Zoe Hart")
        elif "RQ:skip" in payloads(last):
            await chat(base, "Skip", "RQ:skip")
        else:
            break


async def test_book_this_style_carries_the_style_and_the_preview(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    async with running(preview_settings(database_url, fal, tmp_path)) as service:
        await upload(service.base, jpeg(), caption="Can you do a puppy cut?")  # the caption names a style
        ready = await eventually(lambda: _nth_preview(db, 1))
        book = payloads(ready)[0]
        await chat(service.base, "Book this style", book)

        async def days() -> Any:
            return [m for m in await outbound(db) if any(p.startswith("BK:") for p in payloads(m))]

        (choose_day,) = await eventually(days)
        await chat(service.base, "day", payloads(choose_day)[0])

        async def times() -> Any:
            return [m for m in await outbound(db) if any(":t" in p for p in payloads(m))]

        (choose_time,) = await eventually(times)
        await chat(service.base, "time", next(p for p in payloads(choose_time) if ":t" in p))

        async def booked() -> Any:
            async with db.transaction() as session:
                return (await session.scalars(select(Appointment))).first()

        # Before filing (issue 14), a website customer is asked what the request lacks.
        await answer_before_filing(service.base, db, since_id=choose_time.id)

        appointment = await eventually(booked)
        (design,) = await designs(db)
        assert appointment.notes == texts.BOOKING_NOTE.format(style="Puppy cut", design_id=design.id)
        async with db.transaction() as session:
            linked = await session.get_one(GroomingDesign, design.id)
        assert linked.appointment_id == appointment.id
        # Kimmie's booking card shows the chosen preview as the dog's picture.
        async with db.transaction() as session:
            card = await load_card(session, service.rt.booking, appointment.id)
        assert card.pets[0].photo_key == design.storage_keys[0]


async def test_bad_uploads_are_refused_clearly(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    settings = preview_settings(database_url, fal, tmp_path, preview_max_bytes=64 * 1024)
    async with running(settings) as service:
        assert (await upload(service.base, b"%PDF-1.4 definitely a document", filename="dog.jpg"))[0] == 415
        assert (await upload(service.base, b"\xff\xd8\xff\xe0" + b"x" * 200))[0] == 400
        big = jpeg((2000, 2000), quality=100) + b"\0" * (64 * 1024)
        assert (await upload(service.base, big))[0] == 413
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{service.base}/api/chat/{SESSION}/photos", json={"photo": "x"}
            ) as response:
                assert response.status == 415
            form = aiohttp.FormData()
            form.add_field("other", b"x", filename="a.jpg")
            async with http.post(f"{service.base}/api/chat/{SESSION}/photos", data=form) as response:
                assert response.status == 400
            async with http.post(f"{service.base}/api/chat/bad!/photos", data=form) as response:
                assert response.status == 400
        # A polyglot is taken as the photo it also is, and stored without its payload.
        status, _ = await upload(service.base, jpeg((300, 200)) + b"<?php system($_GET['c']); ?>")
        assert status == 202
        files = [p for p in tmp_path.rglob("*.jpg")]
        assert len(files) == 1 and b"<?php" not in files[0].read_bytes()
        assert fal.submissions == []
