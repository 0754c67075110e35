"""The website chat: a JSON endpoint for the salon's site, its embeddable widget and a page hosting it.

    POST /api/chat          {"session_id", "message", "name"?, "payload"?, "client_message_id"?}
    GET  /api/chat/{session_id}/messages?after=<id>
    GET  /                  a page with the widget (book in a browser)
    GET  /static/chat/widget.js, widget.css   the widget itself (plain JS + CSS, no build step)

A POST stores the message through `core.conversation.ingest` (the conversation engine runs in a worker,
as for every channel) and then waits up to `CHAT_SYNC_WAIT_S` for the engine to finish: the replies
come back in the answer (200), or the answer is 202 and the widget polls the messages endpoint.
The session id is the only key to a conversation, so the widget makes it long and random.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import exists, select, update

from channels import middleware
from channels.middleware import ApiError, check_rate, parse_json, read_body, require_json
from channels.ratelimit import RateLimiter
from core import customers
from core.conversation.ingest import conversation_queue_key, ingest
from core.db.database import Database
from core.db.models import Conversation, Job, Message, utcnow
from core.outbox import image_refs
from core.settings import Settings
from core.types import Channel, DeliveryStatus, Direction, InboundMessage

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,128}$"
POLL_INTERVAL_S = 0.1
MAX_REPLIES_PER_ANSWER = 50
MAX_MESSAGE_ID = 2**63 - 1  # message ids are BIGINT: a larger `after` cannot even be bound


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    message: str = Field(min_length=1, max_length=2000)
    name: str | None = Field(default=None, max_length=100)
    # What a tapped quick reply sends back (ASCII, <= 64 bytes, like every channel's payloads).
    payload: str | None = Field(default=None, max_length=64, pattern=r"^[\x21-\x7e]+$")
    # Lets the widget retry a POST without the message being stored twice.
    client_message_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("message", "name")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL (the INSERT would fail: a 500); no keyboard types one.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return ApiError(400, f"{field}: {first['msg']}", field=field)


class _Signal:
    """Wakes waiting chat requests when any transaction that queued jobs commits (a reply did)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=timeout_s)


def _render(row: Message) -> dict[str, Any]:
    options = [
        {"title": str(q["title"]), "payload": str(q["payload"])}
        for q in row.quick_replies or []
        if not q.get("url")  # a link button: the text carries the link
    ]
    return {
        "id": row.id,
        "text": row.text,
        "quick_replies": [option["title"] for option in options],
        "options": options,
        "images": list(image_refs(row.image_urls)[0]),
        "from": "kimmie" if row.author == "kimmie" else "assistant",
        "_unseen": row.fetched_at is None and row.delivery_status == DeliveryStatus.SENT.value,
    }


