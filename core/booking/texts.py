"""Customer-facing wording of booking messages, in the business time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core.types import Booking


def when(dt: datetime, tz: ZoneInfo) -> str:
    """'Tue, Dec 3 at 10:30 AM' in local time."""
    local = dt.astimezone(tz)
    hour = local.hour % 12 or 12
    return f"{local:%a}, {local:%b} {local.day} at {hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'}"


def short_when(dt: datetime, tz: ZoneInfo) -> str:
    """'Tue Dec 3 10:30' (fits a 20-character quick-reply title)."""
    local = dt.astimezone(tz)
    return f"{local:%a} {local:%b} {local.day} {local:%H:%M}"


def money(cents: int, currency: str = "USD") -> str:
    symbol = "$" if currency == "USD" else ("£" if currency == "GBP" else "")
    amount = f"{cents / 100:.0f}" if cents % 100 == 0 else f"{cents / 100:.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def price_range(booking: Booking) -> str:
    if booking.price_min_cents is None or booking.price_max_cents is None:
        return ""
    if booking.price_min_cents == booking.price_max_cents:
        return money(booking.price_min_cents)
    return f"{money(booking.price_min_cents)}-{money(booking.price_max_cents)}"


def pets(booking: Booking) -> str:
    names = list(booking.pet_names)
    if not names:
        return "your dog"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# How a reminder reaches the customer, by the route's channel (core/reach.py).
REACH_LABEL = {
    "email": "by e-mail",
    "telegram": "on Telegram",
    "messenger": "here on Messenger",
    "instagram": "here on Instagram",
}


def confirmed(
    booking: Booking, tz: ZoneInfo, *, reminder_ahead: bool = False, reminder_via: str | None = None
) -> str:
    """The confirmation. It promises a reminder only on a route open at reminder time; with none,
    it says so and asks for an e-mail address again."""
    price = price_range(booking)
    text = f"You're booked! {booking.service_name} for {pets(booking)} on {when(booking.start, tz)}." + (
        f" Estimated price: {price}." if price else ""
    )
    if not reminder_ahead:
        return text  # booked inside the reminder window: this message is the reminder
    if reminder_via is not None:
        return text + f" We'll send you a reminder the day before {REACH_LABEL.get(reminder_via, 'here')}."
    return text + " " + NO_REMINDER_ROUTE


NO_REMINDER_ROUTE = (
    "We have no way to send you a reminder the day before: messages here only reach you for a while "
    "after you write. Reply with your e-mail address and we'll remind you there."
)


# The reasons Kimmie picks from when she declines (code -> her button's title). The code shapes what
# the customer reads (`declined`); it is stored on the appointment (decline_code).
DECLINE_REASONS = {
    "fully_booked": "Fully booked",
    "not_a_fit": "Not a fit",
    "other": "Other reason",
}


def declined(
    booking: Booking, tz: ZoneInfo, reason: str | None, has_alternatives: bool, code: str | None = None
) -> str:
    if code == "fully_booked":
        text = (
            f"Sorry, Kimmie is fully booked on {when(booking.start, tz)}, "
            f"so she can't take {pets(booking)} then."
        )
    elif code == "not_a_fit":
        # Not a time problem: offering other times would mislead.
        return (
            f"Sorry, Kimmie isn't able to take this booking for {pets(booking)}: it isn't a good fit for "
            "her salon. Thank you for thinking of her, and we hope you find the right groomer."
            + (f" {reason.strip()}" if reason else "")
        )
    else:
        text = f"Sorry, Kimmie can't take {pets(booking)} on {when(booking.start, tz)}."
    if reason:
        text += f" {reason.strip()}"
    if has_alternatives:
        text += " She can offer one of these times instead:"
    else:
        text += " Would you like to pick another time?"
    return text


def restored(booking: Booking, tz: ZoneInfo) -> str:
    return (
        f"Good news: please ignore the last message. Kimmie is looking at your request for "
        f"{pets(booking)} on {when(booking.start, tz)} again, and will confirm shortly."
    )


def cancelled_by_salon(booking: Booking, tz: ZoneInfo, reason: str | None) -> str:
    text = f"Your appointment for {pets(booking)} on {when(booking.start, tz)} has been cancelled."
    if reason:
        text += f" {reason.strip()}"
    return text + " We're sorry for the trouble. Would you like to book another time?"


def moved_by_salon(booking: Booking, tz: ZoneInfo) -> str:
    return (
        f"Kimmie moved your appointment for {pets(booking)}: it is now on {when(booking.start, tz)}. "
        "If that doesn't suit you, just reply here."
    )


def expired(booking: Booking, tz: ZoneInfo) -> str:
    return (
        f"Kimmie couldn't confirm your request for {when(booking.start, tz)} in time, so the slot was "
        "released. Would you like to pick another time?"
    )


def reminder(booking: Booking, tz: ZoneInfo) -> str:
    return (
        f"Reminder: {pets(booking)} has a {booking.service_name.lower()} appointment on "
        f"{when(booking.start, tz)}. Can you make it?"
    )


def rebooking(pet_names: str, weeks: int) -> str:
    return (
        f"It's been about {weeks} weeks since {pet_names}'s last groom. Would you like to book the next one?"
    )


# --- Refusals (BookingError messages: shown to the customer, or to Kimmie on her buttons) ---------
OUTSIDE_HOURS = "That time is outside Kimmie's working hours. Please pick an offered slot."
JUST_TAKEN = "Sorry, that time was just taken. Please pick another slot."
TAKEN = "Sorry, that time is taken. Please pick another slot."
DAY_FULL = "Kimmie's schedule is full for that day. Please pick another day."
NO_APPOINTMENT = "I can't find that appointment."
NO_PET = "I can't find that pet on your profile."
ALREADY_PASSED = "That appointment time has already passed."
NEW_TIME_IN_PAST = "The new time is in the past."
CALENDAR_BUSY_ON_APPROVE = "Your Google Calendar is busy at that time: the request was not approved."
REQUEST_CHANGED = "The request was changed meanwhile: please look at it again."
UNDO_SLOT_TAKEN = "That time was taken meanwhile, so the decline stays."
UNDO_TOO_LATE = "Too late to undo: a decline can be undone for 5 minutes."
APPOINTMENT_CHANGED = "The appointment was changed meanwhile: please look at it again."
OVERLAPS_CONFIRMED = "That time overlaps a confirmed appointment."
CALENDAR_DOWN_ALERT = (
    "Google Calendar could not be reached, so offered slots are checked against working hours "
    "and bookings only (not your calendar). ({error})"
)
# Quick-reply titles that come with booking messages.
PICK_ANOTHER_TIME = "Pick another time"
BOOK_ANOTHER_TIME = "Book another time"
BOOK_NOW = "Book now"
CONFIRM = "Confirm"
RESCHEDULE = "Reschedule"
CANCEL = "Cancel"


def no_service(code: str) -> str:
    return f"There is no service called {code!r}."


def no_addon(code: str) -> str:
    return f"There is no add-on called {code!r}."


def overlaps_confirmed_on_approve(appointment_id: int) -> str:
    return f"That time overlaps a confirmed appointment (#{appointment_id}): the request was not approved."


def unknown_decline_reason(code: str) -> str:
    return f"There is no decline reason called {code!r}."


def not_now(verb: str, appointment_id: int, status: str) -> str:
    return f"Can't {verb} appointment #{appointment_id}: it is already {status}."


def notice_needed(hours: float) -> str:
    return f"Bookings need at least {hours:g} hours' notice. Please pick a later time."


def beyond_horizon(days: int) -> str:
    return f"Bookings open {days} days ahead. Please pick an earlier date."


def change_notice_needed(hours: float) -> str:
    return f"Changes need {hours:g} hours' notice: please message Kimmie."


def closures(days: list[str]) -> str:
    return "Closed on " + ", ".join(days)
