"""Callback data of the bot's own buttons: aiogram CallbackData factories, each action a Literal.

Kimmie's buttons use prefixes starting with "k." and are honoured only for admins; "c." marks a
customer's button from before the one self-service flow (still understood: old messages keep their
buttons). Every other callback_data is a conversation payload (core/conversation/payloads.py) and goes
to the conversation core. A value outside its Literal does not unpack, so a forged action matches no
handler. The packed forms are the same as before the actions were typed: old buttons still work.
"""

from __future__ import annotations

from typing import Literal

from aiogram.filters.callback_data import CallbackData

ADMIN_PREFIX = "k."

CardVerb = Literal["approve", "decline", "offer", "alt", "back", "undo", "refund", "refund_yes"]
DeclineCode = Literal["fully_booked", "not_a_fit", "other"]  # core/booking/texts.py DECLINE_REASONS
ChatVerb = Literal["open", "done"]
PhotoVerb = Literal["appt", "kind", "cancel"]
MyBookingVerb = Literal["cancel", "cancel_yes", "keep", "resched", "slot"]


class ApptAction(CallbackData, prefix="k.ap"):
    """approve | decline (ask why) | offer | alt (decline offering `ts`) | back (re-render the card) |
    undo (restore a request declined less than 5 minutes ago) | refund (ask to confirm) | refund_yes
    (refund the deposit)."""

    action: CardVerb
    appointment_id: int
    ts: int = 0  # unix seconds of an alternative start


class DeclineReason(CallbackData, prefix="k.dr"):
    """Decline request `appointment_id` for this reason (the second tap of Decline)."""

    reason: DeclineCode
    appointment_id: int


class ReminderAction(CallbackData, prefix="k.rm"):
    """confirm: Kimmie reached the customer whose reminder did not arrive (her daily list)."""

    action: Literal["confirm"]
    appointment_id: int


class ChatAction(CallbackData, prefix="k.ch"):
    """open (take over and reply) | done (hand back)."""

    action: ChatVerb
    conversation_id: int


class PhotoAction(CallbackData, prefix="k.ph"):
    """appt (photo for this appointment's pet) | kind (store as `kind`) | cancel."""

    action: PhotoVerb
    target_id: int = 0
    kind: str = ""


class MyBooking(CallbackData, prefix="c.bk"):
    """A customer's booking button from before the one self-service flow (bot/customer/bookings.py
    turns each into the core payload it meant): cancel | cancel_yes | keep | resched | slot (`ts`)."""

    action: MyBookingVerb
    appointment_id: int
    ts: int = 0
