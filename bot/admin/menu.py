"""Kimmie's /help (and /start), /calendar, and everything else she sends or taps.

Its catch-alls are included last: an admin's stray message or tap stays in the control room instead
of falling through to the customer router and starting a customer conversation.
"""

from __future__ import annotations

from aiogram import F
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.admin.common import PhotoStates
from bot.routing import RouterSpec
from core.settings import Settings

ADMIN_COMMANDS = {
    "today": "Today's appointments",
    "tomorrow": "Tomorrow's appointments",
    "week": "The next 7 days",
    "pending": "Requests waiting for you",
    "client": "Find a client: /client <name or phone>",
    "done": "Hand the open chat back to the assistant",
    "calendar": "Connect Google Calendar (a link valid 30 minutes)",
    "whoami": "Your Telegram id",
    "help": "What I can do",
}

router = RouterSpec("admin.menu")


@router.message(Command("calendar"))
async def calendar_link(message: Message, settings: Settings) -> None:
    """The signed /oauth/start link: the only way to connect Kimmie's Google Calendar."""
    from core.calendar import is_configured
    from core.calendar.oauth import start_link

    if not is_configured(settings):
        await message.answer(
            "Google Calendar is not configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET "
            "(or a service account), restart, then send /calendar again."
        )
        return
    await message.answer(
        f"Open this link within 30 minutes to connect Google Calendar:\n{start_link(settings)}",
        disable_web_page_preview=True,
    )


@router.message(Command("whoami"))
async def admin_whoami(message: Message) -> None:
    await message.answer(f"Your Telegram id is {message.chat.id}: you are set up as the salon's admin.")


@router.message(Command("help", "start"), StateFilter(None))
async def admin_help(message: Message) -> None:
    lines = [f"/{name} — {text}" for name, text in ADMIN_COMMANDS.items()]
    lines.append(
        "Send a photo with the caption “pet 12” or “appt 34” (optionally followed by "
        "photo / before / after / style_reference) to store it; without a caption I'll ask."
    )
    await message.answer("\n".join(lines))


@router.message(StateFilter(None), F.text, ~F.text.startswith("/"))
async def admin_free_text(message: Message) -> None:
    await message.answer("Open a chat from a card (💬 Open chat) to reply to a customer, or see /help.")


@router.message()
async def admin_unhandled_message(message: Message, state: FSMContext) -> None:
    if await state.get_state() == PhotoStates.choosing.state:
        await message.answer("First pick what the photo is (or Cancel) in the message above.")
        return
    await message.answer("I didn't get that. /help lists what I can do.")


@router.callback_query()
async def admin_unhandled_callback(query: CallbackQuery) -> None:
    await query.answer("This button is no longer active.")