class WebChat:
    def __init__(self, *, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.signal = _Signal()
        self._page: str | None = None
        db.on_jobs_committed(self.signal.fire)

    async def post(self, request: web.Request) -> web.Response:
        require_json(request)
        data = parse_json(await read_body(request, self.settings.max_body_bytes))
        if not isinstance(data, dict):
            raise ApiError(400, "body: must be a JSON object", field="body")
        try:
            chat = ChatRequest.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        await check_rate(request, f"sender:web:{chat.session_id}", self.settings.rate_limit_per_minute)
        inbound = InboundMessage(
            channel=Channel.WEB,
            external_user_id=chat.session_id,
            platform_message_id=f"{chat.session_id}:{chat.client_message_id or uuid.uuid4().hex}",
            text=chat.message.strip(),
            payload=chat.payload,
            sent_at=utcnow(),
            display_name=chat.name.strip() if chat.name and chat.name.strip() else None,
        )
        async with self.db.transaction() as session:
            result = await ingest(session, inbound)
            message_id = result.message_id
            if message_id is None:  # a retried POST: answer about the message already stored
                message_id = await session.scalar(
                    select(Message.id).where(
                        Message.channel == Channel.WEB.value,
                        Message.platform_message_id == inbound.platform_message_id,
                    )
                )
        assert message_id is not None
        done, replies = await self._wait_for_replies(result.conversation_id, message_id)
        last_id = replies[-1]["id"] if replies else message_id
        if done:
            return web.json_response({"replies": replies, "last_id": last_id})
        return web.json_response({"status": "processing", "replies": replies, "last_id": last_id}, status=202)

    async def messages(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        try:
            ChatRequest.model_validate({"session_id": session_id, "message": "-"})
        except ValidationError as exc:
            raise _validation_error(exc) from None
        try:
            after = int(request.query.get("after", "0"))
            if not 0 <= after <= MAX_MESSAGE_ID:
                raise ValueError
        except ValueError:
            raise ApiError(400, "after: must be a non-negative integer", field="after") from None
        async with self.db.transaction() as session:
            identity = await customers.find_identity(session, Channel.WEB.value, session_id)
            conversation_id = (
                await session.scalar(select(Conversation.id).where(Conversation.identity_id == identity.id))
                if identity is not None
                else None
            )
        if conversation_id is None:
            return web.json_response({"status": "idle", "replies": [], "last_id": after})
        busy, replies = await self._snapshot(conversation_id, after)
        return web.json_response(
            {
                "status": "processing" if busy else "idle",
                "replies": replies,
                "last_id": replies[-1]["id"] if replies else after,
            }
        )

    async def _wait_for_replies(
        self, conversation_id: int, after_id: int
    ) -> tuple[bool, list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.chat_sync_wait_s
        while True:
            busy, replies = await self._snapshot(conversation_id, after_id)
            remaining = deadline - loop.time()
            if not busy or remaining <= 0:
                return not busy, replies
            await self.signal.wait(min(POLL_INTERVAL_S, remaining))

    async def _snapshot(self, conversation_id: int, after_id: int) -> tuple[bool, list[dict[str, Any]]]:
        """(is the engine still working on this conversation?, outbound messages after `after_id`)."""
        async with self.db.transaction() as session:
            busy = await session.scalar(
                select(
                    exists().where(
                        Job.queue_key == conversation_queue_key(conversation_id),
                        Job.status.in_(("queued", "running")),
                    )
                )
            )
            rows = (
                await session.execute(
                    select(Message)
                    .where(
                        Message.conversation_id == conversation_id,
                        Message.id > after_id,
                        Message.direction == Direction.OUTBOUND.value,
                        Message.delivery_status != DeliveryStatus.DEAD.value,
                    )
                    .order_by(Message.id)
                    .limit(MAX_REPLIES_PER_ANSWER)
                )
            ).scalars()
            rendered = [_render(row) for row in rows]
            unseen = [r["id"] for r in rendered if r.pop("_unseen")]
            if unseen:
                # The widget has it now: a reminder here counts as delivered only from this moment.
                await session.execute(
                    update(Message).where(Message.id.in_(unseen)).values(fetched_at=utcnow())
                )
            return bool(busy), rendered

    async def page(self, request: web.Request) -> web.Response:
        if self._page is None:
            html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
            self._page = html.replace("{{BUSINESS_NAME}}", _escape(self.settings.business_name))
        return web.Response(text=self._page, content_type="text/html")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def setup_routes(
    app: web.Application, *, db: Database, settings: Settings, limiter: RateLimiter | None = None
) -> None:
    """Mount the website chat, its widget and the page at `/` (and the channel middlewares, once)."""
    middleware.install(app, settings=settings, limiter=limiter)
    chat = WebChat(db=db, settings=settings)
    app.router.add_post("/api/chat", chat.post)
    app.router.add_get("/api/chat/{session_id}/messages", chat.messages, allow_head=False)
    app.router.add_get("/", chat.page, allow_head=False)
    app.router.add_static("/static/chat/", STATIC_DIR, append_version=False)
