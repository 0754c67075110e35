"""Signed, expiring tokens for the Google Calendar OAuth walk-through (no SDK here).

Only Kimmie may connect a calendar: /oauth/start needs a link signed with the OAuth client secret
(`start_link`, shown to Kimmie by her bot), and the `state` it passes to Google is signed the same
way, so /oauth/callback accepts only flows that began from such a link.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

from core import signing
from core.settings import Settings

START_TTL_S = 30 * 60
STATE_TTL_S = 15 * 60
SCOPE = "https://www.googleapis.com/auth/calendar"
REFRESH_TOKEN_NAME = "google_refresh_token"  # StoredCredential.name


def _key(settings: Settings) -> bytes:
    if not settings.google_client_secret:
        raise ValueError("GOOGLE_CLIENT_SECRET is not set")
    return signing.derive_key("cheshire-oauth", settings.google_client_secret)


def _sign(settings: Settings, purpose: str, body: str) -> str:
    return f"{body}.{signing.mac(_key(settings), purpose, body)}"


def _verify(settings: Settings, purpose: str, token: str, ttl_s: float, now: float) -> bool:
    body, _, mac = token.rpartition(".")
    if not body or not mac:
        return False
    try:
        key = _key(settings)
        issued = int(body.split(".")[0])
    except ValueError:
        return False
    return signing.matches(key, purpose, body, mac) and 0 <= now - issued <= ttl_s


def redirect_uri(settings: Settings) -> str:
    return f"{settings.public_base_url or f'http://{settings.host}:{settings.port}'}/oauth/callback"


def start_link(settings: Settings, *, clock: Callable[[], float] = time.time) -> str:
    """The link Kimmie opens to connect her Google Calendar (valid 30 minutes)."""
    token = _sign(settings, "start", str(int(clock())))
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    return f"{base}/oauth/start?{urlencode({'t': token})}"


def valid_start(settings: Settings, token: str, *, clock: Callable[[], float] = time.time) -> bool:
    return _verify(settings, "start", token, START_TTL_S, clock())


def new_state(settings: Settings, *, clock: Callable[[], float] = time.time) -> str:
    return _sign(settings, "state", f"{int(clock())}.{secrets.token_hex(8)}")


def valid_state(settings: Settings, state: str, *, clock: Callable[[], float] = time.time) -> bool:
    return _verify(settings, "state", state, STATE_TTL_S, clock())


def consent_url(settings: Settings, state: str) -> str:
    query = {
        "client_id": settings.google_client_id or "",
        "redirect_uri": redirect_uri(settings),
        "response_type": "code",
        "scope": SCOPE,
        "access_type": "offline",
        "prompt": "consent",  # Google only returns a refresh token on (re)consent
        "include_granted_scopes": "true",
        "state": state,
    }
    return f"{settings.google_oauth_auth_uri}?{urlencode(query)}"
