"""Short HMAC-SHA256 signatures for links we hand out (Kimmie's calendar link, OAuth state, the
customer's Telegram link). One key per purpose family, derived from a secret in the settings; the
purpose is part of the signed text, so a value signed for one use is refused for another."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


def derive_key(label: str, secret: SecretStr) -> bytes:
    return hashlib.sha256(f"{label}:".encode() + secret.get_secret_value().encode()).digest()


def mac(key: bytes, purpose: str, body: str, *, chars: int = 32) -> str:
    """Hex HMAC of `purpose:body`, cut to `chars` (32 = 128 bits)."""
    return hmac.new(key, f"{purpose}:{body}".encode(), hashlib.sha256).hexdigest()[:chars]


def matches(key: bytes, purpose: str, body: str, given: str, *, chars: int = 32) -> bool:
    return hmac.compare_digest(given.encode(), mac(key, purpose, body, chars=chars).encode())
