"""FAL's webhook signature (Ed25519 over request id, user id, timestamp and the body's SHA-256),
checked against a JWKS of test keys: valid, wrong key, tampered body, stale, missing headers."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.previews.webhook import WebhookRejectedError, check, verify
from tests.fakes.fal import jwk_of, sign_delivery

BODY = json.dumps({"request_id": "req-1", "status": "OK", "payload": {"images": []}}).encode()
KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def test_valid_delivery_passes() -> None:
    headers = sign_delivery(KEY, BODY, request_id="req-1")
    delivery = check(headers, BODY, [jwk_of(OTHER), jwk_of(KEY)])
    assert (delivery.request_id, delivery.user_id) == ("req-1", "fal-user-1")


def test_wrong_key_tampered_body_and_swapped_id_fail() -> None:
    with pytest.raises(WebhookRejectedError):
        check(sign_delivery(OTHER, BODY, request_id="req-1"), BODY, [jwk_of(KEY)])
    with pytest.raises(WebhookRejectedError):
        check(sign_delivery(KEY, BODY, request_id="req-1"), BODY + b" ", [jwk_of(KEY)])
    swapped = sign_delivery(KEY, BODY, request_id="req-1") | {"X-Fal-Webhook-Request-Id": "req-2"}
    with pytest.raises(WebhookRejectedError):
        check(swapped, BODY, [jwk_of(KEY)])


@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_stale_or_future_timestamps_fail(skew: int) -> None:
    headers = sign_delivery(KEY, BODY, request_id="req-1", timestamp=int(time.time()) + skew)
    with pytest.raises(WebhookRejectedError, match="timestamp"):
        check(headers, BODY, [jwk_of(KEY)])


def test_within_five_minutes_passes() -> None:
    headers = sign_delivery(KEY, BODY, request_id="req-1", timestamp=int(time.time()) - 290)
    assert check(headers, BODY, [jwk_of(KEY)]).request_id == "req-1"


def test_missing_or_malformed_headers_fail() -> None:
    headers = sign_delivery(KEY, BODY, request_id="req-1")
    for name in list(headers):
        if name.startswith("X-Fal"):
            with pytest.raises(WebhookRejectedError):
                check({k: v for k, v in headers.items() if k != name}, BODY, [jwk_of(KEY)])
    with pytest.raises(WebhookRejectedError):
        check(headers | {"X-Fal-Webhook-Signature": "zz-not-hex"}, BODY, [jwk_of(KEY)])
    with pytest.raises(WebhookRejectedError):
        check(headers, BODY, [{"kty": "RSA", "n": "x"}, {"kty": "OKP", "crv": "Ed25519", "x": "!!"}])


async def test_a_rotated_key_is_fetched_once_more() -> None:
    served = [[jwk_of(OTHER)], [jwk_of(OTHER), jwk_of(KEY)]]
    fetched: list[int] = []

    async def keys() -> list[dict[str, str]]:
        fetched.append(1)
        return served[min(len(fetched) - 1, 1)]

    delivery = await verify(sign_delivery(KEY, BODY, request_id="req-1"), BODY, keys, refresh=lambda: None)
    assert delivery.request_id == "req-1" and len(fetched) == 2
