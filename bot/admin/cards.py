"""Kimmie's booking cards: approve, decline, decline offering another time, back to the card.

One handler per button action (bot/callbacks.py `ApptAction`); each runs one booking use case in the
update's unit of work and re-renders the card after the transaction closed. A stale card (already
decided, slot taken meanwhile) says so instead of acting twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiogram import Bot, F
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import cards, keyboards, views
from bot.callbacks import ApptAction, CardVerb
from bot.notifier import edit_card
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core.booking.api import (
    BookingError,
    BookingService,
    InvalidTransitionError,
    NotFoundError,
    SlotUnavailableError,
)
from core.payments.service import request_refund
from core.settings import Settings
from core.types import AppointmentStatus, Slot

log = logging.getLogger(__name__)

router = RouterSpec("admin.cards")


async def _load(scope: UpdateScope, booking: BookingService, appointment_id: int) -> views.CardData:
    async with scope.transaction() as session:
        return await views.load_card(session, booking, appointment_id)


async def _show_card(
    bot: Bot,
    query: CallbackQuery,
    card: views.CardData,
    settings: Settings,
    *,
    note: str | None = None,
    markup: InlineKeyboardMarkup | None = None,
) -> None:
    message = query.message
    if not isinstance(message, Message):
        return
    try:
        await edit_card(bot, message.chat.id, message.message_id, card, settings, note=note, markup=markup)
    except TelegramBadRequest as exc:  # the card is gone or too old: send it afresh
        log.info("card not editable, sending a new one: %s", exc.message[:120])
        await message.answer(
            cards.booking_card_text(card, settings.tz, note=note),
            parse_mode=ParseMode.HTML,
            reply_markup=markup or keyboards.booking_card_keyboard(card),
        )


async def _refuse_stale(
    bot: Bot, query: CallbackQuery, card: views.CardData, settings: Settings, exc: BookingError
) -> None:
    if isinstance(exc, SlotUnavailableError):
        note = "That time is no longer free: decline or offer another time."
    else:
        status = cards.STATUS_LABEL.get(card.booking.status, card.booking.status)
        note = f"Already decided earlier: {status}. Nothing was changed."
    await _show_card(bot, query, card, settings, note=note)
    await query.answer(note, show_alert=True)


# A decision on a request, in the update's unit of work; returns what to tell Kimmie.
Decision = Callable[[BookingService, AsyncSession, ApptAction, Settings], Awaitable[str]]


def decision(action: CardVerb) -> Callable[[Decision], Decision]:
    """Register the handler of one card button: run `decide`, then show the card with its outcome,
    or say why nothing changed (already decided, slot taken, booking gone)."""

    def register(decide: Decision) -> Decision:
        async def handler(
            query: CallbackQuery,
            callback_data: ApptAction,
            bot: Bot,
            scope: UpdateScope,
            booking: BookingService,
            settings: Settings,
        ) -> None:
            appointment_id = callback_data.appointment_id
            try:
                async with scope.transaction() as session:
                    outcome = await decide(booking, session, callback_data, settings)
                    card = await views.load_card(session, booking, appointment_id)
            except (InvalidTransitionError, SlotUnavailableError) as exc:
                await _refuse_stale(bot, query, await _load(scope, booking, appointment_id), settings, exc)
                return
            except NotFoundError:
                await query.answer("This booking no longer exists.", show_alert=True)
                return
            except BookingError as exc:
                await query.answer(str(exc)[:190], show_alert=True)
                return
            await _show_card(bot, query, card, settings, note=outcome)
            await query.answer(outcome[:190])

        handler.__name__ = handler.__qualname__ = decide.__name__
        router.callback_query(ApptAction.filter(F.action == action))(handler)
        return decide

    return register


@decision("approve")
async def approve(
    booking: BookingService, session: AsyncSession, data: ApptAction, settings: Settings
) -> str:
    await booking.approve(session, appointment_id=data.appointment_id)
    return "Approved: the customer is being told."


@decision("decline")
async def decline(
    booking: BookingService, session: AsyncSession, data: ApptAction, settings: Settings
) -> str:
    await booking.decline(session, appointment_id=data.appointment_id)
    return "Declined: the customer is being told."


@decision("alt")
async def decline_offering(
    booking: BookingService, session: AsyncSession, data: ApptAction, settings: Settings
) -> str:
    """Decline the request, offering the customer the alternative start Kimmie picked."""
    current = await booking.get_booking(session, data.appointment_id)
    start = datetime.fromtimestamp(data.ts, UTC)
    offered = Slot(start=start, end=start + (current.end - current.start))
    await booking.decline(session, appointment_id=data.appointment_id, alternatives=[offered])
    return f"Declined; {cards.fmt_slot(offered.start, offered.end, settings.tz)} offered instead."


@router.callback_query(ApptAction.filter(F.action == "offer"))
async def offer_alternatives(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    """Show the next free times as buttons on the card (picking one declines, offering it)."""
    appointment_id = callback_data.appointment_id
    async with scope.transaction() as session:
        card = await views.load_card(session, booking, appointment_id)
        slots: list[Slot] = []
        if card.booking.status == AppointmentStatus.REQUESTED:
            found = await booking.find_slots(
                session,
                service_code=card.booking.service_code,
                pet_ids=card.booking.pet_ids,
                client_id=card.booking.client_id,
                date_from=datetime.now(settings.tz).date(),
                limit=7,
            )
            slots = [s for s in found if s.start != card.booking.start][:6]
    if card.booking.status != AppointmentStatus.REQUESTED:
        await _refuse_stale(bot, query, card, settings, InvalidTransitionError(""))
        return
    if not slots:
        await query.answer("No other free times in the booking horizon.", show_alert=True)
        return
    duration = card.booking.end - card.booking.start
    slots = [Slot(start=s.start, end=s.start + duration, verified=s.verified) for s in slots]
    await _show_card(
        bot,
        query,
        card,
        settings,
        note="Pick the time to offer (this declines the request):",
        markup=keyboards.alternatives_keyboard(appointment_id, slots, settings.tz),
    )
    await query.answer()


@router.callback_query(ApptAction.filter(F.action == "refund"))
async def ask_refund(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    """First tap: the card asks to confirm (nothing is refunded yet)."""
    card = await _load(scope, booking, callback_data.appointment_id)
    if card.deposit is None or not card.deposit.refundable:
        await query.answer("There is no deposit to refund.", show_alert=True)
        return
    markup = keyboards.refund_confirm_keyboard(callback_data.appointment_id)
    await _show_card(
        bot, query, card, settings, note="Refund the deposit to the customer's card?", markup=markup
    )
    await query.answer()


@router.callback_query(ApptAction.filter(F.action == "refund_yes"))
async def confirm_refund(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    """The confirming tap: the refund is queued (Stripe's Refunds API, with an idempotency key)."""
    async with scope.transaction() as session:
        started = await request_refund(
            session, callback_data.appointment_id, by="kimmie", now=datetime.now(UTC)
        )
        card = await views.load_card(session, booking, callback_data.appointment_id)
    note = "Refund started: the customer is told when Stripe confirms." if started else "Nothing to refund."
    await _show_card(bot, query, card, settings, note=note)
    await query.answer(note)


@router.callback_query(ApptAction.filter(F.action == "back"))
async def back_to_card(
    query: CallbackQuery,
    callback_data: ApptAction,
    bot: Bot,
    scope: UpdateScope,
    booking: BookingService,
    settings: Settings,
) -> None:
    card = await _load(scope, booking, callback_data.appointment_id)
    await _show_card(bot, query, card, settings)
    await query.answer()
