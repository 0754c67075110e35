"""The aiohttp application factory: the one HTTP server of the process.

`create_app(settings, db)` returns an app with `GET /healthz`, `GET /metrics` (with `METRICS_TOKEN`),
the request-id middleware, which also counts every request for /metrics, and the 503 answer to an
unavailable database on every route. Channel
packages add their routes with their own `setup_routes(app, ...deps)`, called from the composition
root (cheshire/runtime.py) before the app starts. State lives under typed `web.AppKey`s, never string keys.
"""

from __future__ import annotations

import gc
import itertools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from channels.metrics import METRICS_KEY, setup_metrics_route
from channels.metrics import observe as observe_request
from channels.middleware import unavailable_response
from core.db.database import Database
from core.db.errors import database_unavailable
from core.logging import request_id_var
from core.metrics import Metrics
from core.settings import Settings

log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
DB_KEY = web.AppKey("db", Database)

REQUEST_ID_HEADER = "X-Request-Id"
# Accept a caller's id only when it is short and plain, so it cannot forge log lines.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# A random per-process prefix and a counter: unique across restarts and processes without a system
# call per request (uuid4 reads the kernel's random pool every time).
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:8]
_request_counter = itertools.count(1)


def _next_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):08x}"


@web.middleware
async def request_id_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if given and _SAFE_REQUEST_ID.match(given) else _next_request_id()
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500  # what aiohttp answers for an exception that is not an HTTPException
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        request_id_var.reset(token)
        observe_request(request, status, time.perf_counter() - started)  # GET /metrics (~2 µs)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def database_unavailable_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every route, not only those behind the channel middlewares (the Telegram webhook, OAuth,
    /metrics): a database that is down, failing over or out of pool connections is a 503 with
    Retry-After, never a 500 (a 5xx other than 503 reads as our bug; Telegram and Meta retry both)."""
    try:
        return await handler(request)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        return unavailable_response(request, exc)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, 503 when it does not (load balancers and systemd watch this)."""
    if await request.app[DB_KEY].ping():
        return web.json_response({"status": "ok", "db": "ok"})
    return web.json_response({"status": "unavailable", "db": "down"}, status=503)


def freeze_startup_heap() -> None:
    """Take what start-up built out of the garbage collector's sight (the process calls it once,
    when it has started: cheshire/runtime.py).

    By the time the server starts, modules, ORM metadata, compiled statements and wiring are in place
    and live as long as the process. Left tracked, every full collection rescans them: ~45 ms with the
    event loop stopped, a latency spike every few seconds at webhook rates (bench/bench_ingest.py,
    p99 at 1,000 req/s). Collect once, then freeze them (`gc.freeze`): later full collections scan only
    what requests create.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, db: Database, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, database_unavailable_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS_KEY] = settings
    app[DB_KEY] = db
    app[METRICS_KEY] = metrics or Metrics()
    app.router.add_get("/healthz", healthz)
    setup_metrics_route(app, settings=settings, db=db)  # GET /metrics, only with METRICS_TOKEN
    return app
