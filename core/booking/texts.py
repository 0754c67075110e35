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


def confirmed(booking: Booking, tz: ZoneInfo) -> str:
    price = price_range(booking)
    return (
        f"You're booked! {booking.service_name} for {pets(booking)} on {when(booking.start, tz)}."
        + (f" Estimated price: {price}." if price else "")
        + " We'll send you a reminder the day before."
    )


def declined(booking: Booking, tz: ZoneInfo, reason: str | None, has_alternatives: bool) -> str:
    text = f"Sorry, Kimmie can't take {pets(booking)} on {when(booking.start, tz)}."
    if reason:
        text += f" {reason.strip()}"
    if has_alternatives:
        text += " She can offer one of these times instead:"
    else:
        text += " Would you like to pick another time?"
    return text


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
