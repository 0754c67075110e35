"""Kimmie's daily list of reminders that did not reach the customer: "Mark confirmed" records that she
reached them herself (`appointment.reminder_confirmed_at`) and ticks the visit off the list."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery

from bot.callbacks import ReminderAction
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core.booking.reach_jobs import mark_confirmed

router = RouterSpec("admin.reminders")


@router.callback_query(ReminderAction.filter(F.action == "confirm"))
async def confirm(query: CallbackQuery, callback_data: ReminderAction, scope: UpdateScope) -> None:
    async with scope.transaction() as session:
        found = await mark_confirmed(session, callback_data.appointment_id)
    if not found:
        await query.answer("That appointment is gone.", show_alert=True)
        return
    await query.answer(f"#{callback_data.appointment_id} marked confirmed ✅")
