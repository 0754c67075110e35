"""Kimmie takes a chat over: 💬 Open chat shows it and puts her in reply mode (the assistant stays
quiet), her texts go to the customer on their channel, ✅ Done or /done hands it back.

Reply mode is FSM state (Redis when REDIS_URL is set, so it survives a restart)."""

from __future__ import annotations

from aiogram import F
from aiogram.enums import ParseMode
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot import cards, keyboards, views
from bot.admin.common import TakeoverStates, chunks
from bot.callbacks import ChatAction
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core.conversation import takeover
from core.settings import Settings

router = RouterSpec("admin.takeover")


@router.callback_query(ChatAction.filter(F.action == "open"))
async def open_chat(
    query: CallbackQuery,
    callback_data: ChatAction,
    scope: UpdateScope,
    state: FSMContext,
    settings: Settings,
) -> None:
    conversation_id = callback_data.conversation_id
    try:
        async with scope.transaction() as session:
            await takeover.take_over(session, conversation_id)
            view = await views.conversation_view(session, conversation_id)
            recent = [
                (m.author, m.text or (f"[{m.payload}]" if m.payload else "[attachment]"), m.created_at)
                for m in await takeover.recent_messages(session, conversation_id, limit=15)
            ]
    except takeover.ConversationNotFoundError:
        await query.answer("That chat no longer exists.", show_alert=True)
        return
    assert view is not None
    await state.set_state(TakeoverStates.replying)
    await state.update_data(conversation_id=conversation_id)
    if isinstance(query.message, Message):
        for part in chunks(cards.conversation_text(view, recent, settings.tz)):
            await query.message.answer(part, parse_mode=ParseMode.HTML)
        await query.message.answer(
            "You have this chat now; the assistant stays quiet. Type your replies here. /done hands it back.",
            reply_markup=keyboards.hand_back_keyboard(conversation_id),
        )
    await query.answer("You're in the chat")


@router.callback_query(ChatAction.filter(F.action == "done"))
async def done_button(
    query: CallbackQuery, callback_data: ChatAction, scope: UpdateScope, state: FSMContext
) -> None:
    await _hand_back(scope, state, callback_data.conversation_id)
    if isinstance(query.message, Message):
        await query.message.answer("Handed back: the assistant answers again.")
    await query.answer("Handed back")


@router.message(Command("done"))
async def done_command(message: Message, scope: UpdateScope, state: FSMContext) -> None:
    conversation_id = (await state.get_data()).get("conversation_id")
    if conversation_id is None:
        await message.answer("No chat is open.")
        return
    await _hand_back(scope, state, int(conversation_id))
    await message.answer("Handed back: the assistant answers again.")


async def _hand_back(scope: UpdateScope, state: FSMContext, conversation_id: int) -> None:
    try:
        async with scope.transaction() as session:
            await takeover.hand_back(session, conversation_id)
    except takeover.ConversationNotFoundError:
        pass
    await state.clear()


@router.message(TakeoverStates.replying, F.text, ~F.text.startswith("/"))
async def staff_reply(message: Message, scope: UpdateScope, state: FSMContext) -> None:
    conversation_id = int((await state.get_data())["conversation_id"])
    try:
        async with scope.transaction() as session:
            await takeover.staff_reply(session, conversation_id, message.text or "")
    except takeover.ConversationNotFoundError:
        await state.clear()
        await message.answer("That chat no longer exists; reply mode closed.")
        return
    await message.answer("✓ sent")
