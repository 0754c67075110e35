"""Serving a fake on a port the OS picks, for every fake HTTP server in tests/fakes/."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(app: web.Application, *, host: str = "127.0.0.1", **runner: Any) -> tuple[web.AppRunner, str]:
    """Start `app` on a free port of `host`; returns its runner (to `cleanup()`) and its base URL."""
    started = web.AppRunner(app, **runner)
    await started.setup()
    await web.TCPSite(started, host, 0).start()
    port = int(started.addresses[0][1])  # the port the OS picked
    return started, f"http://{host}:{port}"
