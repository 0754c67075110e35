"""A local fake of n8n: production webhooks (`POST /webhook/{path}`) and the public REST API's
workflow list (`GET /api/v1/workflows`, `X-N8N-API-KEY`), speaking n8n's wire format.

A webhook is registered only while its workflow is active, as in n8n: an inactive or unknown path
answers 404 with n8n's body. "Respond: Immediately" answers 200 `{"message": "Workflow was started"}`.
Failures are scripted per post:

    n8n = FakeN8n(api_key="KEY")
    n8n.add_workflow("Salon events", path="cheshire", active=True)
    base_url = await n8n.start()
    n8n.fail_next(500)            # the next post gets a 500, then they succeed
    n8n.fail_next(0, delay_s=2)   # the next post hangs 2 s, then succeeds (a client time-out)
    ...
    n8n.received  # [Received(path, headers, body), ...] accepted posts only
    n8n.posts     # every post, accepted or not
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import serve

WEBHOOK_NODE = "n8n-nodes-base.webhook"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    status: int  # 0: the normal answer (after `delay_s`)
    delay_s: float = 0.0


@dataclass
class FakeN8n:
    api_key: str = "n8n-api-key"
    workflows: list[dict[str, Any]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    posts: list[Received] = field(default_factory=list)
    page_size: int = 0  # >0: the REST API pages its answer (nextCursor), whatever `limit` says
    _script: list[Scripted] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    def add_workflow(self, name: str, *, path: str, active: bool = True) -> dict[str, Any]:
        workflow = {
            "id": f"wf{next(self._ids)}",
            "name": name,
            "active": active,
            "createdAt": "2026-11-01T10:00:00.000Z",
            "updatedAt": "2026-11-01T10:00:00.000Z",
            "nodes": [
                {
                    "id": "a1",
                    "name": "Webhook",
                    "type": WEBHOOK_NODE,
                    "typeVersion": 2,
                    "position": [0, 0],
                    "parameters": {"httpMethod": "POST", "path": path, "options": {}},
                    "webhookId": "b7e1",
                },
                {"id": "a2", "name": "Code", "type": "n8n-nodes-base.code", "parameters": {}},
            ],
            "connections": {},
            "settings": {},
            "tags": [],
        }
        self.workflows.append(workflow)
        return workflow

    def fail_next(self, status: int, *, times: int = 1, delay_s: float = 0.0) -> None:
        self._script.extend(Scripted(status, delay_s) for _ in range(times))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhook/{path:.+}", self._webhook)
        app.router.add_get("/api/v1/workflows", self._list)
        return app

    async def start(self) -> str:
        self._runner, base = await serve(self.app())
        return base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _active(self, path: str) -> bool:
        for workflow in self.workflows:
            for node in workflow["nodes"]:
                if node["type"] == WEBHOOK_NODE and node["parameters"]["path"] == path and workflow["active"]:
                    return True
        return False

    async def _webhook(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        seen = Received(path, dict(request.headers), await request.read())
        self.posts.append(seen)
        scripted = self._script.pop(0) if self._script else Scripted(0)
        if scripted.delay_s:
            await asyncio.sleep(scripted.delay_s)
        if scripted.status:
            return web.json_response({"message": "Error in workflow"}, status=scripted.status)
        if not self._active(path):
            return web.json_response(
                {
                    "code": 404,
                    "message": f'The requested webhook "POST {path}" is not registered.',
                    "hint": "The workflow must be active for a production URL to run successfully.",
                },
                status=404,
            )
        self.received.append(seen)
        return web.json_response({"message": "Workflow was started"})

    async def _list(self, request: web.Request) -> web.Response:
        if request.headers.get("X-N8N-API-KEY") != self.api_key:
            return web.json_response({"message": "unauthorized"}, status=401)
        rows = self.workflows
        active = request.query.get("active")
        if active is not None:
            rows = [w for w in rows if w["active"] == (active == "true")]
        size = self.page_size or int(request.query.get("limit", "100"))
        start = int(request.query.get("cursor", "0") or 0)
        page = rows[start : start + size]
        more = start + size < len(rows)
        return web.json_response({"data": page, "nextCursor": str(start + size) if more else None})
