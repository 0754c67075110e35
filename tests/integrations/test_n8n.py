"""n8n: events reach the salon's workflow signed, at least once, with one id, in order per booking,
never again once accepted; a workflow that is off alerts Kimmie once; the check says what n8n sees.

Everything runs against tests/fakes/n8n.py (n8n's webhook and REST API wire format) through the real
wiring (`wire_integrations`), the real queue and worker, on both databases.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from core import events
from core.db.models import AdminAlert, IntegrationDelivery, utcnow
from core.integrations import n8n as n8n_module
from core.jobs import queue
from core.jobs.stats import queue_stats
from core.metrics import Metrics
from core.types import Channel
from tests.booking.conftest import make_customer
from tests.fakes.n8n import FakeN8n
from tests.integrations.conftest import N8N_SECRET, Process, ProcessFactory, book_by_buttons

ROOT = Path(__file__).resolve().parents[2]
# A Wednesday 09:00 in New York, nine days after the tests' clock (T0): free, reminders ahead.
START = datetime(2027, 3, 10, 9, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
DELIVER = n8n_module.DELIVER_JOB


def n8n_settings(fake: FakeN8n, **more: object) -> dict[str, object]:
    from pydantic import SecretStr

    return {
        "n8n_base_url": fake.base_url,  # type: ignore[attr-defined]
        "n8n_webhook_secret": SecretStr(N8N_SECRET),
        "n8n_api_key": SecretStr("n8n-api-key"),
        **more,
    }


def verifies(headers: dict[str, str], body: bytes) -> bool:
    """What the README's Code node does."""
    expected = "sha256=" + hmac.new(N8N_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Cheshire-Signature"], expected)


async def approve_and_cancel(process: Process, appointment_id: int) -> None:
    service = process.booking()
    async with process.db.transaction() as session:
        await service.approve(session, appointment_id=appointment_id)
    async with process.db.transaction() as session:
        await service.cancel(session, appointment_id=appointment_id, client_id=None)


async def test_a_booking_made_by_buttons_reaches_n8n_signed(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n))
    assert process.wiring.enabled == ("n8n",)
    appointment_id = await book_by_buttons(process)
    await process.drain()

    by_type = {r.json()["type"]: r for r in n8n.received}
    assert set(by_type) == {events.CLIENT_CREATED, events.BOOKING_REQUESTED}
    for received in n8n.received:
        assert received.path == "cheshire"
        assert verifies(received.headers, received.body)
        body = received.json()
        assert set(body) == {"id", "type", "occurred_at", "data"}
        assert received.headers["X-Cheshire-Event-Id"] == body["id"]
        assert received.headers["X-Cheshire-Event-Type"] == body["type"]
        assert N8N_SECRET.encode() not in received.body and b"n8n-api-key" not in received.body
    data = by_type[events.BOOKING_REQUESTED].json()["data"]
    assert data["booking"]["id"] == appointment_id
    assert data["booking"]["service"]["code"] == "full_groom"
    assert data["booking"]["pets"][0]["name"] == "Biscuit"
    assert data["booking"]["start"].endswith("+00:00") and "start_local" in data["booking"]
    assert data["booking"]["price_min_cents"] > 0
    assert data["client"]["name"] == "Alice Liddell"
    assert data["deposit"] is None
    async with process.db.transaction() as session:
        rows = (await session.execute(select(IntegrationDelivery))).scalars().all()
    assert sorted(r.event_id for r in rows) == sorted(r.json()["id"] for r in n8n.received)
    assert ("n8n", "delivered") in process.calls


async def test_a_500_then_a_200_delivers_once_with_the_same_id(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n, n8n_events=["booking.*"]))
    ann = await make_customer(process.db, "ann")
    n8n.fail_next(500)
    async with process.db.transaction() as session:
        await process.booking().request_booking(
            session,
            client_id=ann.client_id,
            service_code="full_groom",
            pet_ids=ann.pet_ids,
            start=START,
            source_channel=Channel.TELEGRAM,
        )
    await process.drain()
    assert len(n8n.posts) == 1 and n8n.received == []
    [job] = await process.jobs(DELIVER)
    assert job.status == "queued" and job.last_error == "RuntimeError: n8n answered 500"
    assert job.run_at > utcnow()  # backing off

    await process.due_now()
    await process.drain()
    await process.due_now()
    await process.drain()  # nothing left to post
    assert len(n8n.posts) == 2 and len(n8n.received) == 1
    first, second = n8n.posts
    assert first.headers["X-Cheshire-Event-Id"] == second.headers["X-Cheshire-Event-Id"]
    assert first.body == second.body
    [job] = await process.jobs(DELIVER)
    assert job.status == "done" and job.attempts == 2


