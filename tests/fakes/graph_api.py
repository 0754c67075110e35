"""A local fake of Meta's Send API (`POST /{version}/me/messages`), speaking its wire format.

Records every accepted send; failures are scripted per call with `fail_next(...)`, answered with
Meta's error body `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`.

    graph = FakeGraphAPI(token="PAGE_TOKEN")
    base_url = await graph.start()        # http://127.0.0.1:<port>
    graph.fail_next(code=613, status=400)  # the next send is throttled
    graph.fail_next(code=613, after=1)     # the send after next is throttled (part 2 of a reply)
    ...
    graph.sent   # [{"recipient": {"id": ...}, "message": {...}, "messaging_type": ...}, ...]

Profiles (`GET /{version}/{PSID or IGSID}?fields=...`): answers the requested fields of
`graph.profiles[user_id]`; an unknown id gets Meta's (#100) "does not exist" error.

    graph.profiles["1122334455667788"] = {"name": "Alice Liddell", "username": "alice.l"}
    graph.fail_profile_next(code=4, status=429)   # the next profile lookup is throttled
    graph.profile_lookups  # [{"user_id", "fields", "token", "query"}, ...]

A `MESSAGE_TAG` send must name its `tag` (HUMAN_AGENT is the one left), as the Send API insists.

Utility messages (Messenger's appointment updates past the window): `"messaging_type": "UTILITY"`
with `message.template` = {"name", "language": {"code"}, "components": [{"type": "body",
"parameters": [{"type": "text", "text"}...]}, {"type": "buttons", "parameters": [{"type":
"POSTBACK", "payload"}...]}]}. The Page's approved templates and their body parameter counts are
`graph.utility_templates`; a token without the `page_utility_messaging` permission (not in
`graph.utility_tokens`) gets (#10), an unknown template or a wrong parameter count (#100).

    graph.utility_templates["appointment_reminder"] = 3
    graph.utility_sent()   # the template objects of accepted utility messages
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import serve


@dataclass
class ScriptedError:
    code: int
    subcode: int | None = None
    status: int = 400
    message: str = "scripted error"
    retry_after: str | None = None
    skip: int = 0  # let this many calls through first


@dataclass
class FakeGraphAPI:
    tokens: tuple[str, ...] = ("PAGE_TOKEN", "IG_TOKEN")
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    tokens_seen: list[str] = field(default_factory=list)
    _errors: list[ScriptedError] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile_lookups: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)  # uploads by attachment_id
    _profile_errors: list[ScriptedError] = field(default_factory=list)
    utility_templates: dict[str, int] = field(default_factory=dict)
    utility_tokens: tuple[str, ...] = ("PAGE_TOKEN",)

    def fail_next(
        self,
        code: int,
        subcode: int | None = None,
        *,
        status: int = 400,
        times: int = 1,
        retry_after: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer `times` coming sends with this error, after letting `after` sends succeed."""
        self._errors.extend(
            ScriptedError(code, subcode, status, retry_after=retry_after, skip=after if n == 0 else 0)
            for n in range(times)
        )

    def fail_profile_next(
        self, code: int, subcode: int | None = None, *, status: int = 400, times: int = 1
    ) -> None:
        """Answer `times` coming profile lookups with this error."""
        self._profile_errors.extend(ScriptedError(code, subcode, status) for _ in range(times))

    def utility_sent(self) -> list[dict[str, Any]]:
        return [m["message"]["template"] for m in self.sent if m.get("messaging_type") == "UTILITY"]

    def _utility_error(self, token: str, message: dict[str, Any]) -> ScriptedError | None:
        if token not in self.utility_tokens:
            return ScriptedError(
                10,
                None,
                403,
                "(#10) This message is sent outside of allowed window. "
                "The page_utility_messaging permission is required",
            )
        template = message.get("template")
        if not isinstance(template, dict) or "text" in message or "attachment" in message:
            return ScriptedError(100, None, 400, "(#100) param message[template] must be non-empty")
        language = template.get("language")
        if not isinstance(language, dict) or not language.get("code"):
            return ScriptedError(100, None, 400, "(#100) param template[language][code] is required")
        expected = self.utility_templates.get(str(template.get("name")))
        if expected is None:
            return ScriptedError(100, None, 400, f"(#100) Template {template.get('name')!r} does not exist")
        body = [c for c in template.get("components", []) if c.get("type") == "body"]
        given = len(body[0].get("parameters", [])) if body else 0
        if given != expected:
            return ScriptedError(
                100,
                None,
                400,
                f"(#100) Number of parameters ({given}) does not match the expected ({expected})",
            )
        return None

    def texts(self) -> list[str]:
        return [m["message"].get("text", "") for m in self.sent]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{version}/me/messages", self._messages)
        app.router.add_get("/{version}/{user_id}", self._profile)
        return app

    async def start(self) -> str:
        self._runner, base = await serve(self.app())
        return base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _token(request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        return (
            auth.removeprefix("Bearer ")
            if auth.startswith("Bearer ")
            else request.query.get("access_token", "")
        )

    async def _profile(self, request: web.Request) -> web.Response:
        token = self._token(request)
        user_id = request.match_info["user_id"]
        fields = [f for f in request.query.get("fields", "").split(",") if f]
        self.profile_lookups.append(
            {"user_id": user_id, "fields": fields, "token": token, "query": dict(request.query)}
        )
        if token not in self.tokens:
            return self._error(ScriptedError(190, 460, 400, "Error validating access token"))
        if self._profile_errors:
            return self._error(self._profile_errors.pop(0))
        known = self.profiles.get(user_id)
        if known is None:
            missing = f"Unsupported get request. Object with ID '{user_id}' does not exist"
            return self._error(ScriptedError(100, 33, 400, missing))
        return web.json_response({**{f: known[f] for f in fields if f in known}, "id": user_id})

    async def _messages(self, request: web.Request) -> web.Response:
        self.calls += 1
        token = self._token(request)
        self.tokens_seen.append(token)
        if token not in self.tokens:
            return self._error(ScriptedError(190, 460, 400, "Error validating access token"))
        if self._errors and self._errors[0].skip > 0:
            self._errors[0].skip -= 1
        elif self._errors:
            return self._error(self._errors.pop(0))
        body = await self._body(request)
        if body is None:
            return self._error(ScriptedError(100, None, 400, "(#100) Upload attachment failure."))
        if "recipient" not in body or "message" not in body:
            return self._error(ScriptedError(100, None, 400, "(#100) param recipient must be non-empty"))
        if body.get("messaging_type") == "MESSAGE_TAG" and not body.get("tag"):
            return self._error(ScriptedError(100, None, 400, "(#100) param tag must be non-empty"))
        message = body["message"]
        if body.get("messaging_type") == "UTILITY":
            refused = self._utility_error(token, message)
            if refused is not None:
                return self._error(refused)
        text = message.get("text")
        if text is not None and len(text) > 2000:
            return self._error(
                ScriptedError(100, None, 400, "(#100) Length of param message[text] must be <= 2000")
            )
        if len(message.get("quick_replies", [])) > 13:
            return self._error(ScriptedError(100, None, 400, "(#100) param message[quick_replies] too long"))
        payload = (message.get("attachment") or {}).get("payload") or {}
        if "attachment_id" in payload and payload["attachment_id"] not in self.attachments:
            return self._error(ScriptedError(100, None, 400, "(#100) Attachment id not found"))
        self.sent.append(body)
        answer = {"recipient_id": body["recipient"]["id"], "message_id": f"m_out_{next(self._ids)}"}
        if "filedata" in body:
            # An uploaded attachment saved with is_reusable answers its id, for later sends.
            attachment_id = f"att_{next(self._ids)}"
            self.attachments[attachment_id] = body["filedata"]["content"]
            if payload.get("is_reusable"):
                answer["attachment_id"] = attachment_id
        return web.json_response(answer)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any] | None:
        """JSON, or the multipart form of an upload (`recipient`, `message` as JSON strings and the
        file as `filedata`, with its content type); None for a malformed upload."""
        if not request.content_type.startswith("multipart/"):
            body: dict[str, Any] = await request.json()
            return body
        form = await request.post()
        upload = form.get("filedata")
        if not isinstance(upload, web.FileField) or not str(upload.content_type).startswith("image/"):
            return None
        fields: dict[str, Any] = {}
        for key in ("recipient", "message", "messaging_type", "tag"):
            value = form.get(key)
            if isinstance(value, str):
                fields[key] = json.loads(value) if key in ("recipient", "message") else value
        fields["filedata"] = {"content": upload.file.read(), "content_type": upload.content_type}
        return fields

    @staticmethod
    def _error(error: ScriptedError) -> web.Response:
        payload: dict[str, Any] = {
            "message": error.message,
            "type": "OAuthException",
            "code": error.code,
            "fbtrace_id": "AbCdEf123",
        }
        if error.subcode is not None:
            payload["error_subcode"] = error.subcode
        headers = {"Retry-After": error.retry_after} if error.retry_after else None
        return web.json_response({"error": payload}, status=error.status, headers=headers)
