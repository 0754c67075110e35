"""Customers on Telegram, one router per concern: /start (greeting, signed-link linking), their
bookings (the conversation core's self-service flow), and every other message or tap.

Customer messages are handled in private chats only; taps on any of the bot's messages.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType

from bot.customer import bookings, messages, start

__all__ = ["CUSTOMER_COMMANDS", "build_router"]

CUSTOMER_COMMANDS = {
    "start": "Main menu",
    "mybookings": "My bookings: cancel or move one",
}

# messages holds the catch-alls: it comes last.
_CONCERNS = (start.router, bookings.router, messages.router)


def build_router() -> Router:
    """A fresh customer router (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="customer")
    router.message.filter(F.chat.type == ChatType.PRIVATE)
    router.include_routers(*(concern.build() for concern in _CONCERNS))
    return router
