"""The website chat's photo upload and the signed media links (Looking Glass previews).

    POST /api/chat/{session_id}/photos   multipart/form-data: `photo` (the file), `caption`? (text)
    GET  /media/{key}?e=<expiry>&s=<sig>  a stored photo or preview (local storage only)

The upload is checked here, before anything is kept: 415 when it is not an image (by its bytes, not
its Content-Type), 413 past PREVIEW_MAX_BYTES, 400 when Pillow cannot read it. Pillow writes it again
as a plain JPEG (no EXIF, ≤ 1,536 px), so a polyglot's payload never reaches storage. The clean photo
is stored and enters the conversation as an image message like any channel's (`stored:<key>`): the
preview job links it to the dog and answers with the style buttons. The answer is 202; the widget
reads the reply from GET /api/chat/{session_id}/messages as it does for text.

Mounted only when previews are on (FAL configured): without them the route does not exist (404).
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import BodyPartReader, web

from channels.middleware import ApiError, check_rate
from core.conversation.ingest import ingest
from core.db.database import Database
from core.db.models import utcnow
from core.previews.images import PhotoRejectedError, clean_photo_off_loop
from core.previews.service import STORED_PREFIX
from core.settings import Settings
from core.storage import LocalStorage, MediaStorage, StorageError
from core.types import Attachment, Channel, InboundMessage

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
MAX_CAPTION_CHARS = 500
_STATUS = {"type": 415, "size": 413, "corrupt": 400}


class PhotoUploads:
    def __init__(self, *, db: Database, settings: Settings, storage: MediaStorage) -> None:
        self.db = db
        self.settings = settings
        self.storage = storage
        self.prefix = str(getattr(storage, "prefix", ""))

    async def upload(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        if not SESSION_ID.match(session_id):
            raise ApiError(400, "session_id: must be 8-128 letters, digits, - or _", field="session_id")
        await check_rate(request, f"sender:web:{session_id}", self.settings.rate_limit_per_minute)
        if request.content_type != "multipart/form-data":
            raise ApiError(415, "Content-Type must be multipart/form-data with a `photo` file")
        data, caption = await self._read_form(request)
        try:
            # Off the event loop: decoding and encoding a photo takes tens of milliseconds.
            photo = await clean_photo_off_loop(data, max_bytes=self.settings.preview_max_bytes)
        except PhotoRejectedError as exc:
            raise ApiError(_STATUS[exc.reason], str(exc), field="photo") from None
        upload_id = uuid.uuid4().hex
        key = f"{self.prefix}uploads/web/{upload_id}.jpg"
        try:
            await self.storage.put(key, photo.data, content_type=photo.content_type)
        except StorageError:
            log.warning("web photo upload failed", exc_info=True)
            raise ApiError(503, "photo storage is unavailable, try again shortly") from None
        inbound = InboundMessage(
            channel=Channel.WEB,
            external_user_id=session_id,
            platform_message_id=f"{session_id}:photo:{upload_id}",
            text=caption,
            attachments=(
                Attachment(kind="image", file_id=STORED_PREFIX + key, mime_type=photo.content_type),
            ),
            sent_at=utcnow(),
        )
        async with self.db.transaction() as session:
            result = await ingest(session, inbound)
        return web.json_response(
            {"status": "processing", "message_id": result.message_id, "last_id": result.message_id or 0},
            status=202,
        )

    async def _read_form(self, request: web.Request) -> tuple[bytes, str]:
        limit = self.settings.preview_max_bytes
        reader = await request.multipart()
        data: bytes | None = None
        caption = ""
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours
            if part.name == "photo" and data is None:
                buffer = bytearray()
                while chunk := await part.read_chunk(64 * 1024):
                    buffer += chunk
                    if len(buffer) > limit:
                        raise ApiError(413, f"photo larger than {limit} bytes", field="photo")
                data = bytes(buffer)
            elif part.name == "caption":
                caption = (await part.text())[:MAX_CAPTION_CHARS].replace("\x00", "").strip()
        if not data:
            raise ApiError(400, "photo: a file field named `photo` is required", field="photo")
        return data, caption


class MediaFiles:
    """Serves local media by signed, expiring links (S3 hands out its own presigned URLs)."""

    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage

    async def get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if not self.storage.verify(key, request.query.get("e", ""), request.query.get("s", "")):
            raise web.HTTPForbidden(text="link expired or invalid")
        try:
            body = await self.storage.get(key)
        except StorageError:
            raise web.HTTPNotFound() from None
        return web.Response(
            body=body, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )


def setup_routes(app: web.Application, *, db: Database, settings: Settings, storage: MediaStorage) -> None:
    uploads = PhotoUploads(db=db, settings=settings, storage=storage)
    app.router.add_post("/api/chat/{session_id}/photos", uploads.upload)
    if isinstance(storage, LocalStorage):
        app.router.add_get("/media/{key:.+}", MediaFiles(storage).get, allow_head=False)
