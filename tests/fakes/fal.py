"""A local fake of FAL's queue API, speaking the wire format fal-client 1.0.3 reads (src:
fal_client/client.py; docs.fal.ai queue and webhooks pages), so the real SDK runs against it.

    POST {base}/{owner}/{alias}[/{path}][?fal_webhook=URL]  → {"request_id","response_url","status_url",
                                                               "cancel_url","status":"IN_QUEUE",...}
    GET  {base}/{owner}/{alias}/requests/{id}/status?logs=  → {"status":"IN_QUEUE","queue_position"} |
                                                               {"status":"IN_PROGRESS","logs":null} |
                                                               {"status":"COMPLETED","logs":null,"metrics"}
    GET  {base}/{owner}/{alias}/requests/{id}               → the model output {"images":[{"url",...}],"seed"}
    PUT  {base}/{owner}/{alias}/requests/{id}/cancel        → {"status":"CANCELLATION_REQUESTED"}
    GET  {base}/files/{name}.jpg                            → a result image (FAL's CDN)
    GET  {base}/.well-known/jwks.json                       → the Ed25519 key deliveries are signed with

Errors are FAL's shape, `{"detail": ..., "error_type"?}` with an `x-fal-request-id` header (so the SDK
does not take them for an ingress error and retry). Scripting: `polls_before_done` (0: finished at
submit), `hold()`/`release()` (stay IN_PROGRESS), `fail_next(stage, status, detail)`, `nsfw`.
Webhooks: with a `fal_webhook` URL, a completed request is POSTed there, signed like FAL signs them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from PIL import Image

from tests.fakes.local_server import serve

USER_ID = "fal-user-1"


def jpeg(color: tuple[int, int, int] = (200, 150, 90), size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def jwk_of(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def sign_delivery(
    key: Ed25519PrivateKey,
    body: bytes,
    *,
    request_id: str,
    user_id: str = USER_ID,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers FAL sends with a webhook delivery."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    message = f"{request_id}\n{user_id}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "Content-Type": "application/json",
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": ts,
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


@dataclass
class Request:
    id: str
    app: str  # "{owner}/{alias}"
    endpoint: str  # the full endpoint id submitted to
    arguments: dict[str, Any]
    webhook: str | None
    polls: int = 0
    cancelled: bool = False
    done: bool = False


@dataclass
class _Failure:
    stage: str  # "submit" | "status" | "result" | "cancel"
    status: int
    detail: Any


@dataclass
class FakeFal:
    polls_before_done: int = 0
    nsfw: bool = False
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    requests: dict[str, Request] = field(default_factory=dict)
    submissions: list[Request] = field(default_factory=list)
    auth_seen: list[str] = field(default_factory=list)
    inputs_fetched: list[int] = field(default_factory=list)  # bytes of each http(s) input image read
    webhooks_sent: list[int] = field(default_factory=list)  # status our webhook answered
    base: str = ""

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._held = False
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- scripting -----------------------------------------------------------------------------
    def fail_next(self, stage: str, status: int, detail: Any = "boom", times: int = 1) -> None:
        self._failures += [_Failure(stage, status, detail) for _ in range(times)]

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        self._held = False

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk_of(self.key)]}

    # --- server --------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/{owner}/{alias}/requests/{id}/status", self._status)
        app.router.add_put("/{owner}/{alias}/requests/{id}/cancel", self._cancel)
        app.router.add_get("/{owner}/{alias}/requests/{id}", self._result)
        app.router.add_post("/{endpoint:.+}", self._submit)
        return app

    async def start(self) -> str:
        self._runner, self.base = await serve(self.app(), access_log=None)
        return self.base + "/"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- handlers ------------------------------------------------------------------------------
    def _error(self, stage: str) -> web.Response | None:
        for n, failure in enumerate(self._failures):
            if failure.stage == stage:
                del self._failures[n]
                return web.json_response(
                    {"detail": failure.detail, "error_type": "scripted"},
                    status=failure.status,
                    headers={"x-fal-request-id": "err"},
                )
        return None

    async def _submit(self, request: web.Request) -> web.Response:
        self.auth_seen.append(request.headers.get("Authorization", ""))
        if not request.headers.get("Authorization", "").startswith("Key "):
            return web.json_response(
                {"detail": "No credentials"}, status=401, headers={"x-fal-request-id": "e"}
            )
        failed = self._error("submit")
        if failed is not None:
            return failed
        endpoint = request.match_info["endpoint"]
        owner, alias = endpoint.split("/")[:2]
        try:
            arguments = await request.json()
        except ValueError:
            return web.json_response(
                {"detail": "invalid JSON"}, status=400, headers={"x-fal-request-id": "e"}
            )
        if not arguments.get("prompt") or not (arguments.get("image_urls") or arguments.get("image_url")):
            detail = [{"loc": ["body", "image_urls"], "msg": "field required", "type": "value_error.missing"}]
            return web.json_response({"detail": detail}, status=422, headers={"x-fal-request-id": "e"})
        for url in arguments.get("image_urls") or [arguments.get("image_url")]:
            await self._read_input(str(url))
        request_id = f"req-{next(self._ids)}"
        entry = Request(request_id, f"{owner}/{alias}", endpoint, arguments, request.query.get("fal_webhook"))
        self.requests[request_id] = entry
        self.submissions.append(entry)
        base = f"{self.base}/{owner}/{alias}/requests/{request_id}"
        if self.polls_before_done == 0 and not self._held:
            self._finish(entry)
        return web.json_response(
            {
                "status": "IN_QUEUE",
                "request_id": request_id,
                "response_url": base,
                "status_url": base + "/status",
                "cancel_url": base + "/cancel",
                "queue_position": 0,
                "gateway_request_id": request_id,
            },
            headers={"x-fal-request-id": request_id},
        )

    async def _read_input(self, url: str) -> None:
        """Like FAL: a data URI is decoded, an http(s) URL fetched (a presigned S3 URL must work)."""
        if url.startswith("data:"):
            self.inputs_fetched.append(len(base64.b64decode(url.split(",", 1)[1])))
            return
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            body = await response.read()
            self.inputs_fetched.append(len(body) if response.status == 200 else -response.status)

    def _finish(self, entry: Request) -> None:
        if entry.done:
            return
        entry.done = True
        if entry.webhook:
            task = asyncio.get_running_loop().create_task(self._deliver(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def output(self, entry: Request) -> dict[str, Any]:
        return {
            "images": [
                {
                    "url": f"{self.base}/files/{entry.id}.jpg",
                    "content_type": "image/jpeg",
                    "file_name": f"{entry.id}.jpg",
                    "width": 64,
                    "height": 48,
                }
            ],
            "seed": int(entry.arguments.get("seed") or 42),
            "has_nsfw_concepts": [self.nsfw],
            "prompt": entry.arguments.get("prompt"),
        }

    async def _deliver(self, entry: Request) -> None:
        assert entry.webhook is not None
        body = json.dumps(
            {
                "request_id": entry.id,
                "gateway_request_id": entry.id,
                "status": "OK",
                "payload": self.output(entry),
            }
        ).encode()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                entry.webhook, data=body, headers=sign_delivery(self.key, body, request_id=entry.id)
            ) as response,
        ):
            self.webhooks_sent.append(response.status)

    def _entry(self, request: web.Request) -> Request | None:
        entry = self.requests.get(request.match_info["id"])
        if entry is None or entry.app != f"{request.match_info['owner']}/{request.match_info['alias']}":
            return None
        return entry

    async def _status(self, request: web.Request) -> web.Response:
        failed = self._error("status")
        if failed is not None:
            return failed
        entry = self._entry(request)
        if entry is None:
            return web.json_response(
                {"detail": "Request not found"}, status=404, headers={"x-fal-request-id": "e"}
            )
        entry.polls += 1
        if not entry.done and not self._held and entry.polls > self.polls_before_done:
            self._finish(entry)
        if entry.done:
            return web.json_response(
                {"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 0.01}, "error": None}
            )
        if entry.polls <= 1:
            return web.json_response({"status": "IN_QUEUE", "queue_position": 0})
        return web.json_response({"status": "IN_PROGRESS", "logs": None})

    async def _result(self, request: web.Request) -> web.Response:
        failed = self._error("result")
        if failed is not None:
            return failed
        entry = self._entry(request)
        if entry is None:
            return web.json_response(
                {"detail": "Request not found"}, status=404, headers={"x-fal-request-id": "e"}
            )
        if not entry.done:
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        return web.json_response(self.output(entry))

    async def _cancel(self, request: web.Request) -> web.Response:
        failed = self._error("cancel")
        if failed is not None:
            return failed
        entry = self._entry(request)
        if entry is None:
            return web.json_response(
                {"detail": "Request not found"}, status=404, headers={"x-fal-request-id": "e"}
            )
        if entry.done:
            return web.json_response(
                {"status": "ALREADY_COMPLETED"}, status=400, headers={"x-fal-request-id": "e"}
            )
        entry.cancelled = True
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"].removesuffix(".jpg")
        if name not in self.requests:
            return web.Response(status=404)
        return web.Response(body=jpeg((90, 160, 210)), content_type="image/jpeg")

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks)
