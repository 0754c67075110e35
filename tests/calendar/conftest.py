from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from core.settings import Settings
from tests.booking.conftest import catalog_db, clock  # noqa: F401 - shared fixtures
from tests.fakes.google_calendar import FakeGoogleCalendar


@pytest.fixture
async def fake_google() -> AsyncIterator[FakeGoogleCalendar]:
    fake = await FakeGoogleCalendar().start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
def google_settings(settings: Settings, fake_google: FakeGoogleCalendar) -> Settings:
    return settings.model_copy(
        update={
            "google_client_id": "client-1.apps.googleusercontent.com",
            "google_client_secret": SecretStr("client-secret"),
            "google_refresh_token": SecretStr("refresh-env"),
            "google_calendar_api_base": fake_google.api_base,
            "google_oauth_token_uri": fake_google.token_uri,
            "google_oauth_auth_uri": fake_google.auth_uri,
            "public_base_url": "https://cheshire.example",
            "calendar_cache_s": 0.0,
            "calendar_timeout_s": 5.0,
        }
    )
