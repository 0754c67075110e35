"""GET /metrics as an operator's Prometheus sees it: off without METRICS_TOKEN, 401 without the right
bearer token, and a scrape that parses, counts requests under route templates and shows the job queue
as the rows in the database (both databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from channels.app import create_app
from channels.meta import views as meta_views
from channels.ratelimit import InMemoryRateLimiter
from channels.web import views as web_views
from cheshire.runtime import build_runtime
from core.db.database import Database
from core.db.models import Job, utcnow
from core.jobs.queue import ClaimedJob, PermanentJobError, enqueue
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.metrics import Metrics
from core.settings import Settings
from tests.channels.conftest import make_settings
from tests.support import job_kinds

TOKEN = "scrape-token-5f1c2a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SESSION = "b1946ac9-2f0e-4f4e-9f0a-5d6c8e9a1b2c"


@pytest.fixture
def metrics_settings(database_url: str) -> Settings:
    return make_settings(database_url, metrics_token=TOKEN)


def full_app(db: Database, settings: Settings, metrics: Metrics | None = None) -> Any:
    """The app as production mounts it: health, metrics, Meta webhooks, website chat."""
    app = create_app(settings, db, metrics)
    meta_views.setup_routes(app, db=db, settings=settings, limiter=InMemoryRateLimiter())
    web_views.setup_routes(app, db=db, settings=settings)
    return app


async def scrape(client: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The scrape, through prometheus_client's own parser: sample name -> [(labels, value)]."""
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


# --- access -----------------------------------------------------------------------------------------


async def test_metrics_is_off_without_a_token(aiohttp_client: Any, db: Database, database_url: str) -> None:
    client = await aiohttp_client(full_app(db, make_settings(database_url)))
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/metrics", headers=AUTH)).status == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ünïcode"],
)
async def test_metrics_without_the_right_bearer_token_is_401(
    aiohttp_client: Any, db: Database, metrics_settings: Settings, authorization: str | None
) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/metrics", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "cheshire_" not in await response.text()


async def test_the_scheme_is_case_insensitive(
    aiohttp_client: Any, db: Database, metrics_settings: Settings
) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    assert (await client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})).status == 200


# --- the job queue ------------------------------------------------------------------------------------


# Real kinds get payloads their models accept; the invented ones are tests/support/job_kinds.py's.
PAYLOADS: dict[str, dict[str, Any]] = {
    "deliver_message": {"message_id": 1},
    "process_message": {"message_id": 1, "conversation_id": 1},
}


async def add_job(db: Database, kind: str, status: str, *, run_at_ago_s: float = 0.0) -> int:
    payload = PAYLOADS.get(kind) or job_kinds.Numbered(n=1).dump()
    async with db.transaction() as session:
        job_id = await enqueue(session, kind, payload, run_at=utcnow() - timedelta(seconds=run_at_ago_s))
        assert job_id is not None
        if status != "queued":
            await session.execute(update(Job).where(Job.id == job_id).values(status=status))
    return job_id


async def test_queue_gauges_match_the_rows(
    aiohttp_client: Any, db: Database, metrics_settings: Settings
) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    empty = await scrape(client)
    assert value(empty, "cheshire_jobs_scrape_ok") == 1
    assert value(empty, "cheshire_jobs_dead") == 0
    assert value(empty, "cheshire_jobs_oldest_due_age_seconds") == 0
    assert "cheshire_jobs" not in empty

    await add_job(db, "deliver_message", "queued", run_at_ago_s=600)
    await add_job(db, "deliver_message", "queued", run_at_ago_s=5)
    await add_job(db, "deliver_message", "running")
    await add_job(db, "send_reminder", "queued", run_at_ago_s=-3600)  # due in an hour: waits, not late
    await add_job(db, "process_message", "dead")
    await add_job(db, "process_message", "done")  # history: not reported
    await add_job(db, "process_message", "cancelled")

    samples = await scrape(client)
    jobs = {(labels["kind"], labels["status"]): v for labels, v in samples["cheshire_jobs"]}
    assert jobs == {
        ("deliver_message", "queued"): 2,
        ("deliver_message", "running"): 1,
        ("send_reminder", "queued"): 1,
        ("process_message", "dead"): 1,
    }
    assert value(samples, "cheshire_jobs_dead") == 1
    # The oldest due job waited ten minutes (the one due in an hour does not count).
    assert 600 <= value(samples, "cheshire_jobs_oldest_due_age_seconds") < 3600


async def test_only_future_jobs_are_not_late(
    aiohttp_client: Any, db: Database, metrics_settings: Settings
) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    await add_job(db, "send_reminder", "queued", run_at_ago_s=-3600)
    samples = await scrape(client)
    assert value(samples, "cheshire_jobs", kind="send_reminder", status="queued") == 1
    assert value(samples, "cheshire_jobs_oldest_due_age_seconds") == 0


