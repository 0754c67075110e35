"""What Kimmie's cards say, without the format: the words shared by the Telegram card (HTML, emoji,
bot/cards.py) and the e-mail she gets when Telegram cannot reach her (plain text,
channels/email/admin_mail.py). In core so neither adapter imports the other.
"""

from __future__ import annotations

from datetime import date

from core.notify.views import PetView
from core.types import AppointmentStatus

# booking_changed events as Kimmie reads them (Telegram line and e-mail).
EVENT_LABEL = {
    "confirmed": "confirmed ✅",
    "offer_accepted": "confirmed: the customer took the time you offered ✅",
    "restored": "decline undone: waiting for your decision again ↩",
    "declined": "declined ❌",
    "cancelled_by_customer": "cancelled by the customer 🚫",
    "cancelled_by_kimmie": "cancelled 🚫",
    "rescheduled_by_customer": "moved to a new time by the customer 🔁",
    "rescheduled_by_kimmie": "moved to a new time 🔁",
    "expired": "expired before a decision ⌛",
    "completed": "completed ✔",
    "no_show": "marked no-show",
    "payment_received": "deposit paid 💳",
    "deposit_pending": "deposit link sent 💳",
    "deposit_expired": "deposit link expired unpaid ⌛",
    "deposit_failed": "deposit payment failed ⚠",
    "deposit_refunded": "deposit refunded ↩",
    "deposit_captured": "card hold charged 💳",
    "deposit_released": "card hold released ↩",
}
# Changes Kimmie made herself (a button she just pressed): the card is refreshed, no extra message.
QUIET_EVENTS = frozenset(
    {
        "confirmed",
        "declined",
        "restored",
        "cancelled_by_kimmie",
        "rescheduled_by_kimmie",
        "completed",
        "no_show",
        # The money side of her own decisions (and the link going out): the card line says it.
        "deposit_pending",
        "deposit_refunded",
        "deposit_captured",
        "deposit_released",
    }
)

CHANNEL_LABEL = {"telegram": "Telegram", "instagram": "Instagram", "messenger": "Messenger", "web": "Website"}
STATUS_WORDS = {
    AppointmentStatus.REQUESTED: "waiting for your decision",
    AppointmentStatus.CONFIRMED: "confirmed",
    AppointmentStatus.DECLINED: "declined",
    AppointmentStatus.CANCELLED: "cancelled",
    AppointmentStatus.EXPIRED: "expired (not decided in time)",
    AppointmentStatus.COMPLETED: "completed",
    AppointmentStatus.NO_SHOW: "no-show",
}


def channel_label(channel: str | None) -> str:
    return CHANNEL_LABEL.get(channel, channel) if channel else "—"


def fmt_money(low: int | None, high: int | None, currency: str = "USD") -> str:
    if low is None:
        return "no quote"
    symbol = "$" if currency.upper() == "USD" else f"{currency} "
    if high is None or high == low:
        return f"{symbol}{low / 100:,.0f}"
    return f"{symbol}{low / 100:,.0f}–{high / 100:,.0f}"


def pet_traits(pet: PetView) -> list[str]:
    """Breed, size and coat, those known."""
    return [f for f in (pet.breed, pet.size_class, f"{pet.coat_type} coat" if pet.coat_type else None) if f]


def handle_text(channel: str, handle: str) -> str:
    return f"{CHANNEL_LABEL.get(channel, channel)} @{handle.lstrip('@')}"


def history_text(visits: int, no_shows: int) -> str:
    """'3 past visits, 1 no-show' / 'first visit'."""
    if not visits and not no_shows:
        return "first visit"
    parts = [f"{visits} past visit{'s' if visits != 1 else ''}"]
    if no_shows:
        parts.append(f"{no_shows} no-show{'s' if no_shows != 1 else ''}")
    return ", ".join(parts)


def vaccination(pet: PetView, today: date) -> tuple[str, bool]:
    """The vaccination line ("" when unknown: nothing to show), and whether it is a warning."""
    if pet.vaccination_expires_on is None:
        return "", False
    if pet.vaccination_expires_on < today:
        return f"vaccination expired {pet.vaccination_expires_on:%-d %b %Y}", True
    return f"vaccinated until {pet.vaccination_expires_on:%-d %b %Y}", False


def digest_intro(count: int) -> str:
    """The head of Kimmie's daily list of reminders that could not reach the customer."""
    visits = "1 visit" if count == 1 else f"{count} visits"
    return (
        f"📋 Reminders that could not reach the customer ({visits} in the next 48 hours). "
        "Please contact them, then mark each visit confirmed:"
    )
