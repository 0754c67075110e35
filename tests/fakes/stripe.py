"""A local fake of Stripe's API, speaking its wire format, for the real stripe SDK to talk to.

- Requests are form-encoded (`metadata[appointment_id]=7&line_items[0][price_data][currency]=usd`):
  parsed into nested dicts/lists as Stripe does; every call is recorded with its headers.
- `Authorization: Bearer <key>` is checked (401 otherwise); `Stripe-Version` and `Idempotency-Key`
  are recorded; a POST repeated with the same key gets the first answer again (`Idempotent-Replayed:
  true`), a key reused with other parameters gets Stripe's 400 `idempotency_error`.
- Errors are `{"error": {"type", "code", "message", "param"}}`; `fail_next(status=402|429|500...)`
  scripts them per call.
- Checkout Sessions: create (30 min – 24 h `expires_at`, `mode=payment`), retrieve, expire;
  `complete(session_id)` is the customer paying (or, with a manual-capture intent, the card held).
  PaymentIntents: capture, cancel. Refunds: create.
- `event(type, obj)` builds an event; `signed(event, secret)` is the body and its `Stripe-Signature`.

    fake = FakeStripe()
    base = await fake.start()          # STRIPE_API_BASE
    ...
    session = fake.complete("cs_test_1")
    raw, header = signed(fake.event("checkout.session.completed", session), WHSEC)
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.local_server import serve

API_KEY = "sk_test_cheshire_0123456789"
_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's bracketed form encoding into nested values ("a[0][b]=1" -> {"a": [{"b": "1"}]})."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head = key.split("[", 1)[0]
        path = [head, *_KEY_PART.findall(key[len(head) :])]
        node: Any = root
        for part, nxt in itertools.pairwise(path):
            child_default: Any = [] if nxt.isdigit() else {}
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(None)
                if node[index] is None:
                    node[index] = child_default
                node = node[index]
            else:
                node = node.setdefault(part, child_default)
        last = path[-1]
        if isinstance(node, list):
            index = int(last)
            while len(node) <= index:
                node.append(None)
            node[index] = value
        else:
            node[last] = value
    return root


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]


@dataclass
class ScriptedError:
    status: int
    type: str
    code: str | None
    message: str
    path_contains: str
    should_retry: bool | None


@dataclass
class FakeStripe:
    api_key: str = API_KEY
    calls: list[Call] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    _errors: list[ScriptedError] = field(default_factory=list)
    _idempotent: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._get_session)
        app.router.add_post("/v1/checkout/sessions/{id}/expire", self._expire_session)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_post("/v1/payment_intents/{id}/capture", self._capture)
        app.router.add_post("/v1/payment_intents/{id}/cancel", self._cancel)
        self._runner, self.base_url = await serve(app, access_log=None)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- scripting --------------------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        *,
        type: str | None = None,
        code: str | None = None,
        message: str = "scripted error",
        path_contains: str = "",
        should_retry: bool | None = None,
    ) -> None:
        default = {402: "card_error", 429: "invalid_request_error", 400: "invalid_request_error"}
        kind = type or default.get(status, "api_error")
        self._errors.append(ScriptedError(status, kind, code, message, path_contains, should_retry))

    def posts(self, path_start: str) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path.startswith(path_start)]

    # --- the customer at Checkout, and events ------------------------------------------------------
    def complete(self, session_id: str) -> dict[str, Any]:
        """The customer pays (or, with a manual-capture intent, the card is held)."""
        session = self.sessions[session_id]
        manual = session["_capture_method"] == "manual"
        intent = self._new_intent(session, "requires_capture" if manual else "succeeded")
        session.update(
            status="complete", payment_status="unpaid" if manual else "paid", payment_intent=intent["id"]
        )
        return self.public(session)

    def expire(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session.update(status="expired", url=None)
        return self.public(session)

    def event(self, type_: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        return {
            "id": event_id or f"evt_test_{next(self._ids)}",
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "type": type_,
            "livemode": False,
            "pending_webhooks": 1,
            "data": {"object": obj},
        }

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    # --- handlers -------------------------------------------------------------------------------------
    async def _guard(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.text()
        params = decode_form(body) if request.method == "POST" else dict(request.query)
        self.calls.append(Call(request.method, request.path, params, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return params, _error(401, "invalid_request_error", None, "Invalid API Key provided")
        for n, scripted in enumerate(self._errors):
            if scripted.path_contains in request.path:
                del self._errors[n]
                headers = {}
                if scripted.should_retry is not None:
                    headers["Stripe-Should-Retry"] = "true" if scripted.should_retry else "false"
                return params, _error(
                    scripted.status, scripted.type, scripted.code, scripted.message, headers=headers
                )
        return params, None

    async def _idempotent_post(self, request: web.Request, handle: Any) -> web.Response:
        params, refused = await self._guard(request)
        if refused is not None:
            return refused
        key = request.headers.get("Idempotency-Key")
        fingerprint = request.path + json.dumps(params, sort_keys=True)
        if key and key in self._idempotent:
            seen, status, text = self._idempotent[key]
            if seen != fingerprint:
                return _error(
                    400,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    "first used with.",
                )
            return web.Response(
                text=text,
                status=status,
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        response: web.Response = await handle(request, params)
        if key and response.status < 500:
            self._idempotent[key] = (fingerprint, response.status, response.text or "")
        return response

    async def _create_session(self, request: web.Request) -> web.Response:
        return await self._idempotent_post(request, self._do_create_session)

    async def _do_create_session(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        del request
        if params.get("mode") != "payment":
            return _error(400, "invalid_request_error", "parameter_invalid", "mode must be payment", "mode")
        now = int(time.time())
        expires = int(params.get("expires_at") or now + 86400)
        if not now + 1800 <= expires <= now + 86400:
            return _error(
                400,
                "invalid_request_error",
                "parameter_invalid",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout "
                "Session creation.",
                "expires_at",
            )
        items = params.get("line_items") or []
        if not items or not params.get("success_url"):
            return _error(
                400, "invalid_request_error", "parameter_missing", "Missing line_items", "line_items"
            )
        price = items[0]["price_data"]
        amount = int(price["unit_amount"]) * int(items[0].get("quantity", 1))
        session_id = f"cs_test_{next(self._ids)}"
        intent_data = params.get("payment_intent_data") or {}
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "currency": price["currency"],
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata") or {},
            "expires_at": expires,
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "success_url": params["success_url"],
            "cancel_url": params.get("cancel_url"),
            "payment_intent": None,
            "_capture_method": intent_data.get("capture_method", "automatic"),
            "_intent_metadata": intent_data.get("metadata") or {},
        }
        self.sessions[session_id] = session
        return web.json_response(self.public(session))

    async def _get_session(self, request: web.Request) -> web.Response:
        _params, refused = await self._guard(request)
        if refused is not None:
            return refused
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return _missing("checkout.session", request.match_info["id"])
        return web.json_response(self.public(session))

    async def _expire_session(self, request: web.Request) -> web.Response:
        async def handle(req: web.Request, params: dict[str, Any]) -> web.Response:
            del params
            session = self.sessions.get(req.match_info["id"])
            if session is None:
                return _missing("checkout.session", req.match_info["id"])
            if session["status"] != "open":
                return _error(
                    400,
                    "invalid_request_error",
                    "checkout_session_not_open" if session["status"] == "complete" else None,
                    "Only Checkout Sessions with a status of `open` can be expired "
                    f"(it is {session['status']}).",
                )
            return web.json_response(self.expire(session["id"]))

        return await self._idempotent_post(request, handle)

    async def _create_refund(self, request: web.Request) -> web.Response:
        async def handle(req: web.Request, params: dict[str, Any]) -> web.Response:
            del req
            intent = self.intents.get(str(params.get("payment_intent")))
            if intent is None:
                return _missing("payment_intent", str(params.get("payment_intent")))
            amount = int(params.get("amount") or intent["amount_received"])
            if intent["status"] != "succeeded" or amount > intent["amount_received"] - intent["_refunded"]:
                return _error(
                    400,
                    "invalid_request_error",
                    "charge_already_refunded",
                    "Charge has already been refunded.",
                )
            intent["_refunded"] += amount
            refund = {
                "id": f"re_test_{next(self._ids)}",
                "object": "refund",
                "amount": amount,
                "payment_intent": intent["id"],
                "status": "succeeded",
            }
            self.refunds[refund["id"]] = refund
            return web.json_response(refund)

        return await self._idempotent_post(request, handle)

    async def _capture(self, request: web.Request) -> web.Response:
        async def handle(req: web.Request, params: dict[str, Any]) -> web.Response:
            del params
            intent = self.intents.get(req.match_info["id"])
            if intent is None:
                return _missing("payment_intent", req.match_info["id"])
            if intent["status"] != "requires_capture":
                return _error(
                    400,
                    "invalid_request_error",
                    "payment_intent_unexpected_state",
                    "This PaymentIntent could not be captured.",
                )
            intent.update(status="succeeded", amount_received=intent["amount"])
            return web.json_response(self.public(intent))

        return await self._idempotent_post(request, handle)

    async def _cancel(self, request: web.Request) -> web.Response:
        async def handle(req: web.Request, params: dict[str, Any]) -> web.Response:
            del params
            intent = self.intents.get(req.match_info["id"])
            if intent is None:
                return _missing("payment_intent", req.match_info["id"])
            if intent["status"] not in ("requires_capture", "requires_payment_method"):
                return _error(
                    400,
                    "invalid_request_error",
                    "payment_intent_unexpected_state",
                    "This PaymentIntent could not be canceled.",
                )
            intent["status"] = "canceled"
            return web.json_response(self.public(intent))

        return await self._idempotent_post(request, handle)

    def _new_intent(self, session: dict[str, Any], status: str) -> dict[str, Any]:
        intent = {
            "id": f"pi_test_{next(self._ids)}",
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_capturable": session["amount_total"] if status == "requires_capture" else 0,
            "amount_received": session["amount_total"] if status == "succeeded" else 0,
            "currency": session["currency"],
            "capture_method": session["_capture_method"],
            "metadata": session["_intent_metadata"],
            "status": status,
            "_refunded": 0,
        }
        self.intents[intent["id"]] = intent
        return intent


def _error(
    status: int,
    type_: str,
    code: str | None,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return web.json_response({"error": error}, status=status, headers=headers)


def _missing(kind: str, object_id: str) -> web.Response:
    return _error(404, "invalid_request_error", "resource_missing", f"No such {kind}: '{object_id}'", "id")


def sign(raw: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed(event: dict[str, Any], secret: str, *, timestamp: int | None = None) -> tuple[bytes, str]:
    raw = json.dumps(event).encode()
    return raw, sign(raw, secret, timestamp=timestamp)
