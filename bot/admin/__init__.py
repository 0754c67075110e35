"""Kimmie's control room, one router per concern: booking cards, agenda, clients, takeover, photos,
and the menu (help, calendar, the catch-alls).

Everything sits behind `IsAdmin` on the parent router (messages and callbacks), checked on every
update against `settings.admin_chat_ids`. A non-admin pressing one of these buttons reaches the guard
router instead, which refuses it with an alert and logs the attempt. Handlers are three steps: parse
the update, call one core use case in the update's unit of work (`scope.transaction()`), render;
Telegram calls happen after the transaction closed.
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.types import CallbackQuery

from bot.admin import agenda, cards, clients, menu, photos, reminders, takeover
from bot.admin.common import IsAdmin
from bot.admin.menu import ADMIN_COMMANDS
from bot.callbacks import ADMIN_PREFIX
from bot.routing import RouterSpec

__all__ = ["ADMIN_COMMANDS", "build_guard_router", "build_router"]

log = logging.getLogger(__name__)

# Order matters only for the menu: its catch-alls must come after every other admin handler.
_CONCERNS = (
    cards.router,
    agenda.router,
    clients.router,
    takeover.router,
    photos.router,
    reminders.router,
    menu.router,
)

guard = RouterSpec("admin-guard")


@guard.callback_query(F.data.startswith(ADMIN_PREFIX))
async def refuse_forged_callback(query: CallbackQuery) -> None:
    log.warning(
        "admin button pressed by a non-admin: refused",
        extra={"telegram_user_id": query.from_user.id, "callback_prefix": (query.data or "")[:8]},
    )
    await query.answer("This button is only for the salon staff.", show_alert=True)


def build_router() -> Router:
    """A fresh admin router (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="admin")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.include_routers(*(concern.build() for concern in _CONCERNS))
    return router


def build_guard_router() -> Router:
    return guard.build()
