"""FAL's webhook signature: Ed25519 over `request_id \\n user_id \\n timestamp \\n sha256(body)`.

FAL signs each delivery with one of the keys it publishes as a JWKS (`FAL_JWKS_URL`; OKP/Ed25519,
`x` the base64url raw key) and sends `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` (unix
seconds) and `-Signature` (hex). A delivery is taken when any published key verifies it and its
timestamp is within ±5 minutes (a captured delivery cannot be replayed later). The keys are the
editor's (cached there for a day); an unknown signature refetches them once, for a key rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_S = 300
HEADERS = (
    "X-Fal-Webhook-Request-Id",
    "X-Fal-Webhook-User-Id",
    "X-Fal-Webhook-Timestamp",
    "X-Fal-Webhook-Signature",
)

KeySource = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


class WebhookRejectedError(Exception):
    """Not a genuine, fresh FAL delivery (answered 401)."""


@dataclass(frozen=True, slots=True)
class SignedDelivery:
    request_id: str
    user_id: str
    timestamp: int


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def public_key(jwk: Mapping[str, Any]) -> Ed25519PublicKey | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # on first webhook

    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        return None
    try:
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        return None


def check(
    headers: Mapping[str, str], body: bytes, keys: Sequence[Mapping[str, Any]], *, now: float | None = None
) -> SignedDelivery:
    """Raise WebhookRejectedError unless a key in `keys` signed this fresh delivery."""
    values = [headers.get(name) for name in HEADERS]
    if not all(values):
        raise WebhookRejectedError("missing FAL webhook headers")
    request_id, user_id, timestamp, signature = (str(v) for v in values)
    if (
        not timestamp.isdigit()
        or abs(int(timestamp) - (now if now is not None else time.time())) > TOLERANCE_S
    ):
        raise WebhookRejectedError("timestamp outside ±5 minutes")
    try:
        raw_signature = bytes.fromhex(signature)
    except ValueError:
        raise WebhookRejectedError("signature is not hex") from None
    from cryptography.exceptions import InvalidSignature

    message = signed_message(request_id, user_id, timestamp, body)
    for jwk in keys:
        key = public_key(jwk)
        if key is None:
            continue
        try:
            key.verify(raw_signature, message)
        except InvalidSignature:
            continue
        return SignedDelivery(request_id, user_id, int(timestamp))
    raise WebhookRejectedError("no FAL key verifies the signature")


async def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: KeySource,
    *,
    refresh: Callable[[], None] | None = None,
    now: float | None = None,
) -> SignedDelivery:
    try:
        return check(headers, body, await keys(), now=now)
    except WebhookRejectedError as exc:
        if refresh is None or "verifies" not in str(exc):
            raise
    refresh()  # perhaps a rotated key: one fresh look at the JWKS
    return check(headers, body, await keys(), now=now)