async def test_a_job_that_dies_in_the_worker_is_counted_and_shows_in_the_queue(
    aiohttp_client: Any, db: Database, metrics_settings: Settings
) -> None:
    metrics = Metrics()
    registry = JobRegistry()

    async def ok(job: ClaimedJob) -> None:
        return None

    async def broken(job: ClaimedJob) -> None:
        raise PermanentJobError("the customer deleted their account")

    async def flaky(job: ClaimedJob) -> None:
        raise RuntimeError("graph api 500")

    registry.register("ok_job", ok)
    registry.register("broken_job", broken)
    registry.register("flaky_job", flaky)
    worker = Worker(db, registry, WorkerConfig(concurrency=1, batch=10), on_outcome=metrics.job_outcome)
    for kind in ("ok_job", "ok_job", "broken_job", "flaky_job"):
        await add_job(db, kind, "queued", run_at_ago_s=1)
    assert await worker.run_once() == 4

    client = await aiohttp_client(full_app(db, metrics_settings, metrics))
    samples = await scrape(client)
    processed = "cheshire_jobs_processed_total"
    assert value(samples, processed, kind="ok_job", outcome="completed") == 2
    assert value(samples, processed, kind="broken_job", outcome="dead") == 1
    assert value(samples, processed, kind="flaky_job", outcome="failed") == 1  # retried later, not dead
    assert value(samples, "cheshire_jobs", kind="broken_job", status="dead") == 1
    assert value(samples, "cheshire_jobs", kind="flaky_job", status="queued") == 1
    assert value(samples, "cheshire_jobs_dead") == 1


async def test_an_unreachable_database_still_serves_the_counters(
    aiohttp_client: Any, metrics_settings: Settings
) -> None:
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:1/cheshire")  # nothing listens there
    try:
        client = await aiohttp_client(full_app(unreachable, metrics_settings))
        samples = await scrape(client)
    finally:
        await unreachable.dispose()
    assert value(samples, "cheshire_jobs_scrape_ok") == 0
    assert "cheshire_jobs_dead" not in samples
    assert "process_start_time_seconds" in samples


# --- HTTP ---------------------------------------------------------------------------------------------


async def test_http_counters_use_route_templates(
    aiohttp_client: Any, db: Database, metrics_settings: Settings
) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    assert (await client.get(f"/api/chat/{SESSION}/messages", params={"after": "abc"})).status == 400
    assert (await client.get("/customers/12345/secret-path")).status == 404
    assert (await client.post("/webhook/facebook", data=b"{}")).status in {400, 401, 403, 415}
    await client.get("/static/chat/widget.js")

    response = await client.get("/metrics", headers=AUTH)
    text = await response.text()
    # No raw path, id or session id reaches a label.
    for leaked in (SESSION, "12345", "secret-path", "widget.js", "abc"):
        assert leaked not in text
    after = await scrape(client)

    def moved(**labels: str) -> float:
        name = "cheshire_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(route="/healthz", method="GET", status="2xx") == 3
    assert moved(route="/api/chat/{session_id}/messages", method="GET", status="4xx") == 1
    assert moved(route="unmatched", method="GET", status="4xx") == 1
    assert moved(route="/webhook/facebook", method="POST", status="4xx") == 1
    assert moved(route="/static/chat", method="GET") == 1
    assert moved(route="/metrics", method="GET", status="2xx") == 2  # the first scrape and the text one
    duration = "cheshire_http_request_duration_seconds_count"
    assert (
        value(after, duration, route="/healthz", method="GET")
        - value(before, duration, route="/healthz", method="GET")
        == 3
    )
    assert value(after, "cheshire_http_request_duration_seconds_bucket", route="/healthz", le="+Inf") >= 3


async def test_refused_scrapes_are_counted_too(
    aiohttp_client: Any, db: Database, metrics_settings: Settings
) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    assert (await client.get("/metrics")).status == 401
    samples = await scrape(client)
    assert value(samples, "cheshire_http_requests_total", route="/metrics", method="GET", status="4xx") == 1


async def test_no_secret_in_the_scrape(aiohttp_client: Any, db: Database, metrics_settings: Settings) -> None:
    client = await aiohttp_client(full_app(db, metrics_settings))
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert TOKEN not in text
    assert "test-app-secret" not in text


# --- the process as cheshire/runtime.py builds it -----------------------------------------------------------


@pytest.fixture
async def runtime_client(aiohttp_client: Any, db: Database, metrics_settings: Settings) -> AsyncIterator[Any]:
    rt = build_runtime(metrics_settings)
    try:
        yield await aiohttp_client(rt.app), rt
    finally:
        await rt.db.dispose()


async def test_the_runtime_wires_the_worker_into_the_scrape(runtime_client: Any) -> None:
    client, rt = runtime_client

    async def note(job: ClaimedJob) -> None:
        return None

    rt.registry.register("metrics_note", note)
    await add_job(rt.db, "metrics_note", "queued", run_at_ago_s=1)
    assert await rt.worker.run_once() == 1
    samples = await scrape(client)
    assert value(samples, "cheshire_jobs_processed_total", kind="metrics_note", outcome="completed") == 1
    assert value(samples, "cheshire_jobs_scrape_ok") == 1
