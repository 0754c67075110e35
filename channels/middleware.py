"""Hardening of the public surface: errors as JSON, CORS, body limits, content types, rate limits.

Installed once per app by `install(app, settings=..., limiter=...)` (the channel `setup_routes`
functions call it). They run inside channels/app.py's request-id middleware, so every log line
here carries the request id and every response (errors too) has an `X-Request-Id` header.

- Errors: handlers raise `ApiError` for a clear 4xx; a database that is unavailable is a 503 with
  Retry-After; anything else unexpected is logged with its traceback and answered as a JSON 500 with
  the request id (never an HTML page or a traceback).
- Body size: a declared Content-Length over `MAX_BODY_BYTES` is refused before reading (413);
  `read_body()` enforces the same limit on chunked bodies.
- Rate limits per client IP: /api/chat (`CHAT_IP_RATE_LIMIT_PER_MINUTE`) and /webhook/*
  (`WEBHOOK_RATE_LIMIT_PER_MINUTE`). On a signed webhook (`signed_webhook`) the per-IP limit guards
  only posts whose signature is missing or wrong; per-sender limits are applied by the handlers,
  which know the sender. The client IP is the TCP peer unless a trusted proxy (`TRUSTED_PROXIES`)
  says otherwise in `CLIENT_IP_HEADER` (channels/client_ip.py).
- Logs: one INFO line per request (method, path, status, ms): no bodies, no query strings (the
  webhook handshake puts the verify token there), no headers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from channels.client_ip import ClientIpResolver, parse_networks
from channels.ratelimit import RateLimiter, build_rate_limiter
from core.db.errors import database_unavailable
from core.logging import request_id_var
from core.settings import Settings

log = logging.getLogger("channels.http")

LIMITER_KEY = web.AppKey("channels_rate_limiter", RateLimiter)
_INSTALLED_KEY = web.AppKey("channels_middlewares_installed", bool)
_SETTINGS_KEY = web.AppKey("channels_settings", Settings)
_RESOLVER_KEY = web.AppKey("channels_client_ip_resolver", ClientIpResolver)
LOG_NOTE_KEY = web.RequestKey("channels_log_note", str)
# Webhook paths whose handlers check a signature (Meta's X-Hub-Signature-256, Telegram's secret token)
# and apply the per-IP limit only to posts that fail it (`limit_unsigned`).
SIGNED_PATHS_KEY = web.AppKey("channels_signed_webhook_paths", set[str])

PUBLIC_PREFIXES = ("/api/", "/webhook/")
CHAT_PREFIX = "/api/"
WEBHOOK_PREFIX = "/webhook/"
PHOTOS_SUFFIX = "/photos"
PHOTO_FORM_SLACK = 64 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A database that cannot be reached (refused, dropped mid-statement, failing over, pool exhausted) is
# answered 503 with this Retry-After, not 500 (core/db/errors.py draws the line).
RETRY_AFTER_S = 5


class ApiError(Exception):
    """A client error rendered as `{"error": message, "field"?: name}` with its status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    if (request_id := request_id_var.get()) is not None:
        body["request_id"] = request_id
    return web.json_response(body, status=status, headers=headers)


