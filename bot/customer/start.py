"""`/start [token]`: greet with the main menu; a signed token from the link the assistant offers on
Instagram/Messenger first attaches this chat to that customer's record (core/linking.py), so
reminders reach them here outside Meta's 24-hour window."""

from __future__ import annotations

from aiogram.filters import CommandObject, CommandStart
from aiogram.types import Message

from bot.customer.common import display_name
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core import linking
from core.settings import Settings
from core.types import Channel

router = RouterSpec("customer.start")


@router.message(CommandStart())
async def start(
    message: Message, scope: UpdateScope, settings: Settings, command: CommandObject | None = None
) -> None:
    async with scope.transaction() as session:
        await linking.start_chat(
            session,
            settings,
            channel=Channel.TELEGRAM,
            external_id=str(message.chat.id),
            display_name=display_name(message),
            token=command.args if command else None,
            sent_at=message.date,
        )
