"""n8n: every business event POSTed, signed, to the salon's workflow (the only module importing httpx
for n8n; imported only when N8N_BASE_URL and N8N_WEBHOOK_SECRET are set).

Why a job per event and not a call in the request: n8n has no idempotency and never retries us, and
a workflow that is off answers 404. So an event queues one `n8n_deliver` job in the transaction that
made the change (ordered per subject, so one booking's events arrive in the order they happened), and
the job posts it later:

- body `{"id", "type", "occurred_at", "data"}`; headers `X-Cheshire-Event-Id`, `X-Cheshire-Event-Type`
  and `X-Cheshire-Signature: sha256=<hex HMAC-SHA256(N8N_WEBHOOK_SECRET, raw body)>`;
- 2xx: accepted. It is recorded (`integration_delivery`) before the job completes, and a job run
  again checks the record first, so an accepted event is never posted again;
- 5xx, 408, time-outs, connection errors: retried with the queue's backoff, same id;
- 404 (workflow inactive) or 401/403 (the Webhook node's auth refused us): Kimmie is alerted once,
  and the job keeps retrying every N8N_SLOW_RETRY_S until the workflow is back;
- 429: retried after its Retry-After; any other 4xx cannot succeed by retrying: the job ends dead
  (`python -m core.jobs dead`).

What n8n can still see twice: a post whose 2xx we never got (a time-out after n8n started the
workflow) or a process killed between n8n's 2xx and the record's commit. Both carry the same
`X-Cheshire-Event-Id`: a workflow that must not act twice dedupes on it (docs/INTEGRATIONS.md).

`python -m core.integrations.n8n check` (and start-up, with N8N_API_KEY) asks n8n's REST API whether
a workflow with a Webhook node on N8N_WEBHOOK_PATH exists and is active.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from core.alerts import raise_alert, resolve_alert
from core.db.database import Database
from core.events import Event, FollowUp, FollowUps
from core.integrations import (
    EVENT_PREFIXES,
    OnCall,
    event_facts,
    matches,
    record_delivery,
    undelivered_event,
)
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater, enqueue
from core.jobs.worker import JobRegistry
from core.settings import Settings, SettingsError

log = logging.getLogger(__name__)

N8N = "n8n"
DELIVER_JOB = "n8n_deliver"
# A 404 or a refused auth keeps retrying at this pace for about a week (the queue's attempts).
N8N_SLOW_RETRY_S = 600.0
N8N_MAX_ATTEMPTS = 1000
MISSING_FAULT = "n8n:webhook_missing"
REFUSED_FAULT = "n8n:webhook_refused"
WEBHOOK_NODE = "n8n-nodes-base.webhook"
USER_AGENT = "Cheshire-Events/1"


@job_payload(DELIVER_JOB)
class DeliverPayload(JobPayload):
    event_id: str


# --- The subscriber -------------------------------------------------------------------------------


def follow_up(settings: Settings) -> FollowUp:
    """One `n8n_deliver` job per event N8N_EVENTS lets through, keyed by the event id (an event
    cannot queue twice) and ordered per subject (one booking's events in the order they happened)."""
    patterns = tuple(settings.n8n_events)

    async def start(session: AsyncSession, event: Event) -> None:
        await enqueue(
            session,
            DELIVER_JOB,
            DeliverPayload(event_id=event.id).dump(),
            idempotency_key=f"{DELIVER_JOB}:{event.id}",
            queue_key=f"{DELIVER_JOB}:{event.subject}",
            max_attempts=N8N_MAX_ATTEMPTS,
        )

    return FollowUp(DELIVER_JOB, start, "n8n event", when=lambda event: matches(patterns, event.type))


def subscribe(subscribers: FollowUps, settings: Settings) -> None:
    row = follow_up(settings)
    for prefix in EVENT_PREFIXES:
        subscribers.subscribe(prefix, row)


# --- The wire -------------------------------------------------------------------------------------


def webhook_url(settings: Settings) -> str:
    return f"{settings.n8n_base_url}/webhook/{settings.n8n_webhook_path}"


def sign(body: bytes, secret: str) -> str:
    """The X-Cheshire-Signature value: what the workflow's Code node recomputes (README)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(event: Event, data: dict[str, Any]) -> bytes:
    """The raw body: compact JSON, UTF-8 (the signature covers exactly these bytes)."""
    body = {"id": event.id, "type": event.type, "occurred_at": event.occurred_at.isoformat(), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Posted:
    status: int
    retry_after_s: float | None


class N8nClient:
    """httpx against one n8n: the webhook post and the REST API's workflow list."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if settings.n8n_base_url is None or settings.n8n_webhook_secret is None:
            raise SettingsError("N8N_BASE_URL and N8N_WEBHOOK_SECRET are needed to send events to n8n")
        self.settings = settings
        self.url = webhook_url(settings)
        self._secret = settings.n8n_webhook_secret.get_secret_value()
        self._http = httpx.AsyncClient(
            timeout=settings.n8n_timeout_s, transport=transport, headers={"User-Agent": USER_AGENT}
        )

    async def post(self, event: Event, body: bytes) -> Posted:
        """One attempt. Raises httpx.TransportError (time-out, connection) for the caller's retry."""
        response = await self._http.post(
            self.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Cheshire-Event-Id": event.id,
                "X-Cheshire-Event-Type": event.type,
                "X-Cheshire-Signature": sign(body, self._secret),
            },
        )
        return Posted(response.status_code, retry_after(response.headers.get("Retry-After")))

    async def workflows(self) -> list[dict[str, Any]]:
        """Every workflow, through the REST API's cursor pages (X-N8N-API-KEY)."""
        key = self.settings.n8n_api_key
        if key is None:
            raise SettingsError("N8N_API_KEY is not set: n8n's REST API cannot be asked")
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 250}
            if cursor:
                params["cursor"] = cursor
            response = await self._http.get(
                f"{self.settings.n8n_base_url}/api/v1/workflows",
                params=params,
                headers={"X-N8N-API-KEY": key.get_secret_value(), "Accept": "application/json"},
            )
            response.raise_for_status()
            page = response.json()
            found += [w for w in page.get("data", []) if isinstance(w, dict)]
            cursor = page.get("nextCursor")
            if not cursor:
                return found

    async def close(self) -> None:
        await self._http.aclose()


def retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the queue's backoff instead


# --- The delivery job -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Faults:
    """Whether an n8n alert may be open: a success resolves them once, not on every delivery
    (True at start: one raised before a restart is resolved by the first success after it)."""

    maybe_open: bool = True


def register_jobs(registry: JobRegistry, *, db: Database, client: N8nClient, on_call: OnCall) -> None:
    faults = _Faults()

    async def deliver(job: ClaimedJob) -> None:
        payload = DeliverPayload.load(job.payload)
        async with db.transaction() as session:
            found = await undelivered_event(session, payload.event_id, N8N)
            if found is None:
                raise PermanentJobError(f"no event {payload.event_id!r}")
            event, accepted = found
            if accepted:
                on_call(N8N, "skipped")  # accepted before; this run is a crash's or a lease's replay
                return
            body = envelope(event, await event_facts(session, event))
        try:
            posted = await client.post(event, body)
        except httpx.TransportError as exc:  # time-out, refused, reset: the queue's backoff
            on_call(N8N, "retry")
            raise RuntimeError(f"n8n unreachable: {type(exc).__name__}") from None
        await _answer(db, event, posted, on_call, faults)

    registry.register(DELIVER_JOB, deliver)


async def _answer(db: Database, event: Event, posted: Posted, on_call: OnCall, faults: _Faults) -> None:
    status = posted.status
    if 200 <= status < 300:
        async with db.transaction() as session:
            await record_delivery(session, event.id, N8N, status)
            if faults.maybe_open:
                await resolve_alert(session, MISSING_FAULT)
                await resolve_alert(session, REFUSED_FAULT)
        faults.maybe_open = False
        on_call(N8N, "delivered")
        return
    faults.maybe_open = True
    if status == 404:
        on_call(N8N, "not_found")
        await _alert(db, MISSING_FAULT, "answers 404: the workflow with that Webhook node is not active")
        raise RetryLater(N8N_SLOW_RETRY_S, "n8n webhook 404 (workflow inactive)")
    if status in (401, 403):
        on_call(N8N, "refused")
        await _alert(db, REFUSED_FAULT, f"refused the post ({status}): check the Webhook node's auth")
        raise RetryLater(N8N_SLOW_RETRY_S, f"n8n webhook {status}")
    if status == 429:
        on_call(N8N, "rate_limited")
        raise RetryLater(posted.retry_after_s or 30.0, "n8n 429")
    if status == 408 or status >= 500:
        on_call(N8N, "retry")
        raise RuntimeError(f"n8n answered {status}")  # the queue's backoff, same event id
    on_call(N8N, "rejected")
    raise PermanentJobError(f"n8n refused event {event.type} with {status}")


