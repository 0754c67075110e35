"""Google Calendar adapter: the only module importing googleapiclient / google.oauth2.

The client is synchronous (httplib2) and not thread-safe, so every call runs in a worker thread via
`asyncio.to_thread`, with a thread-local service object and a time-out on both the socket and the
await. Failures of any kind surface as `CalendarUnavailableError`; nothing from the SDK leaves here.
The SDK is imported by the first call's thread, not at start-up (~0.15 s and ~10 MB off the time to
the first /healthz; the first call is the cache warm-up, right after start-up, off the event loop).

- freeBusy answers are cached briefly (CALENDAR_CACHE_S) per whole-UTC-day range, and a failure is
  remembered for the same time, so a Calendar outage does not make every slot search wait.
- Events get a deterministic id from the booking id (base32hex), so a retried insert answers 409
  `duplicate` instead of creating a second event; 409 then patches the existing event, which is also
  how a moved appointment updates its event.
- Credentials: a refresh token stored by /oauth/callback (preferred), else GOOGLE_REFRESH_TOKEN, with
  GOOGLE_CLIENT_ID/SECRET; or a service account (GOOGLE_SERVICE_ACCOUNT_EMAIL + GOOGLE_PRIVATE_KEY).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import sys
import threading
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from core.calendar.oauth import REFRESH_TOKEN_NAME
from core.db.models import StoredCredential
from core.ports import CalendarUnavailableError
from core.settings import Settings
from core.types import Booking, Interval

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/calendar"]
_CACHE_ENTRIES = 32
T = TypeVar("T")


def event_id_for(booking_id: int) -> str:
    """A valid Calendar event id (base32hex: a-v, 0-9; 5-1024 chars), the same for every retry."""
    return base64.b32hexencode(f"cheshire{booking_id}".encode()).decode().rstrip("=").lower()


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


class GoogleCalendarProvider:
    """`core.ports.CalendarProvider` on Google Calendar v3."""

    def __init__(self, settings: Settings, *, monotonic: Callable[[], float] = _time.monotonic) -> None:
        self.settings = settings
        self.calendar_id = settings.google_calendar_id
        self._refresh_token = (
            settings.google_refresh_token.get_secret_value() if settings.google_refresh_token else None
        )
        self._monotonic = monotonic
        self._generation = 0
        self._local = threading.local()
        self._cache: list[tuple[float, datetime, datetime, list[Interval]]] = []
        self._down_until = 0.0
        self._fetch_lock: asyncio.Lock | None = None
        self._warmer: asyncio.Task[None] | None = None

    # --- credentials ------------------------------------------------------------------------------
    async def load_stored_credentials(self, session: AsyncSession) -> bool:
        """Prefer the refresh token stored by /oauth/callback over the environment's. Call once at
        start (the provider never opens a transaction itself: it is called inside others)."""
        row = await session.get(StoredCredential, REFRESH_TOKEN_NAME)
        if row is None or not row.value:
            return False
        self.use_refresh_token(row.value)
        return True

    @property
    def connected(self) -> bool:
        """Whether there are credentials to call Google with (a refresh token or a service account)."""
        s = self.settings
        return bool(self._refresh_token) or bool(s.google_service_account_email and s.google_private_key)

    def use_refresh_token(self, token: str) -> None:
        """Switch to a new refresh token (after /oauth/callback): every thread rebuilds its client."""
        self._refresh_token = token
        self._generation += 1
        self._cache.clear()
        self._down_until = 0.0

    def _credentials(self) -> Any:
        from google.oauth2 import credentials as user_credentials
        from google.oauth2 import service_account

        s = self.settings
        if self._refresh_token and s.google_client_id and s.google_client_secret:
            return user_credentials.Credentials(  # type: ignore[no-untyped-call]
                None,
                refresh_token=self._refresh_token,
                client_id=s.google_client_id,
                client_secret=s.google_client_secret.get_secret_value(),
                token_uri=s.google_oauth_token_uri,
                scopes=SCOPES,
            )
        if s.google_service_account_email and s.google_private_key:
            info = {
                "type": "service_account",
                "client_email": s.google_service_account_email,
                # Keys pasted into .env usually carry literal "\n".
                "private_key": s.google_private_key.get_secret_value().replace("\\n", "\n"),
                "token_uri": s.google_oauth_token_uri,
            }
            return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
        raise CalendarUnavailableError(
            "Google Calendar is not connected (no refresh token or service account)"
        )

    def _service(self) -> Any:
        """This thread's client, rebuilt when the credentials changed."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            import httplib2
            from google_auth_httplib2 import AuthorizedHttp
            from googleapiclient.discovery import build

            http = AuthorizedHttp(
                self._credentials(), http=httplib2.Http(timeout=self.settings.calendar_timeout_s)
            )
            options = (
                {"api_endpoint": self.settings.google_calendar_api_base}
                if self.settings.google_calendar_api_base
                else None
            )
            local.service = build(
                "calendar",
                "v3",
                http=http,
                cache_discovery=False,
                static_discovery=True,
                client_options=options,
            )
            local.generation = self._generation
        return local.service

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run `fn(service)` in a thread with a time-out; every failure becomes CalendarUnavailableError."""

        def run() -> T:
            return fn(self._service())

        try:
            async with asyncio.timeout(self.settings.calendar_timeout_s + 1):
                return await asyncio.to_thread(run)
        except CalendarUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - httplib2/socket errors too: all mean "unavailable"
            raise _unavailable(what, exc) from None

    # --- keeping the cache warm -------------------------------------------------------------------
    async def refresh(self, days: int = 62) -> None:
        """Fetch freeBusy for today .. today+days into the cache (no transaction is open here)."""
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        self._cache = [c for c in self._cache if not (c[1] <= today and today + timedelta(days=days) <= c[2])]
        await self.busy(today, today + timedelta(days=days + 1))

    def start_warming(self, days: int = 62) -> None:
        """Refresh the cache in the background a little before it expires, so slot searches (which
        run inside a database transaction) almost never wait on Google."""
        if self._warmer is not None or self.settings.calendar_cache_s <= 0:
            return

        async def loop() -> None:
            period = max(self.settings.calendar_cache_s * 0.8, 5.0)
            while True:
                try:
                    await self.refresh(days)
                except CalendarUnavailableError as exc:
                    log.info("calendar warm-up failed", extra={"error": str(exc)[:200]})
                await asyncio.sleep(period)

        self._warmer = asyncio.create_task(loop(), name="calendar-warmer")

    async def stop_warming(self) -> None:
        if self._warmer is not None:
            self._warmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmer
            self._warmer = None

    # --- CalendarProvider -------------------------------------------------------------------------
    async def busy(self, start: datetime, end: datetime) -> list[Interval]:
        now = self._monotonic()
        if now < self._down_until:
            raise CalendarUnavailableError("Google Calendar failed moments ago")
        cached = self._cached(start, end, now)
        if cached is not None:
            return cached
        if self._fetch_lock is None:
            self._fetch_lock = asyncio.Lock()
        async with self._fetch_lock:  # concurrent searches share one fetch
            cached = self._cached(start, end, self._monotonic())
            if cached is not None:
                return cached
            day_start = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            day_end = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            if day_end < end:
                day_end += timedelta(days=1)
            try:
                intervals = await self._free_busy(day_start, day_end)
            except CalendarUnavailableError:
                self._down_until = self._monotonic() + min(self.settings.calendar_cache_s, 30.0)
                raise
            if self.settings.calendar_cache_s > 0:
                expires = self._monotonic() + self.settings.calendar_cache_s
                self._cache.append((expires, day_start, day_end, intervals))
                del self._cache[:-_CACHE_ENTRIES]
        return [i for i in intervals if i.start < end and i.end > start]

    def _cached(self, start: datetime, end: datetime, now: float) -> list[Interval] | None:
        for expires, c_start, c_end, intervals in reversed(self._cache):
            if expires > now and c_start <= start and end <= c_end:
                return [i for i in intervals if i.start < end and i.end > start]
        return None

    async def _free_busy(self, start: datetime, end: datetime) -> list[Interval]:
        body = {
            "timeMin": _rfc3339(start),
            "timeMax": _rfc3339(end),
            "timeZone": "UTC",
            "items": [{"id": self.calendar_id}],
        }
        answer: dict[str, Any] = await self._call(
            "freeBusy", lambda svc: svc.freebusy().query(body=body).execute()
        )
        calendar = (answer.get("calendars") or {}).get(self.calendar_id) or {}
        if calendar.get("errors"):
            reasons = ", ".join(str(e.get("reason")) for e in calendar["errors"])
            raise CalendarUnavailableError(f"freeBusy: calendar error ({reasons})")
        return sorted(
            (Interval(_parse(b["start"]), _parse(b["end"])) for b in calendar.get("busy") or []),
            key=lambda i: i.start,
        )

    async def upsert_event(self, booking: Booking, *, summary: str, description: str) -> str:
        event_id = event_id_for(booking.id)
        tz = self.settings.business_timezone
        body: dict[str, Any] = {
            "summary": summary,
            "description": description,
            "start": {"dateTime": _rfc3339(booking.start), "timeZone": tz},
            "end": {"dateTime": _rfc3339(booking.end), "timeZone": tz},
            "status": "confirmed",
            "extendedProperties": {"private": {"booking_id": str(booking.id)}},
        }

        def write(svc: Any) -> str:
            from googleapiclient.errors import HttpError

            try:
                svc.events().insert(
                    calendarId=self.calendar_id, body={"id": event_id, **body}, sendUpdates="none"
                ).execute()
            except HttpError as exc:
                if exc.resp.status != 409:
                    raise
                # Already there (a retried insert, or the appointment moved): bring it up to date.
                svc.events().patch(
                    calendarId=self.calendar_id, eventId=event_id, body=body, sendUpdates="none"
                ).execute()
            return event_id

        result = await self._call("event upsert", write)
        self._cache.clear()
        return result

    async def delete_event(self, booking_id: int, event_id: str | None) -> None:
        target = event_id or event_id_for(booking_id)

        def remove(svc: Any) -> None:
            from googleapiclient.errors import HttpError

            try:
                svc.events().delete(calendarId=self.calendar_id, eventId=target, sendUpdates="none").execute()
            except HttpError as exc:
                if exc.resp.status not in (404, 410):  # already gone: that is what we wanted
                    raise

        await self._call("event delete", remove)
        self._cache.clear()


def _unavailable(what: str, exc: Exception) -> CalendarUnavailableError:
    """What a failed call says. An SDK error type is looked at only once the call's thread has loaded
    the SDK (if it has not, `exc` is not one): importing it here could block the event loop."""
    errors = sys.modules.get("googleapiclient.errors")
    auth = sys.modules.get("google.auth.exceptions")
    if errors is not None and isinstance(exc, errors.HttpError):
        return CalendarUnavailableError(f"{what}: HTTP {exc.resp.status}")
    if auth is not None and isinstance(exc, auth.GoogleAuthError):
        return CalendarUnavailableError(f"{what}: authorisation failed ({type(exc).__name__})")
    if isinstance(exc, TimeoutError):
        return CalendarUnavailableError(f"{what}: timed out")
    return CalendarUnavailableError(f"{what}: {type(exc).__name__}")