async def test_time_outs_and_connection_errors_are_retried_with_the_same_id(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n, n8n_timeout_s=0.2))
    ann = await make_customer(process.db, "ann")  # client.created
    n8n.fail_next(0, delay_s=1.0)  # n8n takes longer than N8N_TIMEOUT_S
    await process.drain()
    assert n8n.received == []
    [job] = await process.jobs(DELIVER)
    assert job.status == "queued" and "unreachable: ReadTimeout" in (job.last_error or "")
    await process.due_now()
    await process.drain()
    assert [r.json()["data"]["client"]["id"] for r in n8n.received] == [ann.client_id]
    ids = {p.headers["X-Cheshire-Event-Id"] for p in n8n.posts}
    assert len(n8n.posts) == 2 and len(ids) == 1
    assert ("n8n", "retry") in process.calls


async def test_a_crash_after_the_200_before_completing_does_not_post_again(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n))
    await make_customer(process.db, "ann")
    # A worker claims the job, n8n answers 200, the delivery is recorded; the process dies before
    # it marks the job done (its lease, 0 s here, runs out at once).
    async with process.db.bookkeeping() as conn:
        [claimed] = await queue.claim(conn, worker_id="dying", lease_s=0.0)
    handler = process.registry.get(DELIVER)
    assert handler is not None and claimed.kind == DELIVER
    await handler(claimed)
    assert len(n8n.posts) == 1

    await process.drain()  # another worker takes the expired lease over
    assert len(n8n.posts) == 1  # not posted again
    [job] = await process.jobs(DELIVER)
    assert job.status == "done" and job.attempts == 2
    assert ("n8n", "skipped") in process.calls


async def test_events_arrive_in_order_per_booking_even_across_a_retry(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n, n8n_events=["booking.*"]))
    ann = await make_customer(process.db, "ann")
    async with process.db.transaction() as session:
        booking = await process.booking().request_booking(
            session,
            client_id=ann.client_id,
            service_code="full_groom",
            pet_ids=ann.pet_ids,
            start=START,
            source_channel=Channel.TELEGRAM,
        )
    await approve_and_cancel(process, booking.id)
    n8n.fail_next(503)  # the first event fails: the later two wait behind it
    await process.drain()
    assert n8n.received == []
    await process.due_now()
    await process.drain()
    assert [r.json()["type"] for r in n8n.received] == [
        events.BOOKING_REQUESTED,
        events.BOOKING_CONFIRMED,
        events.BOOKING_CANCELLED,
    ]


async def test_an_inactive_workflow_alerts_kimmie_once_and_keeps_retrying_slowly(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    n8n.workflows[0]["active"] = False
    process = await make_process(**n8n_settings(n8n))
    await make_customer(process.db, "ann")
    await make_customer(process.db, "bob")
    await process.drain()
    assert len(n8n.posts) == 2 and n8n.received == []
    jobs = await process.jobs(DELIVER)
    assert all(j.status == "queued" for j in jobs)
    assert all(j.run_at > utcnow() + timedelta(seconds=500) for j in jobs)  # slowly: ~10 min
    async with process.db.transaction() as session:
        [alert] = (await session.execute(select(AdminAlert))).scalars().all()
    assert alert.fault_key == n8n_module.MISSING_FAULT and alert.occurrences == 2
    assert "not active" in alert.message
    assert [j.payload["fault_key"] for j in await process.jobs("notify_admin")] == [alert.fault_key]

    n8n.workflows[0]["active"] = True  # Kimmie turns the workflow back on
    await process.due_now()
    await process.drain()
    assert len(n8n.received) == 2
    async with process.db.transaction() as session:
        assert (await session.get_one(AdminAlert, alert.id)).resolved_at is not None


async def test_a_request_n8n_refuses_for_good_ends_dead_and_is_listed(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n))
    await make_customer(process.db, "ann")
    n8n.fail_next(413)
    await process.drain()
    [job] = await process.jobs(DELIVER)
    assert job.status == "dead" and "413" in (job.last_error or "")
    async with process.db.transaction() as session:
        assert [j.id for j in await queue.dead_jobs(session) if j.kind == DELIVER] == [job.id]


async def test_n8n_events_filters_the_types_sent(make_process: ProcessFactory, n8n: FakeN8n) -> None:
    process = await make_process(**n8n_settings(n8n, n8n_events=["booking.confirmed"]))
    ann = await make_customer(process.db, "ann")
    async with process.db.transaction() as session:
        booking = await process.booking().request_booking(
            session,
            client_id=ann.client_id,
            service_code="full_groom",
            pet_ids=ann.pet_ids,
            start=START,
            source_channel=Channel.TELEGRAM,
        )
    await approve_and_cancel(process, booking.id)
    await process.drain()
    assert [r.json()["type"] for r in n8n.received] == [events.BOOKING_CONFIRMED]
    assert len(await process.jobs(DELIVER)) == 1  # filtered events queue nothing


