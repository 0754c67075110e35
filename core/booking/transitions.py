"""The one table of allowed appointment status changes, and the event each one emits.

Every state change in the lifecycle asks `transition()` first: an action from a status the table
does not list is refused with `InvalidTransitionError` before anything is written (the usual cause
is a stale Telegram card: the request was decided meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from core import events
from core.booking import texts
from core.booking.api import InvalidTransitionError
from core.types import AppointmentStatus as S


class Action(Enum):
    REQUEST = "request"
    APPROVE = "approve"
    DECLINE = "decline"
    CANCEL = "cancel"
    RESCHEDULE = "reschedule"
    COMPLETE = "complete"
    NO_SHOW = "mark as no-show"
    EXPIRE = "expire"
    RESTORE = "undo the decline of"
    ACCEPT_OFFER = "accept the offered time for"


@dataclass(frozen=True, slots=True)
class Transition:
    to: S
    event: str


# (action, status before) -> status after and the event it emits. `None` is "no appointment yet".
TRANSITIONS: dict[tuple[Action, S | None], Transition] = {
    (Action.REQUEST, None): Transition(S.REQUESTED, events.BOOKING_REQUESTED),
    (Action.APPROVE, S.REQUESTED): Transition(S.CONFIRMED, events.BOOKING_CONFIRMED),
    (Action.DECLINE, S.REQUESTED): Transition(S.DECLINED, events.BOOKING_DECLINED),
    (Action.CANCEL, S.REQUESTED): Transition(S.CANCELLED, events.BOOKING_CANCELLED),
    (Action.CANCEL, S.CONFIRMED): Transition(S.CANCELLED, events.BOOKING_CANCELLED),
    (Action.RESCHEDULE, S.REQUESTED): Transition(S.REQUESTED, events.BOOKING_RESCHEDULED),
    (Action.RESCHEDULE, S.CONFIRMED): Transition(S.CONFIRMED, events.BOOKING_RESCHEDULED),
    (Action.COMPLETE, S.CONFIRMED): Transition(S.COMPLETED, events.BOOKING_COMPLETED),
    (Action.NO_SHOW, S.CONFIRMED): Transition(S.NO_SHOW, events.BOOKING_NO_SHOW),
    (Action.EXPIRE, S.REQUESTED): Transition(S.EXPIRED, events.BOOKING_HOLD_EXPIRED),
    # Undo: only within UNDO_WINDOW of the decline (the lifecycle checks the time).
    (Action.RESTORE, S.DECLINED): Transition(S.REQUESTED, events.BOOKING_RESTORED),
    # The customer takes a time Kimmie offered with a decline: confirmed without a second approval.
    (Action.ACCEPT_OFFER, None): Transition(S.CONFIRMED, events.BOOKING_CONFIRMED),
}

# How long after a decline Kimmie may still undo it.
UNDO_WINDOW = timedelta(minutes=5)


def allowed(action: Action, status: str | None) -> bool:
    return (action, S(status) if status is not None else None) in TRANSITIONS


def transition(action: Action, status: str | None, *, appointment_id: int | None = None) -> Transition:
    """The change `action` makes from `status`, or a clear refusal."""
    found = TRANSITIONS.get((action, S(status) if status is not None else None))
    if found is None:
        raise InvalidTransitionError(texts.not_now(action.value, appointment_id or 0, status or "new"))
    return found
