"""The composition root wires n8n and Twenty only when configured, and then lists them at start-up."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from cheshire.runtime import Runtime, _log_integrations, build_runtime
from core.integrations.n8n import DELIVER_JOB
from core.integrations.twenty import SYNC_JOB
from core.settings import Settings


async def close(runtime: Runtime) -> None:
    for hook in reversed(runtime.on_shutdown):
        await hook()
    await runtime.db.dispose()


async def test_unconfigured_means_no_jobs_and_no_route(settings: Settings) -> None:
    runtime = build_runtime(settings)
    try:
        assert {DELIVER_JOB, SYNC_JOB} & runtime.registry.kinds == set()
        assert "/webhook/twenty" not in routes(runtime)
    finally:
        await close(runtime)


def routes(runtime: Runtime) -> set[str]:
    return {r.resource.canonical for r in runtime.app.router.routes() if r.resource is not None}


async def test_configured_they_are_wired_and_listed_enabled(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    tuned = settings.model_copy(
        update={
            "n8n_base_url": "http://127.0.0.1:9",
            "n8n_webhook_secret": SecretStr("s"),
            "twenty_base_url": "http://127.0.0.1:9",
            "twenty_api_key": SecretStr("k"),
            "twenty_webhook_secret": SecretStr("w"),
        }
    )
    runtime = build_runtime(tuned)
    try:
        assert {DELIVER_JOB, SYNC_JOB} <= runtime.registry.kinds
        assert "/webhook/twenty" in routes(runtime)
    finally:
        await close(runtime)
    with caplog.at_level(logging.INFO, logger="cheshire.runtime"):
        _log_integrations(tuned)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("integrations:")]
    enabled = line.split("enabled=")[1].split(" ")[0].split(",")
    assert {"n8n", "twenty"} <= set(enabled)
