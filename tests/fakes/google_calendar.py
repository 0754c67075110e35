"""A local fake of Google Calendar v3 and Google's OAuth token endpoint, on 127.0.0.1.

Speaks the wire format the real `googleapiclient` uses (CONTRACTS.md §6): POST freeBusy, events
insert (409 `duplicate` on a repeated id) / get / patch / delete, and POST /token for the
refresh-token and authorization-code grants. Confirmed events count as busy, as they do on Google.
Point the client at it with GOOGLE_CALENDAR_API_BASE = `fake.api_base` and
GOOGLE_OAUTH_TOKEN_URI = `fake.token_uri`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "error": {
                "errors": [{"domain": "global", "reason": reason, "message": message}],
                "code": status,
                "message": message,
            }
        },
        status=status,
    )


@dataclass
class FakeGoogleCalendar:
    refresh_tokens: set[str] = field(default_factory=lambda: {"refresh-env"})
    # authorization code → refresh token it yields (the OAuth consent flow)
    auth_codes: dict[str, str] = field(default_factory=lambda: {"code-ok": "refresh-from-consent"})
    busy: list[tuple[datetime, datetime]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False  # every Calendar call answers 503
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/calendar/v3/"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def auth_uri(self) -> str:
        return f"{self.base_url}/o/oauth2/auth"

    def inserts(self) -> int:
        return sum(1 for method, path in self.requests if method == "POST" and path.endswith("/events"))

    async def start(self) -> FakeGoogleCalendar:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/calendar/v3/freeBusy", self._free_busy)
        app.router.add_post("/calendar/v3/calendars/{cid}/events", self._insert)
        app.router.add_get("/calendar/v3/calendars/{cid}/events/{eid}", self._get)
        app.router.add_patch("/calendar/v3/calendars/{cid}/events/{eid}", self._patch)
        app.router.add_delete("/calendar/v3/calendars/{cid}/events/{eid}", self._delete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = int(self._runner.addresses[0][1])  # the port the OS picked
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- OAuth ------------------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") in self.refresh_tokens:
            token = "ya29." + secrets.token_hex(8)
            self.access_tokens.add(token)
            return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
        if (
            grant == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            and form.get("assertion", "").count(".") == 2
        ):
            # A service account's signed JWT (the fake does not verify the signature).
            token = "ya29." + secrets.token_hex(8)
            self.access_tokens.add(token)
            return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
        if grant == "authorization_code" and form.get("code") in self.auth_codes:
            refresh = self.auth_codes.pop(form["code"])  # codes are single-use
            self.refresh_tokens.add(refresh)
            token = "ya29." + secrets.token_hex(8)
            self.access_tokens.add(token)
            return web.json_response(
                {"access_token": token, "expires_in": 3599, "token_type": "Bearer", "refresh_token": refresh}
            )
        return web.json_response({"error": "invalid_grant", "error_description": "Bad Request"}, status=400)

    # --- Calendar ---------------------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.method, request.path))
        if self.down:
            return _error(503, "backendError", "Backend Error")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            return _error(401, "authError", "Invalid Credentials")
        return None

    async def _free_busy(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        body = await request.json()
        lo, hi = _parse(body["timeMin"]), _parse(body["timeMax"])
        spans = list(self.busy)
        for event in self.events.values():
            if event.get("status") == "confirmed":
                spans.append((_parse(event["start"]["dateTime"]), _parse(event["end"]["dateTime"])))
        # Google merges overlapping busy blocks and clips them to the asked range.
        merged: list[list[datetime]] = []
        for s, e in sorted(spans):
            s, e = max(s, lo), min(e, hi)
            if e <= s:
                continue
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        calendars = {
            item["id"]: {"busy": [{"start": _iso(s), "end": _iso(e)} for s, e in merged]}
            for item in body.get("items", [])
        }
        answer = {"kind": "calendar#freeBusy", "timeMin": body["timeMin"], "timeMax": body["timeMax"]}
        return web.json_response({**answer, "calendars": calendars})

    async def _insert(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        body = await request.json()
        event_id = body.get("id") or secrets.token_hex(10)
        if event_id in self.events:
            return _error(409, "duplicate", "The requested identifier already exists.")
        event = {**body, "id": event_id, "status": body.get("status", "confirmed"), "kind": "calendar#event"}
        event["htmlLink"] = f"https://calendar.google.com/event?eid={event_id}"
        self.events[event_id] = event
        return web.json_response(event)

    async def _get(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        event = self.events.get(request.match_info["eid"])
        return web.json_response(event) if event else _error(404, "notFound", "Not Found")

    async def _patch(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        event = self.events.get(request.match_info["eid"])
        if event is None:
            return _error(404, "notFound", "Not Found")
        event.update(await request.json())
        return web.json_response(event)

    async def _delete(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        event = self.events.get(request.match_info["eid"])
        if event is None:
            return _error(404, "notFound", "Not Found")
        if event.get("status") == "cancelled":
            return _error(410, "deleted", "Resource has been deleted")
        event["status"] = "cancelled"  # Google keeps deleted events as cancelled
        return web.Response(status=204)
