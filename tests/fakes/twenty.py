"""A local fake of Twenty CRM's REST and metadata API, speaking its wire format.

- `GET /rest/{plural}?filter=...&limit=` answers `{"data": {plural: [...]}, "pageInfo", "totalCount"}`;
  the filter grammar understood: `field.sub[eq]:"value"` clauses joined by commas (AND), `or(...)`.
- `POST /rest/{plural}` answers `{"data": {"create<Singular>": record}}`; `PATCH /rest/{plural}/{id}`
  `{"data": {"update<Singular>": record}}` (404 for an unknown id, as Twenty does).
- `GET /rest/metadata/objects`, `POST /rest/metadata/objects`, `POST /rest/metadata/fields`.
- `Authorization: Bearer <api_key>` or 401; scripted 429s (`rate_limit_next`), with or without
  `Retry-After`; a custom object's REST path answers 400 until it exists.

    twenty = FakeTwenty(api_key="KEY")
    base_url = await twenty.start()
    twenty.rate_limit_next(retry_after="1")
    twenty.records["people"]   # {id: record}
    twenty.calls               # [(method, path), ...]
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import serve

STANDARD = ("people", "notes", "noteTargets", "tasks", "taskTargets", "companies")
SINGULAR = {"people": "person", "companies": "company"}
_CLAUSE = re.compile(r"^([\w.]+)\[(\w+)\]:(.*)$")


def singular(plural: str) -> str:
    return SINGULAR.get(plural, plural[:-1])


@dataclass
class FakeTwenty:
    api_key: str = "twenty-api-key"
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _limited: list[str | None] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        for plural in STANDARD:
            self._add_object(singular(plural), plural, custom=False)

    def _add_object(self, name_singular: str, plural: str, *, custom: bool) -> dict[str, Any]:
        obj = {
            "id": str(uuid.uuid4()),
            "nameSingular": name_singular,
            "namePlural": plural,
            "labelSingular": name_singular.title(),
            "labelPlural": plural.title(),
            "isCustom": custom,
            "isActive": True,
            "fields": [{"id": str(uuid.uuid4()), "name": "name", "type": "TEXT", "label": "Name"}],
        }
        self.objects[plural] = obj
        self.records.setdefault(plural, {})
        return obj

    def install_custom_objects(self) -> None:
        """The workspace as `python -m core.integrations.twenty setup` leaves it."""
        for name in ("pet", "appointment"):
            self._add_object(name, f"{name}s", custom=True)

    def rate_limit_next(self, *, retry_after: str | None = "1", times: int = 1) -> None:
        self._limited.extend([retry_after] * times)

    def writes(self, plural: str | None = None) -> list[tuple[str, str]]:
        return [
            (m, p)
            for m, p in self.calls
            if m in ("POST", "PATCH") and (plural is None or p.split("/")[2] == plural)
        ]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/rest/metadata/objects", self._list_objects)
        app.router.add_post("/rest/metadata/objects", self._create_object)
        app.router.add_post("/rest/metadata/fields", self._create_field)
        app.router.add_get("/rest/{plural}", self._find)
        app.router.add_post("/rest/{plural}", self._create)
        app.router.add_patch("/rest/{plural}/{id}", self._update)
        return app

    async def start(self) -> str:
        self._runner, base = await serve(self.app())
        return base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _error(status: int, message: str, error: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"statusCode": status, "messages": [message], "error": error}, status=status, headers=headers
        )

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Token invalid.", "UNAUTHENTICATED")
        if self._limited:
            wait = self._limited.pop(0)
            headers = {"Retry-After": wait} if wait is not None else None
            return self._error(429, "Limit reached (100 tokens per 60000 ms)", "Too Many Requests", headers)
        plural = request.match_info.get("plural")
        if plural is not None and plural not in self.objects:
            return self._error(400, f"Object {plural} doesn't exist", "BadRequestException")
        return await handler(request)

    # --- REST ---
    async def _find(self, request: web.Request) -> web.Response:
        plural = request.match_info["plural"]
        rows = list(self.records[plural].values())
        expression = request.query.get("filter")
        if expression:
            try:
                rows = [r for r in rows if _matches(r, expression)]
            except ValueError as exc:
                return self._error(400, str(exc), "BadRequestException")
        rows = rows[: int(request.query.get("limit", "60"))]
        return web.json_response(
            {
                "data": {plural: rows},
                "pageInfo": {"hasNextPage": False, "startCursor": None, "endCursor": None},
                "totalCount": len(rows),
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        plural = request.match_info["plural"]
        body = await request.json()
        record = {"id": str(uuid.uuid4()), "createdAt": "2027-03-01T14:00:00.000Z", **body}
        self.records[plural][record["id"]] = record
        return web.json_response({"data": {f"create{_cap(singular(plural))}": record}}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        plural, record_id = request.match_info["plural"], request.match_info["id"]
        record = self.records[plural].get(record_id)
        if record is None:
            return self._error(404, f"Record {record_id} not found", "NotFoundException")
        record.update(await request.json())
        return web.json_response({"data": {f"update{_cap(singular(plural))}": record}})

    # --- Metadata ---
    async def _list_objects(self, request: web.Request) -> web.Response:
        objects = list(self.objects.values())
        return web.json_response(
            {"data": {"objects": objects}, "pageInfo": {"hasNextPage": False}, "totalCount": len(objects)}
        )

    async def _create_object(self, request: web.Request) -> web.Response:
        body = await request.json()
        missing = [
            k for k in ("nameSingular", "namePlural", "labelSingular", "labelPlural") if not body.get(k)
        ]
        if missing:
            return self._error(400, f"{missing[0]} is required", "BadRequestException")
        if body["namePlural"] in self.objects:
            return self._error(400, "Object already exists", "BadRequestException")
        obj = self._add_object(body["nameSingular"], body["namePlural"], custom=True)
        return web.json_response({"data": {"createOneObject": obj}}, status=201)

    async def _create_field(self, request: web.Request) -> web.Response:
        body = await request.json()
        target = next((o for o in self.objects.values() if o["id"] == body.get("objectMetadataId")), None)
        if target is None or not body.get("name") or not body.get("type"):
            return self._error(400, "objectMetadataId, name and type are required", "BadRequestException")
        if any(f["name"] == body["name"] for f in target["fields"]):
            return self._error(400, f"Field {body['name']} already exists", "BadRequestException")
        if body["type"] == "RELATION":
            payload = body.get("relationCreationPayload") or {}
            if not any(o["id"] == payload.get("targetObjectMetadataId") for o in self.objects.values()):
                return self._error(400, "relation target object not found", "BadRequestException")
        created = {"id": str(uuid.uuid4()), **{k: body[k] for k in ("name", "type", "label") if k in body}}
        target["fields"].append(created)
        return web.json_response({"data": {"createOneField": created}}, status=201)


def _cap(name: str) -> str:
    return name[:1].upper() + name[1:]


def _matches(record: dict[str, Any], expression: str) -> bool:
    expression = expression.strip()
    if expression.startswith("or(") and expression.endswith(")"):
        return any(_matches(record, part) for part in _split(expression[3:-1]))
    if expression.startswith("and(") and expression.endswith(")"):
        return all(_matches(record, part) for part in _split(expression[4:-1]))
    parts = _split(expression)
    if len(parts) > 1:
        return all(_matches(record, part) for part in parts)
    clause = _CLAUSE.match(expression)
    if clause is None:
        raise ValueError(f"bad filter {expression!r}")
    path, comparator, raw = clause.groups()
    value: Any = record
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    wanted = raw[1:-1] if raw.startswith('"') and raw.endswith('"') else raw
    if comparator == "eq":
        return bool(value == wanted)
    if comparator == "ilike":
        return isinstance(value, str) and value.lower() == wanted.strip("%").lower()
    raise ValueError(f"comparator {comparator!r} not faked")


def _split(text: str) -> list[str]:
    """Top-level comma split (commas inside quotes or parentheses stay)."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p]
