"""Callback data of the bot's own buttons (aiogram CallbackData factories, each <= 64 bytes).

Kimmie's buttons use prefixes starting with "k." and are honoured only for admins; a customer's own
buttons use "c.". Every other callback_data is a conversation payload (the offline responder's
grammar, "BOOK", "PRICES"...) and goes to the conversation core.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData

ADMIN_PREFIX = "k."


class ApptAction(CallbackData, prefix="k.ap"):
    """approve | decline | offer | alt (decline offering `ts`) | back (re-render the card)."""

    action: str
    appointment_id: int
    ts: int = 0  # unix seconds of an alternative start


class ChatAction(CallbackData, prefix="k.ch"):
    """open (take over and reply) | done (hand back)."""

    action: str
    conversation_id: int


class PhotoAction(CallbackData, prefix="k.ph"):
    """appt (photo for this appointment's pet) | pet | kind (store as `kind`) | cancel."""

    action: str
    target_id: int = 0
    kind: str = ""


class MyBooking(CallbackData, prefix="c.bk"):
    """A customer's own booking: cancel | cancel_yes | keep | resched | slot (move to `ts`)."""

    action: str
    appointment_id: int
    ts: int = 0