def unavailable_response(request: web.Request, exc: BaseException) -> web.Response:
    """Not a bug of the request: the database is down or overloaded. Say so, and when to retry
    (the widget, Meta and Telegram all retry), rather than a 500."""
    log.error("database unavailable in %s %s (%s)", request.method, request.path, type(exc).__name__)
    return error_response(
        503, "temporarily unavailable, retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def note_for_log(request: web.Request, note: str) -> None:
    """Add a short summary to the request's one access-log line (one line per request, not two:
    at webhook rates each log record is a measurable share of the request's cost)."""
    request[LOG_NOTE_KEY] = note


def client_ip(request: web.Request) -> str:
    """The client's address: the TCP peer, or what trusted proxies say it is (channels/client_ip.py)."""
    resolver = request.app[_RESOLVER_KEY]
    forwarded = ",".join(request.headers.getall(resolver.header, ())) if resolver.header else None
    return resolver.resolve(request.remote, forwarded)


def require_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The raw body, refusing (413) more than `max_bytes` even when no Content-Length was sent."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"request body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a few KB of "[[[[..." nest deeper than the decoder's recursion limit.
        raise ApiError(400, "malformed JSON body") from None


async def check_rate(request: web.Request, key: str, per_minute: int) -> None:
    decision = await request.app[LIMITER_KEY].hit(key, per_minute)
    if not decision.allowed:
        raise ApiError(
            429, "too many requests, slow down", headers={"Retry-After": decision.retry_after_header}
        )


def signed_webhook(app: web.Application, path: str) -> None:
    """Declare `path` a webhook that checks its own signature: a POST that passes it is not held to the
    per-IP limit (Meta and Telegram post everyone's events from a few addresses), one that fails it
    is (the handler calls `limit_unsigned`)."""
    if SIGNED_PATHS_KEY not in app:
        app[SIGNED_PATHS_KEY] = set()
    app[SIGNED_PATHS_KEY].add(path)


async def limit_unsigned(request: web.Request) -> None:
    """The per-IP webhook limit, for a POST without a valid signature (429 once over it)."""
    if LIMITER_KEY not in request.app:  # the channel middlewares are not installed: no limits
        return
    settings = request.app[_SETTINGS_KEY]
    await check_rate(request, f"ip:webhook:{client_ip(request)}", settings.webhook_rate_limit_per_minute)


# --- Middlewares ------------------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    started = time.perf_counter()
    public = request.path.startswith(PUBLIC_PREFIXES)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return error_response(exc.status, exc.message, field=exc.field, headers=exc.headers)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        return error_response(413, "request body is too large")
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception as exc:
        if database_unavailable(exc):
            status = 503
            return unavailable_response(request, exc)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal error")
    finally:
        if public:
            log.info(
                "%s %s %s %.1fms%s",
                request.method,
                request.path,
                status,
                (time.perf_counter() - started) * 1000,
                f" ({request[LOG_NOTE_KEY]})" if LOG_NOTE_KEY in request else "",
            )


def cors_middleware(allowed_origins: list[str]) -> Any:
    allowed = frozenset(origin.rstrip("/") for origin in allowed_origins)

    @web.middleware
    async def cors(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith(CHAT_PREFIX):
            return await handler(request)
        origin = request.headers.get("Origin")
        is_allowed = origin is not None and (origin in allowed or "*" in allowed)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not is_allowed:
                return error_response(403, "origin not allowed")
            assert origin is not None
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type, X-Request-Id",
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if is_allowed and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
            response.headers.add("Vary", "Origin")
        return response

    return cors


@web.middleware
async def guard_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Cheap checks before any handler work: declared body size and per-IP rate limits."""
    path = request.path
    if request.method != "POST" or not path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    settings = request.app[_SETTINGS_KEY]
    # Photo uploads (channels/web/photos.py) may be larger: PREVIEW_MAX_BYTES, plus the form's framing.
    limit = (
        settings.preview_max_bytes + PHOTO_FORM_SLACK
        if path.endswith(PHOTOS_SUFFIX)
        else settings.max_body_bytes
    )
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes")
    if path.startswith(WEBHOOK_PREFIX):
        if path not in request.app.get(SIGNED_PATHS_KEY, ()):  # signed ones: limited if the check fails
            await limit_unsigned(request)
    else:
        await check_rate(request, f"ip:chat:{client_ip(request)}", settings.chat_ip_rate_limit_per_minute)
    return await handler(request)


def install(app: web.Application, *, settings: Settings, limiter: RateLimiter | None = None) -> None:
    """Add the channel middlewares once (idempotent: both channel packages call it).

    Without a limiter, one is built from settings: Redis-backed when REDIS_URL is set.
    """
    if app.get(_INSTALLED_KEY):
        return
    limiter = limiter or build_rate_limiter(settings.redis_url)
    app[_INSTALLED_KEY] = True
    app[_SETTINGS_KEY] = settings
    app[LIMITER_KEY] = limiter
    app[_RESOLVER_KEY] = ClientIpResolver(settings.client_ip_header, parse_networks(settings.trusted_proxies))
    # Outermost first: CORS wraps the error renderer, so 4xx/429/500 answers carry CORS headers and
    # the widget can read them; the guard runs last, just before the handler.
    app.middlewares.extend(
        [cors_middleware(settings.cors_allowed_origins), error_middleware, guard_middleware]
    )

    async def _close_limiter(_app: web.Application) -> None:
        await limiter.close()

    app.on_cleanup.append(_close_limiter)
