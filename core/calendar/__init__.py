"""Google Calendar: the provider (google.py, the only module importing the SDK) and the OAuth helpers."""

from __future__ import annotations

from core.settings import Settings


def is_configured(settings: Settings) -> bool:
    """Whether a Google Calendar provider can be built: an OAuth client (the refresh token may come
    later through /oauth/callback) or a service account. Importing this never loads the SDK."""
    oauth = bool(settings.google_client_id and settings.google_client_secret)
    service = bool(settings.google_service_account_email and settings.google_private_key)
    return oauth or service
