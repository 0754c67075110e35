"""Messenger and Instagram: an image attachment in a signed webhook → the photo fetched from Meta's CDN
(a local stand-in), checked and stored in S3 (a local moto server) → style quick replies → a tap → FAL
(the fake) reads the photo by a presigned S3 URL → the preview goes out as a Send API image attachment
with "Book this style" / "Try another style"."""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer
from PIL import Image

from channels.meta.views import sign
from core.db.database import Database
from tests.channels.conftest import APP_SECRET
from tests.fakes.fal import FakeFal
from tests.fakes.graph_api import FakeGraphAPI
from tests.previews.conftest import designs, eventually, outbound, payloads, preview_settings, running

BUCKET = "cheshire-previews"
_mids = itertools.count(1)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    ).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphAPI]:
    fake = FakeGraphAPI()
    yield fake
    await fake.stop()


@pytest.fixture
async def cdn() -> AsyncIterator[str]:
    """Meta's attachment CDN: serves the customer's photo."""
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), (90, 60, 30)).save(out, format="JPEG")
    photo = out.getvalue()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=photo, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/photo.jpg", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/photo.jpg"
    await runner.cleanup()


def event(obj: str, *, sender: str, message: dict[str, Any]) -> bytes:
    page = "17841400000000000" if obj == "instagram" else "1234567890"
    now = int(time.time() * 1000)
    body = {
        "object": obj,
        "entry": [
            {
                "id": page,
                "time": now,
                "messaging": [
                    {
                        "sender": {"id": sender},
                        "recipient": {"id": page},
                        "timestamp": now,
                        "message": {"mid": f"m_{next(_mids)}", **message},
                    }
                ],
            }
        ],
    }
    return json.dumps(body, ensure_ascii=True).encode()


async def post(base: str, path: str, raw: bytes) -> int:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, APP_SECRET)}
    async with aiohttp.ClientSession() as http, http.post(base + path, data=raw, headers=headers) as response:
        return response.status


@pytest.mark.parametrize(
    ("obj", "path", "sender"),
    [
        ("page", "/webhook/facebook", "6543210987654321"),
        ("instagram", "/webhook/instagram", "1122334455667788"),
    ],
)
async def test_photo_in_preview_out_on_meta(
    db: Database,
    database_url: str,
    fal: FakeFal,
    graph: FakeGraphAPI,
    moto_url: str,
    cdn: str,
    tmp_path: Path,
    obj: str,
    path: str,
    sender: str,
) -> None:
    settings = preview_settings(
        database_url,
        fal,
        tmp_path,
        meta_graph_api_base=await graph.start(),
        s3_bucket=BUCKET,
        aws_endpoint_url_s3=moto_url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    async with running(settings) as service:
        photo = {"attachments": [{"type": "image", "payload": {"url": cdn}}]}
        assert await post(service.base, path, event(obj, sender=sender, message=photo)) == 200

        def sent_with(payload: str) -> Any:
            async def check() -> Any:
                return [
                    m
                    for m in graph.sent
                    if payload in [q["payload"] for q in m["message"].get("quick_replies", [])]
                ]

            return check

        await eventually(sent_with("PV:s:teddy_bear"))
        tap = {"text": "Summer shave", "quick_reply": {"payload": "PV:s:summer_shave"}}
        assert await post(service.base, path, event(obj, sender=sender, message=tap)) == 200

        async def image_sent() -> Any:
            return [m for m in graph.sent if "attachment" in m["message"]]

        (image,) = await eventually(image_sent)
        attachment = image["message"]["attachment"]
        assert attachment["type"] == "image" and image["recipient"]["id"] == sender
        url = attachment["payload"]["url"]
        assert url.startswith(f"{moto_url}/{BUCKET}/") and "Signature" in url  # presigned, our copy
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200 and (await response.read())[:3] == b"\xff\xd8\xff"
        await eventually(sent_with("PV:m"))
        # FAL read the photo by a presigned S3 URL (fetched it: bytes > 0).
        (submitted,) = fal.submissions
        assert submitted.arguments["image_urls"][0].startswith(f"{moto_url}/{BUCKET}/")
        assert fal.inputs_fetched and fal.inputs_fetched[0] > 0
        (design,) = await designs(db)
        assert design.status == "done" and design.style_code == "summer_shave"
        assert design.storage_keys[0].startswith("cheshire/pets/")
        texts = [m.text for m in await outbound(db) if m.image_urls]
        assert len(texts) == 1 and "summer shave" in texts[0]
        ready = next(m for m in await outbound(db) if m.image_urls)
        assert payloads(ready)[:2] == [f"PV:b:{design.id}", "PV:m"]


async def test_expired_attachment_link_is_answered_not_retried(
    db: Database, database_url: str, fal: FakeFal, graph: FakeGraphAPI, cdn: str, tmp_path: Path
) -> None:
    from core.previews import texts

    settings = preview_settings(database_url, fal, tmp_path, meta_graph_api_base=await graph.start())
    async with running(settings) as service:
        gone = {
            "attachments": [{"type": "image", "payload": {"url": cdn.replace("photo.jpg", "expired.jpg")}}]
        }
        assert (
            await post(
                service.base, "/webhook/facebook", event("page", sender="6543210987654321", message=gone)
            )
            == 200
        )

        async def answered() -> Any:
            return [m for m in graph.sent if m["message"].get("text") == texts.BAD_PHOTO]

        await eventually(answered)
    assert fal.submissions == [] and await designs(db) == []


@pytest.mark.parametrize(
    ("obj", "path", "sender"),
    [
        ("page", "/webhook/facebook", "6543210987654321"),
        ("instagram", "/webhook/instagram", "1122334455667788"),
    ],
)
async def test_preview_uploaded_with_local_storage_and_no_public_url(
    db: Database,
    database_url: str,
    fal: FakeFal,
    graph: FakeGraphAPI,
    cdn: str,
    tmp_path: Path,
    obj: str,
    path: str,
    sender: str,
) -> None:
    """The default deployment (files under MEDIA_DIR, no PUBLIC_BASE_URL): Meta could not fetch a
    relative /media link, so the preview's bytes go up with the Send API call as `filedata`."""
    settings = preview_settings(database_url, fal, tmp_path, meta_graph_api_base=await graph.start())
    assert settings.public_base_url is None and not settings.s3_bucket
    async with running(settings) as service:
        photo = {"attachments": [{"type": "image", "payload": {"url": cdn}}]}
        assert await post(service.base, path, event(obj, sender=sender, message=photo)) == 200

        async def buttons() -> Any:
            return [m for m in graph.sent if "quick_replies" in m["message"]]

        await eventually(buttons)
        tap = {"text": "Summer shave", "quick_reply": {"payload": "PV:s:summer_shave"}}
        assert await post(service.base, path, event(obj, sender=sender, message=tap)) == 200

        async def image_sent() -> Any:
            return [m for m in graph.sent if "attachment" in m["message"]]

        (image,) = await eventually(image_sent)
        assert image["recipient"]["id"] == sender and image["messaging_type"] == "RESPONSE"
        assert image["message"]["attachment"]["type"] == "image"
        assert "url" not in image["message"]["attachment"]["payload"]
        (design,) = await designs(db)
        stored = (tmp_path / design.storage_keys[0]).read_bytes()
        assert image["filedata"] == {"content": stored, "content_type": "image/jpeg"}
        # Messenger saves the upload (its attachment_id serves later sends); Instagram takes none.
        reusable = image["message"]["attachment"]["payload"].get("is_reusable")
        assert reusable is (True if obj == "page" else None)
        assert len(graph.attachments) == 1
