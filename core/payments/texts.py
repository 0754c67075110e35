"""Customer-facing words about deposits, and the card's deposit line (every string in one place)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core.booking.texts import money, when

CURRENCY_SYMBOLS = {"usd": "USD", "gbp": "GBP"}


def amount(cents: int, currency: str) -> str:
    return money(cents, CURRENCY_SYMBOLS.get(currency.lower(), currency.upper()))


def deposit_link(
    cents: int, currency: str, *, hold: bool, url: str, start: datetime, until: datetime, tz: ZoneInfo
) -> str:
    what = "hold" if hold else "deposit"
    how = (
        "Your card is only held, not charged, and the hold is released after your visit"
        if hold
        else "It comes off the final price"
    )
    return (
        f"To keep your request for {when(start, tz)}, please pay a {amount(cents, currency)} {what} here: "
        f"{url}\n{how}. The link works until {when(until, tz)}."
    )


def receipt(cents: int, currency: str, *, hold: bool, start: datetime, tz: ZoneInfo) -> str:
    if hold:
        return (
            f"Card hold of {amount(cents, currency)} received for {when(start, tz)}, thank you! "
            "Nothing is charged unless the visit is missed or cancelled late."
        )
    return (
        f"Deposit of {amount(cents, currency)} received for {when(start, tz)}, thank you! "
        "It comes off the final price."
    )


def refunded(cents: int, currency: str, *, hold: bool) -> str:
    if hold:
        return f"The {amount(cents, currency)} hold on your card was released."
    return f"Your {amount(cents, currency)} deposit was refunded; it shows on your card in 5-10 days."


def paid_too_late(cents: int, currency: str) -> str:
    return (
        f"Your {amount(cents, currency)} payment arrived after the request was no longer held, so it is "
        "being refunded in full."
    )


def pay_button(hold: bool) -> str:
    return "💳 Hold my card" if hold else "💳 Pay the deposit"


PAYMENT_FAILED = "The deposit payment did not go through. You can try again with the same link."
SUCCESS_PAGE = "Thank you! Your payment was received; you'll get a message in the chat in a moment."
CANCEL_PAGE = "No payment was taken. You can use the link in the chat again until it expires."

# The card's line, by payment status: "deposit: pending" ...
CARD_STATUS = {
    "not_collected": "not collected (Stripe off)",
    "creating": "pending (link being made)",
    "pending": "pending",
    "paid": "paid",
    "held": "held on card",
    "expired": "expired",
    "failed": "failed",
    "refund_pending": "refund in progress",
    "refunded": "refunded",
    "kept": "kept",
    "capture_pending": "being charged",
    "captured": "charged (hold captured)",
    "release_pending": "hold being released",
    "released": "hold released",
}


def card_line(status: str, cents: int, currency: str) -> str:
    words = CARD_STATUS.get(status, status)
    if status == "not_collected":  # the contract's exact words: nothing was asked, so no amount
        return f"deposit: {words}"
    return f"deposit: {words} ({amount(cents, currency)})"
