"""Kimmie's side of the demo: a fake Telegram Bot API that keeps her chat, and a page that shows it.

`DemoTelegram` is the test suite's fake Bot API server (tests/fakes/telegram_api.py) that also keeps
the current state of every message it was asked to send or edit, per chat. The page at `/kimmie`
shows Kimmie's chat (her notifications, the booking cards and their buttons); pressing a button or
sending a command queues the update the real Telegram would send, which the service's bot receives
through getUpdates (it polls the fake) and handles with its real handlers.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.telegram_api import FakeTelegramAPI

PAGE = Path(__file__).with_name("kimmie.html")
_SENT = {"sendMessage", "sendPhoto"}
_EDITS = {"editMessageText", "editMessageCaption", "editMessageReplyMarkup"}


@dataclass
class ChatMessage:
    message_id: int
    text: str
    buttons: list[list[dict[str, str]]]
    from_kimmie: bool = False


@dataclass
class DemoTelegram(FakeTelegramAPI):
    chats: dict[int, dict[int, ChatMessage]] = field(default_factory=dict)
    toasts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._update_ids = itertools.count(1)
        self._own_ids = itertools.count(1_000_000)  # Kimmie's own messages: out of the bot's range

    def _result(self, method: str, data: dict[str, Any]) -> Any:
        result = super()._result(method, data)
        if method in _SENT | _EDITS and isinstance(result, dict):
            chat = self.chats.setdefault(int(data.get("chat_id") or 0), {})
            message_id = int(result["message_id"])
            old = chat.get(message_id)
            text = str(data.get("text") or data.get("caption") or (old.text if old else ""))
            markup = data.get("reply_markup")
            rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
            # An edit without a keyboard removes it, as on Telegram.
            buttons = [
                [{"text": b["text"], "data": b.get("callback_data") or b.get("url") or ""} for b in row]
                for row in rows
            ]
            chat[message_id] = ChatMessage(message_id, text, buttons)
        if method == "answerCallbackQuery" and data.get("text"):
            self.toasts.append(str(data["text"]))
        return result

    # --- what Kimmie does ---------------------------------------------------------------------
    def kimmie_sends(self, chat_id: int, text: str) -> None:
        message_id = next(self._own_ids)
        self.chats.setdefault(chat_id, {})[message_id] = ChatMessage(message_id, text, [], from_kimmie=True)
        self.push_update(
            {
                "update_id": next(self._update_ids),
                "message": {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private", "first_name": "Kimmie"},
                    "from": {"id": chat_id, "is_bot": False, "first_name": "Kimmie"},
                    "text": text,
                    **_command_entities(text),
                },
            }
        )

    def kimmie_presses(self, chat_id: int, message_id: int, data: str) -> None:
        shown = self.chats.get(chat_id, {}).get(message_id)
        self.push_update(
            {
                "update_id": next(self._update_ids),
                "callback_query": {
                    "id": f"demo-{next(self._update_ids)}",
                    "from": {"id": chat_id, "is_bot": False, "first_name": "Kimmie"},
                    "chat_instance": "demo",
                    "data": data,
                    "message": {
                        "message_id": message_id,
                        "date": int(time.time()),
                        "chat": {"id": chat_id, "type": "private"},
                        "from": {"id": self.bot_id, "is_bot": True, "first_name": "Cheshire"},
                        "text": shown.text if shown else "",
                    },
                },
            }
        )


def _command_entities(text: str) -> dict[str, Any]:
    if not text.startswith("/"):
        return {}
    length = len(text.split()[0])
    return {"entities": [{"type": "bot_command", "offset": 0, "length": length}]}


KIMMIE_TG_KEY = web.AppKey("demo_telegram", DemoTelegram)
KIMMIE_CHAT_KEY = web.AppKey("demo_kimmie_chat", int)
CUSTOMER_URL_KEY = web.AppKey("demo_customer_url", str)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")


async def messages(request: web.Request) -> web.Response:
    fake, chat_id = request.app[KIMMIE_TG_KEY], request.app[KIMMIE_CHAT_KEY]
    # Insertion order is the order things happened (an edit keeps its message's place).
    shown = [
        {"id": m.message_id, "text": m.text, "buttons": m.buttons, "mine": m.from_kimmie}
        for m in fake.chats.get(chat_id, {}).values()
    ]
    return web.json_response(
        {
            "messages": shown,
            "toasts": len(fake.toasts),
            "toast": fake.toasts[-1] if fake.toasts else "",
            "customer_url": request.app[CUSTOMER_URL_KEY],
        }
    )


async def press(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[KIMMIE_TG_KEY].kimmie_presses(
        request.app[KIMMIE_CHAT_KEY], int(body["id"]), str(body["data"])
    )
    return web.json_response({"ok": True})


async def send(request: web.Request) -> web.Response:
    body = await request.json()
    text = str(body.get("text", "")).strip()
    if text:
        request.app[KIMMIE_TG_KEY].kimmie_sends(request.app[KIMMIE_CHAT_KEY], text[:4000])
    return web.json_response({"ok": True})


def kimmie_app(fake: DemoTelegram, chat_id: int, *, customer_url: str) -> web.Application:
    app = web.Application()
    app[KIMMIE_TG_KEY] = fake
    app[KIMMIE_CHAT_KEY] = chat_id
    app[CUSTOMER_URL_KEY] = customer_url
    app.router.add_get("/kimmie", page)
    app.router.add_get("/", page)
    app.router.add_get("/kimmie/api/messages", messages)
    app.router.add_post("/kimmie/api/press", press)
    app.router.add_post("/kimmie/api/send", send)
    return app