async def _alert(db: Database, fault_key: str, what: str) -> None:
    async with db.transaction() as session:
        await raise_alert(
            session,
            fault_key,
            f"n8n's webhook {what}. Events wait and are retried every {N8N_SLOW_RETRY_S / 60:.0f} min; "
            "`python -m core.integrations.n8n check` says what n8n sees.",
        )


# --- The check (start-up, CLI) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    message: str


def webhook_workflows(workflows: Sequence[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """The workflows with a Webhook node listening on `path`."""
    wanted = path.strip("/")
    return [
        w
        for w in workflows
        if any(
            isinstance(node, dict)
            and node.get("type") == WEBHOOK_NODE
            and str((node.get("parameters") or {}).get("path", "")).strip("/") == wanted
            for node in w.get("nodes") or ()
        )
    ]


async def check(client: N8nClient) -> CheckResult:
    path = client.settings.n8n_webhook_path
    try:
        workflows = await client.workflows()
    except SettingsError as exc:
        return CheckResult(False, str(exc))
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        hint = " (N8N_API_KEY refused)" if code in (401, 403) else ""
        return CheckResult(False, f"n8n's REST API answered {code}{hint}")
    except (httpx.TransportError, ValueError) as exc:
        return CheckResult(False, f"n8n's REST API could not be read: {type(exc).__name__}")
    listening = webhook_workflows(workflows, path)
    if not listening:
        return CheckResult(False, f"no n8n workflow has a Webhook node on path {path!r}")
    active = [w for w in listening if w.get("active")]
    names = ", ".join(repr(str(w.get("name", w.get("id")))) for w in (active or listening))
    if not active:
        return CheckResult(False, f"workflow {names} listens on {path!r} but is not active: events wait")
    return CheckResult(True, f"workflow {names} is active on {webhook_url(client.settings)}")


class StartupCheck:
    """Start-up says what n8n sees, in the background: a slow n8n never delays start-up, and a
    missing workflow never fails it (events wait in the queue)."""

    def __init__(self, client: N8nClient) -> None:
        self.client = client
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.client.settings.n8n_api_key is None:
            log.info(
                "n8n: events go to %s (N8N_API_KEY not set: the workflow is not checked)", self.client.url
            )
            return
        self._task = asyncio.create_task(self._log(), name="n8n-check")

    async def _log(self) -> None:
        result = await check(self.client)
        (log.info if result.ok else log.warning)("n8n: %s", result.message)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def _run_check(settings: Settings) -> int:
    client = N8nClient(settings)
    try:
        result = await check(client)
    finally:
        await client.close()
    print(result.message)
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.integrations.n8n", description="n8n events.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="is a workflow with the webhook path active? (exit 0 yes, 1 no)")
    parser.parse_args(argv)
    try:
        settings = Settings.load()
        return asyncio.run(_run_check(settings))
    except SettingsError as exc:
        print(f"cheshire: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
