"""The Stripe adapter: the only module that imports `stripe` (tests/test_import_rules.py).

`StripeGateway` is `PaymentGateway` (core/payments/gateway.py) on the official SDK's `StripeClient`,
with its async methods over aiohttp (`stripe.AIOHTTPClient`: httpx is not installed, aiohttp is the
process's HTTP library anyway), the API version pinned by settings (STRIPE_API_VERSION, by default the
one this SDK targets) and the base URL from STRIPE_API_BASE (a local fake in tests). Webhooks are
verified with the SDK's `WebhookSignature.verify_header` on the raw body (tolerance 300 s).

It is imported by the composition root only when Stripe is configured, so an unconfigured process
never loads the SDK; and even then the SDK (~0.2 s) is not loaded at start-up: `warm_up()` loads it
once /healthz answers, the first call makes the client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.payments.gateway import CheckoutRequest, CheckoutSession, GatewayError, MoneyResult, SignatureError
from core.settings import Settings

if TYPE_CHECKING:
    import stripe

WEBHOOK_TOLERANCE_S = 300


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        if settings.stripe_secret_key is None:
            raise ValueError("StripeGateway needs STRIPE_SECRET_KEY")
        self._webhook_secret = (
            settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else None
        )
        self._settings = settings
        self._http: stripe.AIOHTTPClient | None = None
        self._sdk_client: stripe.StripeClient | None = None

    async def warm_up(self) -> None:
        """Import the SDK off the event loop, so the first call or webhook does not wait for it."""
        await asyncio.to_thread(load_sdk)

    @property
    def _client(self) -> stripe.StripeClient:
        if self._sdk_client is None:
            import stripe

            settings = self._settings
            assert settings.stripe_secret_key is not None  # checked in __init__
            self._http = stripe.AIOHTTPClient(timeout=settings.stripe_timeout_s)
            base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
            self._sdk_client = stripe.StripeClient(
                settings.stripe_secret_key.get_secret_value(),
                stripe_version=settings.stripe_api_version,
                base_addresses=base,  # type: ignore[arg-type]
                http_client=self._http,
                max_network_retries=2,  # connection errors, 409, 5xx; Stripe-Should-Retry wins
            )
        return self._sdk_client

    # --- Checkout -----------------------------------------------------------------------------------
    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        metadata = {
            "appointment_id": str(request.appointment_id),
            "client_id": str(request.client_id),
            "payment_id": str(request.payment_id),
        }
        intent: dict[str, Any] = {"metadata": metadata, "description": request.description}
        if request.hold:
            intent["capture_method"] = "manual"
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": str(request.appointment_id),
            "metadata": metadata,
            "expires_at": int(request.expires_at.timestamp()),
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency,
                        "unit_amount": request.amount_cents,
                        "product_data": {"name": request.description},
                    },
                }
            ],
            "payment_intent_data": intent,
        }
        session = await self._call(
            self._client.v1.checkout.sessions.create_async,
            params,
            {"idempotency_key": request.idempotency_key},
        )
        return _session(session)

    async def get_checkout(self, session_id: str) -> CheckoutSession:
        return _session(await self._call(self._client.v1.checkout.sessions.retrieve_async, session_id))

    async def expire_checkout(self, session_id: str) -> CheckoutSession:
        return _session(await self._call(self._client.v1.checkout.sessions.expire_async, session_id))

    # --- Money movements ----------------------------------------------------------------------------
    async def refund(self, payment_intent_id: str, *, amount_cents: int, idempotency_key: str) -> MoneyResult:
        refund = await self._call(
            self._client.v1.refunds.create_async,
            {"payment_intent": payment_intent_id, "amount": amount_cents},
            {"idempotency_key": idempotency_key},
        )
        return MoneyResult(id=str(refund["id"]), status=str(refund["status"]))

    async def capture(self, payment_intent_id: str, *, idempotency_key: str) -> MoneyResult:
        intent = await self._call(
            self._client.v1.payment_intents.capture_async,
            payment_intent_id,
            None,
            {"idempotency_key": idempotency_key},
        )
        return MoneyResult(id=str(intent["id"]), status=str(intent["status"]))

    async def release(self, payment_intent_id: str, *, idempotency_key: str) -> MoneyResult:
        intent = await self._call(
            self._client.v1.payment_intents.cancel_async,
            payment_intent_id,
            None,
            {"idempotency_key": idempotency_key},
        )
        return MoneyResult(id=str(intent["id"]), status=str(intent["status"]))

    # --- Webhooks -------------------------------------------------------------------------------------
    def verify_event(self, raw: bytes, signature: str | None) -> Mapping[str, Any]:
        """The event as plain JSON when `signature` (the Stripe-Signature header) signs `raw` with
        STRIPE_WEBHOOK_SECRET within 300 s; SignatureError otherwise."""
        if self._webhook_secret is None or not signature:
            raise SignatureError("no signature")
        import stripe

        try:
            text = raw.decode("utf-8")
            stripe.WebhookSignature.verify_header(text, signature, self._webhook_secret, WEBHOOK_TOLERANCE_S)
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, IndexError) as exc:
            raise SignatureError(type(exc).__name__) from None
        try:
            event = json.loads(text)
        except ValueError:
            raise SignatureError("not JSON") from None
        if not isinstance(event, dict):
            raise SignatureError("not an event")
        return event

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]

    # --- helpers ----------------------------------------------------------------------------------------
    async def _call(self, method: Any, *args: Any) -> dict[str, Any]:
        """One SDK call; its object as a plain dict (SDK objects never leave this module)."""
        import stripe

        try:
            result = await method(*args)
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from None
        plain: dict[str, Any] = result.to_dict()
        return plain


def load_sdk() -> None:
    import stripe  # noqa: F401 - loaded for its side effect: the next import is free


def _gateway_error(exc: stripe.StripeError) -> GatewayError:
    import stripe

    status = exc.http_status
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (
        status is not None and (status == 429 or status >= 500)
    )
    message = exc.user_message or type(exc).__name__
    return GatewayError(
        f"stripe {status}: {message}"[:300], status=status, code=exc.code, retryable=retryable
    )


def _session(obj: dict[str, Any]) -> CheckoutSession:
    intent = obj.get("payment_intent")
    if isinstance(intent, Mapping):  # expanded
        intent = intent.get("id")
    expires = obj.get("expires_at")
    return CheckoutSession(
        id=str(obj["id"]),
        url=obj.get("url"),
        status=str(obj.get("status") or "open"),
        payment_status=str(obj.get("payment_status") or "unpaid"),
        payment_intent_id=str(intent) if intent else None,
        expires_at=datetime.fromtimestamp(int(expires), UTC) if expires else None,
    )
