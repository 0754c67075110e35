"""The deposit as Kimmie's card shows it (Telegram and e-mail): a line, and whether it can be refunded
from the card. Read in the card's unit of work; nothing here calls Stripe."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Payment
from core.payments import texts

REFUNDABLE = frozenset({"paid", "kept", "held"})


@dataclass(frozen=True, slots=True)
class DepositView:
    line: str  # "deposit: paid ($20)"
    refundable: bool


async def deposit_view(session: AsyncSession, appointment_id: int) -> DepositView | None:
    """None when no deposit was asked for this appointment."""
    payment = (
        await session.execute(select(Payment).where(Payment.appointment_id == appointment_id))
    ).scalar_one_or_none()
    if payment is None:
        return None
    return DepositView(
        line=texts.card_line(payment.status, payment.amount_cents, payment.currency),
        refundable=payment.status in REFUNDABLE,
    )