async def test_without_a_secret_n8n_is_not_wired(make_process: ProcessFactory, n8n: FakeN8n) -> None:
    process = await make_process(n8n_base_url=n8n.base_url)  # type: ignore[attr-defined]
    assert process.wiring.enabled == ()
    assert process.settings.integrations()["n8n"] is False
    await make_customer(process.db, "ann")
    assert await process.jobs(DELIVER) == []


async def test_backlog_and_failures_show_in_metrics_and_in_jobs_dead(
    make_process: ProcessFactory, n8n: FakeN8n, database_url: str, tmp_path: Path
) -> None:
    process = await make_process(**n8n_settings(n8n))
    n8n.workflows[0]["active"] = False  # 404: retried slowly
    await make_customer(process.db, "ann")
    await make_customer(process.db, "bob")
    await process.drain()
    await process.due_now()
    n8n.fail_next(413, times=2)  # refused for good: dead
    await process.drain()
    n8n.workflows[0]["active"] = True
    await make_customer(process.db, "cat")  # waits in the queue (no worker ran)

    metrics = Metrics()
    for integration, outcome in process.calls:
        metrics.integration_call(integration, outcome)
    async with process.db.engine.connect() as conn:
        stats = await queue_stats(conn, now=utcnow())
    text = metrics.render(stats, now=utcnow()).decode()
    assert 'cheshire_jobs{kind="n8n_deliver",status="queued"} 1.0' in text  # the backlog
    assert 'cheshire_jobs{kind="n8n_deliver",status="dead"} 2.0' in text
    assert 'cheshire_integration_calls_total{integration="n8n",outcome="not_found"} 2.0' in text
    assert 'cheshire_integration_calls_total{integration="n8n",outcome="rejected"} 2.0' in text

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.jobs", "dead",
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
             "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert out.count("  n8n_deliver  attempts=") == 2 and "n8n refused event client.created with 413" in out

    await make_customer(process.db, "dan")
    n8n.fail_next(502)
    await process.drain()  # cat's delivered, dan's failed once and waits
    async with process.db.transaction() as session:
        [retrying] = await queue.retrying_jobs(session)
    assert (retrying.kind, retrying.count, retrying.last_error) == (
        DELIVER,
        1,
        "RuntimeError: n8n answered 502",
    )


def test_the_calls_are_counted_in_metrics() -> None:
    metrics = Metrics()
    metrics.integration_call("n8n", "delivered")
    metrics.integration_call("n8n", "not_found")
    text = metrics.render(None, now=utcnow()).decode()
    assert 'cheshire_integration_calls_total{integration="n8n",outcome="delivered"} 1.0' in text
    assert 'cheshire_integration_calls_total{integration="n8n",outcome="not_found"} 1.0' in text


# --- The check ------------------------------------------------------------------------------------


async def test_the_check_says_whether_the_workflow_is_active(
    make_process: ProcessFactory, n8n: FakeN8n
) -> None:
    process = await make_process(**n8n_settings(n8n))
    client = n8n_module.N8nClient(process.settings)
    try:
        n8n.add_workflow("Other", path="elsewhere")
        n8n.page_size = 1  # the workflow list comes in cursor pages
        result = await n8n_module.check(client)
        assert result.ok and "'Salon events' is active" in result.message
        n8n.workflows[0]["active"] = False
        result = await n8n_module.check(client)
        assert not result.ok and "not active" in result.message
        n8n.workflows[0]["nodes"][0]["parameters"]["path"] = "renamed"
        result = await n8n_module.check(client)
        assert not result.ok and "no n8n workflow has a Webhook node on path 'cheshire'" in result.message
        n8n.api_key = "rotated"
        result = await n8n_module.check(client)
        assert not result.ok and "401" in result.message and "N8N_API_KEY refused" in result.message
    finally:
        await client.close()


async def test_python_m_core_integrations_n8n_check(n8n: FakeN8n, tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "N8N_BASE_URL": n8n.base_url,  # type: ignore[attr-defined]
        "N8N_WEBHOOK_SECRET": N8N_SECRET,
        "N8N_API_KEY": "n8n-api-key",
    }

    async def run() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "core.integrations.n8n", "check",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await run()
    assert code == 0 and "is active on" in out and "n8n-api-key" not in out
    n8n.workflows[0]["active"] = False
    code, out = await run()
    assert code == 1 and "not active" in out
