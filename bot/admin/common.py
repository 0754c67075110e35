"""What Kimmie's routers share: the admin filter, the FSM states, and cutting long texts."""

from __future__ import annotations

from aiogram.filters import BaseFilter
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import TelegramObject

from core.settings import Settings


class IsAdmin(BaseFilter):
    """Checked on every update against `settings.admin_chat_ids` (Kimmie and her staff)."""

    async def __call__(self, event: TelegramObject, settings: Settings) -> bool:
        user = getattr(event, "from_user", None)
        return user is not None and user.id in settings.admin_chat_ids


class TakeoverStates(StatesGroup):
    replying = State()


class PhotoStates(StatesGroup):
    choosing = State()


def chunks(text: str, limit: int = 4000) -> list[str]:
    """Whole lines, at most `limit` characters per message (Telegram allows 4,096)."""
    parts, current = [], ""
    for line in text.split("\n"):
        if len(current) + len(line) + 1 > limit and current:
            parts.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    parts.append(current)
    return parts
