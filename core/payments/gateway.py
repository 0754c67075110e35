"""What the payments service needs from a payment provider, in our own words. The Stripe adapter
(core/payments/stripe_adapter.py) is the one implementation; its SDK objects never leave it.

Every call that moves money carries an idempotency key: a job retried after a timeout (the request
may have reached Stripe) repeats the key, and Stripe answers with the first result instead of
charging, refunding or capturing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class GatewayError(Exception):
    """A call the provider refused or could not take. `retryable`: a rate limit, a 5xx or the network
    (try again later, same idempotency key); otherwise retrying cannot help (a bad request, a card
    declined, a session already complete). `str(exc)` never holds a secret."""

    def __init__(self, message: str, *, status: int | None, code: str | None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = retryable


class SignatureError(Exception):
    """A webhook body whose signature is missing, wrong or stale, or that is not an event."""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    payment_id: int
    appointment_id: int
    client_id: int
    amount_cents: int
    currency: str
    description: str
    expires_at: datetime
    success_url: str
    cancel_url: str
    hold: bool  # a manual-capture PaymentIntent: the card is held, captured later or released
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    payment_intent_id: str | None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MoneyResult:
    """A refund, capture or release: the provider's object id and its status."""

    id: str
    status: str


class PaymentGateway(Protocol):
    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession: ...

    async def get_checkout(self, session_id: str) -> CheckoutSession: ...

    async def expire_checkout(self, session_id: str) -> CheckoutSession: ...

    async def refund(
        self, payment_intent_id: str, *, amount_cents: int, idempotency_key: str
    ) -> MoneyResult: ...

    async def capture(self, payment_intent_id: str, *, idempotency_key: str) -> MoneyResult: ...

    async def release(self, payment_intent_id: str, *, idempotency_key: str) -> MoneyResult: ...

    def verify_event(self, raw: bytes, signature: str | None) -> Mapping[str, Any]: ...

    async def close(self) -> None: ...
