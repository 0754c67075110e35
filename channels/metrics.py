"""GET /metrics: the Prometheus text format, for the operator's scraper only.

Off unless `METRICS_TOKEN` is set: then the route does not exist (404, like any unknown path). With it,
a request must carry `Authorization: Bearer <METRICS_TOKEN>`, else 401. The HTTP counters are fed by
channels/app.py's request-id middleware (`observe`); the job queue is read at scrape time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from core.db.database import Database
from core.db.errors import database_unavailable
from core.db.models import utcnow
from core.jobs.stats import QueueStats, queue_stats
from core.metrics import Metrics
from core.settings import Settings

log = logging.getLogger(__name__)

METRICS_KEY = web.AppKey("metrics", Metrics)
METRICS_PATH = "/metrics"
# 404s and 405s have no route: one label for all of them, never the path a client made up.
UNMATCHED_ROUTE = "unmatched"
# A scrape must not hang on a database that does not answer; Prometheus' own timeout is 10 s.
QUEUE_READ_TIMEOUT_S = 3.0


def observe(request: web.Request, status: int, seconds: float) -> None:
    """Count one answered request under its route template (/api/chat/{session_id}/messages)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED_ROUTE
    request.app[METRICS_KEY].observe_http(route, request.method, status, seconds)


def setup_metrics_route(app: web.Application, *, settings: Settings, db: Database) -> None:
    if settings.metrics_token is None:
        return
    expected = settings.metrics_token.get_secret_value().encode()
    metrics = app[METRICS_KEY]

    async def metrics_view(request: web.Request) -> web.Response:
        if not _bearer_matches(request, expected):
            raise web.HTTPUnauthorized(
                text="metrics need Authorization: Bearer <METRICS_TOKEN>\n",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        now = utcnow()
        body = metrics.render(await _read_queue(db, now), now=now)
        # Plain names and label names only: the 0.0.4 text format, which every Prometheus reads.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    app.router.add_get(METRICS_PATH, metrics_view)


def _bearer_matches(request: web.Request, expected: bytes) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: how long a wrong token took to refuse says nothing about the right one.
    given_bytes = given.strip().encode("utf-8", "backslashreplace")
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, expected)


async def _read_queue(db: Database, now: datetime) -> QueueStats | None:
    """One grouped statement; None when the database does not answer (the scrape still serves the
    process's counters and says cheshire_jobs_scrape_ok 0)."""
    try:
        async with asyncio.timeout(QUEUE_READ_TIMEOUT_S), db.bookkeeping() as conn:
            return await queue_stats(conn, now=now)
    except Exception as exc:
        if not database_unavailable(exc):  # asyncio's TimeoutError is an OSError, among them
            raise
        log.warning("metrics: job queue not readable (%s)", type(exc).__name__)
        return None
