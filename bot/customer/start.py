"""`/start [token]`: greet with the main menu; a signed token from the link the assistant offers on
Instagram/Messenger first attaches this chat to that customer's record (core/linking.py), so
reminders reach them here outside Meta's 24-hour window. `/whoami` shows the chat's numeric id (and
/start does too while no admin is configured): that is how Kimmie finds the TELEGRAM_KIMMIE_CHAT_ID."""

from __future__ import annotations

from aiogram.filters import Command, CommandObject, CommandStart
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
    if not settings.admin_chat_ids:
        # Setting up: nobody is Kimmie yet, and this is how she finds the id to configure.
        await message.answer(whoami_text(message.chat.id, setup=True))


@router.message(Command("whoami"))
async def whoami(message: Message, settings: Settings) -> None:
    await message.answer(whoami_text(message.chat.id, setup=not settings.admin_chat_ids))


def whoami_text(chat_id: int, *, setup: bool) -> str:
    text = f"Your Telegram id is {chat_id}."
    if setup:
        text += f" To make this chat the salon's, set TELEGRAM_KIMMIE_CHAT_ID={chat_id} and restart."
    return text
