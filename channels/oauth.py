"""GET /oauth/start and GET /oauth/callback: Kimmie connects her Google Calendar.

/oauth/start (from a signed link her bot gives her) redirects to Google's consent page asking for
offline access; /oauth/callback checks the signed state, exchanges the code at the token URI and
stores the refresh token (StoredCredential), which the calendar provider then prefers over
GOOGLE_REFRESH_TOKEN, and queues the back-fill: bookings confirmed before the calendar was connected
get their events too (core/booking/jobs.py).
"""

from __future__ import annotations

import logging
from typing import Protocol

import aiohttp
from aiohttp import web

from core.alerts import resolve_alert
from core.booking.guard import CALENDAR_FAULT
from core.booking.jobs import queue_calendar_backfill
from core.calendar import oauth
from core.calendar.oauth import REFRESH_TOKEN_NAME
from core.db.database import Database
from core.db.models import StoredCredential, utcnow
from core.settings import Settings

log = logging.getLogger(__name__)


class TokenSink(Protocol):
    def use_refresh_token(self, token: str) -> None: ...


OAUTH_DB_KEY = web.AppKey("oauth_db", Database)
OAUTH_SETTINGS_KEY = web.AppKey("oauth_settings", Settings)
OAUTH_SINK_KEY = web.AppKey("oauth_token_sink", object)


def _page(title: str, text: str, status: int = 200) -> web.Response:
    body = f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><p>{text}</p>"
    return web.Response(text=body, content_type="text/html", status=status)


async def oauth_start(request: web.Request) -> web.StreamResponse:
    settings = request.app[OAUTH_SETTINGS_KEY]
    if not (settings.google_client_id and settings.google_client_secret):
        return _page("Not configured", "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are not set.", 404)
    if not oauth.valid_start(settings, request.query.get("t", "")):
        return _page(
            "Link expired", "Ask the bot for a new Google Calendar link (it is valid 30 minutes).", 403
        )
    raise web.HTTPFound(oauth.consent_url(settings, oauth.new_state(settings)))


async def oauth_callback(request: web.Request) -> web.StreamResponse:
    settings = request.app[OAUTH_SETTINGS_KEY]
    db = request.app[OAUTH_DB_KEY]
    if not (settings.google_client_id and settings.google_client_secret):
        return _page("Not configured", "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are not set.", 404)
    if request.query.get("error"):
        return _page("Not connected", "Google said: access was not granted.", 400)
    code = request.query.get("code", "")
    if not code or not oauth.valid_state(settings, request.query.get("state", "")):
        return _page(
            "Link expired", "This sign-in is not valid any more. Please start again from the bot.", 400
        )
    form = {
        "code": code,
        "client_id": settings.google_client_id,
        "client_secret": settings.google_client_secret.get_secret_value(),
        "redirect_uri": oauth.redirect_uri(settings),
        "grant_type": "authorization_code",
    }
    try:
        timeout = aiohttp.ClientTimeout(total=settings.calendar_timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(settings.google_oauth_token_uri, data=form) as response,
        ):
            answer = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError):
        log.warning("google token exchange failed", exc_info=True)
        return _page("Try again", "Google could not be reached. Please try again in a minute.", 502)
    refresh_token = answer.get("refresh_token") if isinstance(answer, dict) and status == 200 else None
    if not refresh_token:
        log.warning("google token exchange refused", extra={"status": status})
        return _page(
            "Not connected", "Google did not give a calendar token. Please start again from the bot.", 400
        )
    async with db.transaction() as session:
        row = await session.get(StoredCredential, REFRESH_TOKEN_NAME)
        if row is None:
            session.add(StoredCredential(name=REFRESH_TOKEN_NAME, value=refresh_token, updated_at=utcnow()))
        else:
            row.value = refresh_token
            row.updated_at = utcnow()
        await resolve_alert(session, CALENDAR_FAULT)
        await queue_calendar_backfill(session, reason="connected")
    sink = request.app.get(OAUTH_SINK_KEY)
    if sink is not None:
        sink.use_refresh_token(refresh_token)  # type: ignore[attr-defined]
    log.info("google calendar connected")
    return _page(
        "Google Calendar connected", "Cheshire will now check your calendar. You can close this page."
    )


def setup_routes(
    app: web.Application, *, db: Database, settings: Settings, calendar: TokenSink | None = None
) -> None:
    """Add /oauth/start and /oauth/callback. `calendar` (the GoogleCalendarProvider) switches to the
    new token at once; without it the token is used from the next start."""
    app[OAUTH_DB_KEY] = db
    app[OAUTH_SETTINGS_KEY] = settings
    if calendar is not None:
        app[OAUTH_SINK_KEY] = calendar
    app.router.add_get("/oauth/start", oauth_start)
    app.router.add_get("/oauth/callback", oauth_callback)
