"""Kimmie's daily list of reminders that did not reach the customer: "Mark confirmed" records that she
reached them herself (`appointment.reminder_confirmed_at`) and takes that visit's button off the list
(the others stay)."""

from __future__ import annotations

import logging

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot.callbacks import ReminderAction
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core.booking.reach_jobs import mark_confirmed

log = logging.getLogger(__name__)
router = RouterSpec("admin.reminders")


@router.callback_query(ReminderAction.filter(F.action == "confirm"))
async def confirm(query: CallbackQuery, callback_data: ReminderAction, scope: UpdateScope) -> None:
    async with scope.transaction() as session:
        found = await mark_confirmed(session, callback_data.appointment_id)
    if not found:
        await query.answer("That appointment is gone.", show_alert=True)
        return
    await query.answer(f"#{callback_data.appointment_id} marked confirmed ✅")
    await _drop_button(query, callback_data.pack())


async def _drop_button(query: CallbackQuery, data: str) -> None:
    message = query.message if isinstance(query.message, Message) else None
    markup = message.reply_markup if message is not None else None
    if message is None or markup is None:
        return
    rows = [[b for b in row if b.callback_data != data] for row in markup.inline_keyboard]
    try:
        await message.edit_reply_markup(
            reply_markup=InlineKeyboardMarkup(inline_keyboard=[r for r in rows if r])
        )
    except TelegramBadRequest as exc:  # too old to edit, or already edited: the tick is recorded anyway
        log.info("reminder list not editable: %s", exc.message[:120])
