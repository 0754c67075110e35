"""A fake Telegram Bot API server on 127.0.0.1 for the real aiogram `Bot`.

Point a bot at it with `Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))`.
It speaks the Bot API wire format: form-data (or multipart) POSTs to `/bot{token}/{method}`, JSON-encoded
nested fields (`reply_markup`...), answers `{"ok": true, "result": ...}` or the documented error shape.

- every call is recorded (`calls`, `calls_to(method)`), with JSON fields decoded; `delivered(method)`
  leaves out the calls answered with a scripted error (what the person actually received);
- `fail_next(method, status=429, retry_after=3)` / `fail_next(method, status=403)` answers one call
  with that error;
- `push_update(update)` queues an update for `getUpdates`, which long-polls (blocks until an update or
  its timeout, like the real server);
- `add_file(file_id, data, path)` makes `getFile` and `/file/bot{token}/{path}` serve bytes;
- `wait_for(method, count)` waits (no sleeping) until that many calls of a method arrived;
- several processes can share it, each with its own base URL `via(name)` (`{base}/via/{name}`): every
  call records which one made it (`Call.via`), and `polls` lists who called getUpdates, in order, with
  `max_open_polls` the most long polls ever open at once (Telegram allows one poller per bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_JSON_FIELDS = {
    "reply_markup",
    "entities",
    "caption_entities",
    "commands",
    "scope",
    "allowed_updates",
    "link_preview_options",
    "reply_parameters",
    "media",
}


@dataclass
class Call:
    method: str
    data: dict[str, Any]
    token: str
    refused: bool = False  # answered with a scripted error
    via: str = ""  # which client (process) made the call, when it used a `via(name)` base URL

    @property
    def text(self) -> str:
        return str(self.data.get("text") or self.data.get("caption") or "")

    @property
    def chat_id(self) -> int | None:
        value = self.data.get("chat_id")
        return int(value) if value is not None else None

    def buttons(self) -> list[tuple[str, str]]:
        """(text, callback_data or url) of every inline button, row by row."""
        markup = self.data.get("reply_markup") or {}
        out = []
        for row in markup.get("inline_keyboard", []):
            for button in row:
                out.append((button["text"], button.get("callback_data") or button.get("url") or ""))
        return out

    def button_data(self, text_part: str) -> str:
        for title, data in self.buttons():
            if text_part.lower() in title.lower():
                return data
        raise AssertionError(f"no button containing {text_part!r} in {self.buttons()}")


@dataclass
class _Failure:
    status: int
    description: str
    retry_after: int | None = None
    skip: int = 0  # let this many calls through first


@dataclass
class FakeTelegramAPI:
    host: str = "127.0.0.1"
    calls: list[Call] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file_id -> (path, bytes)
    bot_id: int = 1000

    def __post_init__(self) -> None:
        self._failures: dict[str, list[_Failure]] = {}
        self._updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._message_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.call_times: list[tuple[str, float]] = []  # (method, monotonic time): for benches
        self._photo_messages: set[tuple[int, int]] = set()  # (chat, message id): no text to edit
        self.polls: list[str] = []  # `via` of every getUpdates call
        self.open_polls = 0
        self.max_open_polls = 0

    # --- control -------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._method)
        app.router.add_post("/via/{via}/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        # A poller that went away (stop_polling) must not leave a long poll behind that eats updates.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = int(self._runner.addresses[0][1])  # the port the OS picked
        self.base_url = f"http://{self.host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def via(self, name: str) -> str:
        """The base URL for one of several clients (processes) of this fake."""
        return f"{self.base_url}/via/{name}"

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = None,
        after: int = 0,
        description: str | None = None,
    ) -> None:
        """Answer one coming call of `method` with an error (after letting `after` calls succeed)."""
        descriptions = {
            429: f"Too Many Requests: retry after {retry_after}",
            403: "Forbidden: bot was blocked by the user",
            400: "Bad Request: message is not modified",
        }
        self._failures.setdefault(method, []).append(
            _Failure(status, description or descriptions.get(status, "Error"), retry_after, skip=after)
        )

    def push_update(self, update: dict[str, Any]) -> None:
        self._updates.put_nowait(update)

    def add_file(self, file_id: str, data: bytes, path: str = "photos/file_1.jpg") -> None:
        self.files[file_id] = (path, data)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def delivered(self, method: str) -> list[Call]:
        """The calls of `method` the fake accepted, in order."""
        return [c for c in self.calls_to(method) if not c.refused]

    def last(self, method: str) -> Call:
        found = self.calls_to(method)
        assert found, f"no {method} call; calls were {[c.method for c in self.calls]}"
        return found[-1]

    def clear(self) -> None:
        self.calls.clear()

    async def wait_for_poll(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until `predicate(polls)` holds (checked at every getUpdates call)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.polls))

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.calls_to(method)) >= count)
        return self.calls_to(method)

    # --- HTTP ----------------------------------------------------------------------------------
    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        form = await request.post()
        data: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                data[key] = {"filename": value.filename, "content": value.file.read()}
                continue
            if key in _JSON_FIELDS:
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            data[key] = value
        call = Call(method, data, request.match_info["token"], via=request.match_info.get("via", ""))
        if method == "getUpdates":
            self.polls.append(call.via)
            async with self._changed:
                self._changed.notify_all()
        else:
            self.calls.append(call)
            self.call_times.append((method, time.monotonic()))
            async with self._changed:
                self._changed.notify_all()
        failures = self._failures.get(method)
        if failures and failures[0].skip > 0:
            failures[0].skip -= 1
        elif failures:
            failure = failures.pop(0)
            call.refused = True
            body: dict[str, Any] = {
                "ok": False,
                "error_code": failure.status,
                "description": failure.description,
            }
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            return web.json_response(body, status=failure.status)
        if method == "getUpdates":
            self.open_polls += 1
            self.max_open_polls = max(self.max_open_polls, self.open_polls)
            try:
                return web.json_response({"ok": True, "result": await self._get_updates(data)})
            finally:
                self.open_polls -= 1
        target = (int(data.get("chat_id") or 0), int(data.get("message_id") or 0))
        if method == "editMessageText" and target in self._photo_messages:
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: there is no text in the message to edit",
                },
                status=400,
            )
        return web.json_response({"ok": True, "result": self._result(method, data)})

    async def _get_updates(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        timeout = float(data.get("timeout") or 0)
        updates: list[dict[str, Any]] = []
        if self._updates.empty() and timeout > 0:
            with contextlib.suppress(TimeoutError):
                updates.append(await asyncio.wait_for(self._updates.get(), timeout=timeout))
        while not self._updates.empty():
            updates.append(self._updates.get_nowait())
        return updates

    def _message(self, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
        chat_id = int(data.get("chat_id") or 0)
        message: dict[str, Any] = {
            "message_id": int(data.get("message_id") or next(self._message_ids)),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Cheshire"},
        }
        if data.get("text"):
            message["text"] = data["text"]
        if isinstance(data.get("reply_markup"), dict) and "inline_keyboard" in data["reply_markup"]:
            message["reply_markup"] = data["reply_markup"]
        message.update(extra)
        return message

    def _result(self, method: str, data: dict[str, Any]) -> Any:
        if method == "getMe":
            return {"id": self.bot_id, "is_bot": True, "first_name": "Cheshire", "username": "cheshire_bot"}
        if method in {"sendMessage", "editMessageText", "editMessageReplyMarkup", "editMessageCaption"}:
            return self._message(data)
        if method == "sendPhoto":
            sent = self._message(
                data,
                photo=[{"file_id": "sent-photo", "file_unique_id": "sent-u", "width": 1, "height": 1}],
                caption=data.get("caption"),
            )
            self._photo_messages.add((sent["chat"]["id"], sent["message_id"]))
            return sent
        if method == "getFile":
            path, content = self.files[str(data["file_id"])]
            return {
                "file_id": data["file_id"],
                "file_unique_id": f"u-{data['file_id']}",
                "file_size": len(content),
                "file_path": path,
            }
        if method == "getWebhookInfo":
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True

    async def _file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        for stored_path, content in self.files.values():
            if stored_path == path:
                return web.Response(body=content, content_type="application/octet-stream")
        return web.Response(status=404)
