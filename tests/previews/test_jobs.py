"""The preview job's promises, through the website chat and the whole runtime: a restart between
submit and result submits once and delivers once; FAL's webhook (Ed25519, JWKS) makes the job finish
at once and a bad signature gets 401; the daily limit and the monthly budget (alerts at 80 % and
100 %, then a pause); failures tell the customer once and end dead and visible; no FAL key: no feature."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from cheshire.runtime import build_runtime
from core.db.database import Database
from core.db.models import AdminAlert, GroomingDesign, Job
from core.outbox import image_refs
from core.previews import texts
from core.previews.service import GENERATE_JOB, PHOTO_JOB
from tests.fakes.fal import FakeFal, sign_delivery
from tests.previews.conftest import designs, eventually, jobs, outbound, payloads, preview_settings, running
from tests.previews.test_web_chat import SESSION, chat, jpeg, upload


async def photo_and_style(base: str, db: Database, style: str = "teddy_bear") -> None:
    assert (await upload(base, jpeg()))[0] == 202

    async def buttons() -> Any:
        return [m for m in await outbound(db) if f"PV:s:{style}" in payloads(m)]

    await eventually(buttons)
    await chat(base, style, f"PV:s:{style}")


async def previews_sent(db: Database) -> list[Any]:
    return [m for m in await outbound(db) if m.image_urls]


async def said(db: Database, text: str) -> list[Any]:
    return [m for m in await outbound(db) if m.text.startswith(text[:40])]


async def test_restart_between_submit_and_result_submits_once_delivers_once(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    settings = preview_settings(database_url, fal, tmp_path)
    fal.hold()  # FAL keeps working on it
    async with running(settings) as first:
        await photo_and_style(first.base, db)

        async def submitted() -> Any:
            return [d for d in await designs(db) if d.provider_request_id]

        await eventually(submitted)
        assert await previews_sent(db) == []
    # The process is gone; FAL finishes meanwhile; a new process takes the job up again.
    fal.release()
    async with running(settings) as second:
        del second
        await eventually(lambda: previews_sent(db))
        await eventually(lambda: _idle(db))
    assert len(fal.submissions) == 1
    (sent,) = await previews_sent(db)
    assert sent.delivery_status == "sent"
    (design,) = await designs(db)
    assert design.status == "done" and design.provider_request_id == fal.submissions[0].id


async def _idle(db: Database) -> bool:
    async with db.transaction() as session:
        busy = await session.scalars(select(Job).where(Job.status.in_(("queued", "running"))))
        return not list(busy)


async def test_interrupted_submit_is_never_sent_again(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    """A row left "submitting" (killed during the submit, before FAL's answer was stored): FAL may
    have queued it, so it is not submitted again; it ends failed and the job dead."""
    settings = preview_settings(database_url, fal, tmp_path)
    fal.hold()
    async with running(settings) as first:
        await photo_and_style(first.base, db)

        async def submitted() -> Any:
            return [d for d in await designs(db) if d.provider_request_id]

        await eventually(submitted)
    async with db.transaction() as session:  # as if the process died before storing the id
        await session.execute(update(GroomingDesign).values(status="submitting", provider_request_id=None))
    async with running(settings):

        async def dead() -> Any:
            return [j for j in await jobs(db, GENERATE_JOB) if j.status == "dead"]

        await eventually(dead)
    assert len(fal.submissions) == 1
    (design,) = await designs(db)
    assert design.status == "failed" and "not resubmitted" in (design.error or "")


async def test_webhook_finishes_the_job_and_bad_signatures_get_401(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path, unused_tcp_port: int
) -> None:
    public = f"http://127.0.0.1:{unused_tcp_port}"
    fal.polls_before_done = 1_000_000  # polling alone would not finish it; FAL's webhook does
    settings = preview_settings(database_url, fal, tmp_path, public_base_url=public)
    async with running(settings, port=unused_tcp_port) as service:
        url = f"{service.base}/webhook/fal"
        body = json.dumps({"request_id": "req-x", "status": "OK", "payload": {}}).encode()
        async with aiohttp.ClientSession() as http:
            wrong = sign_delivery(Ed25519PrivateKey.generate(), body, request_id="req-x")
            async with http.post(url, data=body, headers=wrong) as response:
                assert response.status == 401
            stale = sign_delivery(fal.key, body, request_id="req-x", timestamp=int(time.time()) - 600)
            async with http.post(url, data=body, headers=stale) as response:
                assert response.status == 401
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                assert response.status == 401
            valid = sign_delivery(fal.key, body, request_id="req-unknown")
            async with http.post(url, data=body, headers=valid) as response:
                assert response.status == 200  # genuine, not ours: acknowledged
        await photo_and_style(service.base, db)

        async def submitted() -> Any:
            return [d for d in await designs(db) if d.provider_request_id]

        (design,) = await eventually(submitted)
        # FAL was told where to call, and read the photo by a signed /media link on our address.
        assert fal.submissions[0].webhook == f"{public}/webhook/fal"
        assert fal.submissions[0].arguments["image_urls"][0].startswith(f"{public}/media/")
        assert fal.inputs_fetched and fal.inputs_fetched[0] > 0
        fal.polls_before_done = 0
        fal._finish(fal.requests[design.provider_request_id])  # FAL finishes and calls back, signed
        (sent,) = await eventually(lambda: previews_sent(db), timeout_s=20)  # well before the 30 s poll
        assert fal.webhooks_sent == [200]
        assert image_refs(sent.image_urls)[0][0].startswith(f"{public}/media/")
    assert len(fal.submissions) == 1


async def test_daily_limit(db: Database, database_url: str, fal: FakeFal, tmp_path: Path) -> None:
    async with running(preview_settings(database_url, fal, tmp_path, preview_daily_limit=1)) as service:
        await photo_and_style(service.base, db)
        await eventually(lambda: previews_sent(db))
        await chat(service.base, "lion", "PV:s:lion_cut")
        limit = texts.DAILY_LIMIT.format(limit=1, groomer="Kimmie")
        await eventually(lambda: said(db, limit))
    assert len(fal.submissions) == 1


async def test_budget_alerts_once_at_80_and_100_percent_then_pauses(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    settings = preview_settings(database_url, fal, tmp_path, preview_monthly_budget_usd=0.1)
    async with running(settings) as service:
        await photo_and_style(service.base, db)  # $0.08 of $0.10: 80 %
        await eventually(lambda: previews_sent(db))
        assert await _alerts(db) == ["budget80"]
        await chat(service.base, "lion", "PV:s:lion_cut")  # $0.16: over
        await eventually(lambda: _nth(db, 2))
        await chat(service.base, "puppy", "PV:s:puppy_cut")  # paused
        await eventually(lambda: said(db, texts.PAUSED.format(groomer="Kimmie")))
        await chat(service.base, "puppy", "PV:s:puppy_cut")
        await eventually(lambda: _count(db, texts.PAUSED.format(groomer="Kimmie"), 2))
    assert sorted(await _alerts(db)) == ["budget100", "budget80"]  # each once
    assert len(fal.submissions) == 2


async def _nth(db: Database, n: int) -> bool:
    return len(await previews_sent(db)) >= n


async def _count(db: Database, text: str, n: int) -> bool:
    return len(await said(db, text)) >= n


async def _alerts(db: Database) -> list[str]:
    async with db.transaction() as session:
        keys = await session.scalars(
            select(AdminAlert.fault_key).where(AdminAlert.fault_key.like("previews:%"))
        )
        return [k.split(":")[1] for k in keys]


async def test_fal_down_customer_told_once_then_retried_to_success(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path
) -> None:
    fal.fail_next("submit", 500, times=2)
    async with running(preview_settings(database_url, fal, tmp_path)) as service:
        await photo_and_style(service.base, db)
        await eventually(lambda: previews_sent(db), timeout_s=60)
    assert len(await said(db, texts.DELAYED)) == 1
    assert len(fal.submissions) == 1
    (design,) = await designs(db)
    assert design.status == "done"


@pytest.mark.parametrize(("status", "configuration"), [(422, False), (401, True)])
async def test_fal_refusal_ends_dead_and_visible(
    db: Database, database_url: str, fal: FakeFal, tmp_path: Path, status: int, configuration: bool
) -> None:
    fal.fail_next("submit", status, detail="scripted refusal")
    async with running(preview_settings(database_url, fal, tmp_path)) as service:
        await photo_and_style(service.base, db)
        failed = texts.FAILED.format(groomer="Kimmie")
        await eventually(lambda: said(db, failed))

        async def dead() -> Any:
            return [j for j in await jobs(db, GENERATE_JOB) if j.status == "dead"]

        (job,) = await eventually(dead)
    assert "scripted refusal" in (job.last_error or "")
    (design,) = await designs(db)
    assert design.status == "failed" and design.cost_usd == 0.0  # never taken: not charged
    assert len(await said(db, failed)) == 1
    async with db.transaction() as session:
        keys = list(await session.scalars(select(AdminAlert.fault_key)))
    assert ("fal:configuration" in keys) is configuration
    assert "job_dead:preview.generate" in keys


async def test_fal_timeout_ends_dead(db: Database, database_url: str, fal: FakeFal, tmp_path: Path) -> None:
    fal.hold()
    async with running(preview_settings(database_url, fal, tmp_path, fal_poll_timeout_s=1.0)) as service:
        await photo_and_style(service.base, db)

        async def dead() -> Any:
            return [j for j in await jobs(db, GENERATE_JOB) if j.status == "dead"]

        await eventually(dead)
    (design,) = await designs(db)
    assert design.status == "failed" and "in time" in (design.error or "")
    assert fal.requests[str(design.provider_request_id)].cancelled  # stopped at FAL: not billed
    assert len(await said(db, texts.FAILED.format(groomer="Kimmie"))) == 1


async def test_no_fal_key_no_feature(db: Database, database_url: str, fal: FakeFal, tmp_path: Path) -> None:
    settings = preview_settings(database_url, fal, tmp_path, fal_ai_key=None)
    assert settings.integrations()["fal"] is False
    rt = build_runtime(settings)
    assert {PHOTO_JOB, GENERATE_JOB}.isdisjoint(rt.registry.kinds)
    assert rt.engine.previews is None and "preview_style" not in rt.engine.toolbox.tools
    await rt.db.dispose()
    async with running(settings) as service:
        form = aiohttp.FormData()
        form.add_field("photo", jpeg(), filename="dog.jpg", content_type="image/jpeg")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.base}/api/chat/{SESSION}/photos", data=form) as response:
                assert response.status == 404
            async with http.post(f"{service.base}/webhook/fal", data=b"{}") as response:
                assert response.status == 404
        await chat(service.base, "hello")
        replies = await eventually(lambda: outbound(db))
        assert not any(p.startswith("PV:") for m in replies for p in payloads(m))
