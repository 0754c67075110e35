"""Fault bench: signed Meta webhook events into the real service while it is killed and its database cut.

    .venv/bin/python bench/bench_faults.py [--events 1000] [--concurrency 16] [--redelivered 0.1]
                                           [--kills 2] [--cut-s 4] [--drain-s 300] [--seed 15]
                                           [--pg postgresql://postgres@127.0.0.1:5432/postgres]

What runs (everything local, nothing reaches the internet):
- the service: `python -m bot` (tests/support/service.py) on a fresh PostgreSQL database, reached through
  a TCP proxy this bench controls (tests/support/tcp_proxy.py); Messenger configured against the fake
  Graph API (tests/fakes/graph_api.py, META_GRAPH_API_BASE), Claude against the fake LLM server
  (tests/fakes/llm_server.py, ANTHROPIC_BASE_URL), so every message gets a model-written reply;
- the load: `--events` distinct Messenger messages, one per sender (so one answer is exactly one Send
  API call and a doubled answer shows), signed like Meta signs them, `--concurrency` POSTs in flight,
  `--redelivered` of them sent a second time later (Meta redelivers). Like Meta, a POST that is not
  answered 2xx (or finds no server) is sent again after a back-off, until the load deadline;
- the faults, at fixed points of the load: SIGKILL at 20 % (restarted at once), the database cut for
  `--cut-s` seconds at 50 %, SIGKILL again at 80 % (restarted at once); `--kills 0` for a calm run.

Then it waits (bounded by `--drain-s`) until every stored message is answered and no job is queued or
running, and prints: stored, answered, replies sent, lost (acknowledged but not stored, or stored and
never answered), doubled (senders answered more than once), non-2xx by code, time to drain (from the
last acknowledged POST), and the worst reply latency (first POST of a message → its reply at the Graph
API). Every loop has a deadline; a deadline that passes is reported, not waited out. `--reference`
first runs the same load without faults and prints it beside (drain time and latency in calm weather).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg
from aiohttp import web

from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.llm_server import FakeLLMServer
from tests.support.service import ServiceProcess, meta_event
from tests.support.tcp_proxy import TcpProxy

SECRET = "bench-faults-app-secret"
TEXT = "Hi! Anything on Saturday for a doodle?"
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # Meta backs off further; shorter keeps the bench short


class TimedGraph(FakeGraphAPI):
    """The fake Graph API, also noting when each recipient's first reply arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.first_reply_at: dict[str, float] = {}

    async def _messages(self, request: web.Request) -> web.Response:
        response = await super()._messages(request)
        if response.status == 200 and self.sent:
            self.first_reply_at.setdefault(str(self.sent[-1]["recipient"]["id"]), time.monotonic())
        return response


@dataclass
class Event:
    mid: str
    sender: str
    body: bytes
    signature: str
    first_post: float | None = None
    acked: bool = False


class Load:
    """The webhook traffic, retried like Meta retries, with its outcomes."""

    def __init__(self, events: list[Event], schedule: list[Event], concurrency: int, deadline: float) -> None:
        self.events = events
        self.schedule = schedule
        self.concurrency = concurrency
        self.deadline = deadline
        self.codes: Counter[str] = Counter()
        self.posts = 0
        self.started = 0  # schedule items taken so far (drives the fault points)
        self.last_ack = 0.0
        self.progress = asyncio.Condition()

    async def run(self, url: str) -> None:
        queue: asyncio.Queue[tuple[Event, int]] = asyncio.Queue()
        for event in self.schedule:
            queue.put_nowait((event, 0))
        pending = len(self.schedule)
        done = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def lane() -> None:
                nonlocal pending
                while not done.is_set():
                    try:
                        event, attempt = await asyncio.wait_for(queue.get(), timeout=0.5)
                    except TimeoutError:
                        continue
                    if attempt == 0:
                        self.started += 1
                        async with self.progress:
                            self.progress.notify_all()
                    if await self._post(http, url, event):
                        pending -= 1
                    elif time.monotonic() < self.deadline:
                        delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                        asyncio.get_running_loop().call_later(delay, queue.put_nowait, (event, attempt + 1))
                    else:
                        pending -= 1  # given up: counted as not acknowledged
                    if pending == 0:
                        done.set()

            lanes = [asyncio.create_task(lane()) for _ in range(self.concurrency)]
            try:
                await asyncio.wait_for(done.wait(), timeout=max(1.0, self.deadline - time.monotonic() + 35))
            except TimeoutError:
                print("  ! load deadline passed with POSTs still pending", file=sys.stderr)
            done.set()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def _post(self, http: aiohttp.ClientSession, url: str, event: Event) -> bool:
        if event.first_post is None:
            event.first_post = time.monotonic()
        self.posts += 1
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": event.signature}
        try:
            async with http.post(url, data=event.body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.codes[f"no answer ({type(exc).__name__})"] += 1
            return False
        if 200 <= status < 300:
            event.acked = True
            self.last_ack = time.monotonic()
            return True
        self.codes[str(status)] += 1
        return False

    async def wait_started(self, fraction: float) -> None:
        target = int(len(self.schedule) * fraction)
        async with self.progress:
            await self.progress.wait_for(lambda: self.started >= target or time.monotonic() > self.deadline)


def make_events(n: int, redelivered: float, rng: random.Random) -> tuple[list[Event], list[Event]]:
    tag = uuid.uuid4().hex[:6]
    now = int(time.time() * 1000)
    events = []
    for i in range(n):
        sender = f"psid_{tag}_{i}"
        body, signature = meta_event(SECRET, mid=f"m_{tag}_{i}", sender=sender, text=TEXT, ts_ms=now + i)
        events.append(Event(f"m_{tag}_{i}", sender, body, signature))
    schedule = list(events)
    rng.shuffle(schedule)
    # Redeliveries come later than the original: insert each copy after its first appearance.
    for event in rng.sample(events, int(n * redelivered)):
        first = schedule.index(event)
        schedule.insert(rng.randint(first + 1, len(schedule)), event)
    return events, schedule


class Service:
    """The service process, restarted after each kill, with the log lines of every life."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.lives: list[ServiceProcess] = []
        self.port = 0

    @property
    def current(self) -> ServiceProcess:
        return self.lives[-1]

    async def start(self) -> None:
        # The same address across restarts, as a supervisor gives it.
        process = ServiceProcess(
            f"life-{len(self.lives) + 1}", self.workdir, self.env, port=self.port or None
        )
        self.port = process.port
        self.lives.append(process)
        process.start()
        await process.wait_healthy(timeout_s=120)

    def kill(self) -> None:
        self.current.kill()


async def faults(load: Load, service: Service, proxy: TcpProxy, args: argparse.Namespace) -> list[str]:
    """SIGKILL at 20 %, a database cut at 50 %, SIGKILL at 80 %; returns what happened, with times."""
    log: list[str] = []
    t0 = time.monotonic()
    plan: list[tuple[float, str]] = []
    if args.kills >= 1:
        plan.append((0.2, "kill"))
    if args.cut_s > 0:
        plan.append((0.5, "cut"))
    if args.kills >= 2:
        plan.append((0.8, "kill"))
    for fraction, what in plan:
        await load.wait_started(fraction)
        if time.monotonic() > load.deadline:
            log.append(f"{what} at {fraction:.0%} skipped: load deadline passed")
            continue
        at = time.monotonic() - t0
        if what == "kill":
            service.kill()
            restart = time.monotonic()
            await service.start()
            log.append(
                f"SIGKILL at {at:.1f} s ({fraction:.0%} sent); back up in {time.monotonic() - restart:.1f} s"
            )
        else:
            await proxy.refuse()  # open connections reset, new ones refused
            try:
                await asyncio.sleep(args.cut_s)
            finally:
                await proxy.resume()
            log.append(f"database cut at {at:.1f} s ({fraction:.0%} sent) for {args.cut_s:.1f} s")
    return log


async def create_db(admin: str) -> tuple[str, str]:
    name = f"cheshire_faults_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, admin.rsplit("/", 1)[0] + "/" + name


async def drop_db(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


STATE_SQL = """
SELECT
  (SELECT count(*) FROM message WHERE direction = 'in') AS stored,
  (SELECT count(DISTINCT platform_message_id) FROM message WHERE direction = 'in') AS stored_distinct,
  (SELECT count(*) FROM message m WHERE m.direction = 'in' AND EXISTS (
      SELECT 1 FROM message r WHERE r.conversation_id = m.conversation_id AND r.direction = 'out'
        AND r.delivery_status = 'sent')) AS answered,
  (SELECT count(*) FROM job WHERE status IN ('queued', 'running') AND run_at <= now()) AS busy,
  (SELECT count(*) FROM job WHERE status = 'dead') AS dead
"""


async def db_state(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(STATE_SQL)
    finally:
        await conn.close()
    assert row is not None
    return {key: int(row[key]) for key in row.keys()}  # noqa: SIM118 - asyncpg Record


async def drain(url: str, acked: int, deadline: float) -> tuple[bool, dict[str, int]]:
    """Until every acknowledged message is stored and answered and no due job waits (or the deadline)."""
    state: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            state = await db_state(url)
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.5)
            continue
        if state["stored_distinct"] >= acked and state["answered"] >= state["stored"] and state["busy"] == 0:
            return True, state
        await asyncio.sleep(0.25)
    return False, state


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    events, schedule = make_events(args.events, args.redelivered, rng)
    graph = TimedGraph()
    graph_base = await graph.start()
    llm = await FakeLLMServer().start()
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    name, direct_url = await create_db(args.pg)
    proxied_url = direct_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    service = Service(
        workdir,
        {
            "DATABASE_URL": proxied_url,
            "ENVIRONMENT": "bench",
            "LOG_LEVEL": "WARNING",
            "META_APP_SECRET": SECRET,
            "FACEBOOK_PAGE_ACCESS_TOKEN": "PAGE_TOKEN",
            "META_GRAPH_API_BASE": graph_base,
            "ANTHROPIC_API_KEY": "bench-anthropic-key",
            "ANTHROPIC_BASE_URL": llm.anthropic_base_url,
            # One sender, one message: the per-sender limit is not what this bench probes.
            "WEBHOOK_RATE_LIMIT_PER_MINUTE": "10000000",
        },
    )
    result: dict[str, Any] = {}
    try:
        await service.start()
        t0 = time.monotonic()
        load = Load(events, schedule, args.concurrency, deadline=t0 + args.load_s)
        fault_task = asyncio.create_task(faults(load, service, proxy, args))
        await load.run(f"http://127.0.0.1:{service.port}/webhook/facebook")
        try:
            fault_log = await asyncio.wait_for(fault_task, timeout=180)
        except TimeoutError:
            fault_log = ["faults did not finish within 180 s"]
        load_done = time.monotonic()
        acked = sum(e.acked for e in events)
        drained, state = await drain(direct_url, acked, deadline=load_done + args.drain_s)
        drained_at = time.monotonic()
        await asyncio.sleep(args.settle_s)  # a doubled answer arriving late still counts
        state = await db_state(direct_url)
        per_sender = Counter(str(m["recipient"]["id"]) for m in graph.sent)
        latencies = [
            graph.first_reply_at[e.sender] - e.first_post
            for e in events
            if e.first_post is not None and e.sender in graph.first_reply_at
        ]
        result = {
            "events": args.events,
            "posts": load.posts,
            "acknowledged": acked,
            "stored": state["stored"],
            "answered": state["answered"],
            "replies_sent": len(graph.sent),
            "lost_unstored": acked - state["stored_distinct"],
            "lost_unanswered": state["stored"] - state["answered"],
            "not_acknowledged": args.events - acked,
            "doubled": sum(1 for n in per_sender.values() if n > 1),
            "dead_jobs": state["dead"],
            "non_2xx": dict(sorted(load.codes.items())),
            "drained": drained,
            "time_to_drain_s": round(drained_at - max(load.last_ack, t0), 1),
            "load_s": round(load_done - t0, 1),
            "worst_reply_latency_s": round(max(latencies), 1) if latencies else None,
            "median_reply_latency_s": round(sorted(latencies)[len(latencies) // 2], 1) if latencies else None,
            "faults": fault_log,
            "db_connections_via_proxy": proxy.connections,
            "llm_requests": len(llm.anthropic.requests),
            "service_lives": len(service.lives),
            "log_dir": str(workdir),
        }
        result["errors_logged"] = _errors_logged(service)
    finally:
        service.current.stop()
        for life in service.lives:
            life.kill()
        await proxy.close()
        await graph.stop()
        await llm.close()
        if not args.keep_db:
            await drop_db(args.pg, name)
    return result


def _errors_logged(service: Service) -> dict[str, int]:
    """error/critical log lines of all lives, by logger and first words (what an operator would see)."""
    seen: Counter[str] = Counter()
    for life in service.lives:
        for line in life.logs():
            if line.get("level") in {"error", "critical"}:
                seen[f"{line.get('logger')}: {str(line.get('msg'))[:90]}"] += 1
    return dict(seen.most_common(12))


def report(result: dict[str, Any], reference: dict[str, Any] | None) -> None:
    print("fault bench (python -m bot on PostgreSQL behind a TCP proxy; fake Graph API and Claude)")
    for line in result.pop("faults"):
        print(f"  fault: {line}")
    if reference is not None:
        reference.pop("faults")
        print(f"  {'':<26}  {'with faults':<14}  reference (same load, no faults)")
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = json.dumps(value) if isinstance(value, dict) else str(value)
        if reference is None:
            print(f"  {key:<{width}}  {shown}")
        else:
            other = reference.get(key)
            other_shown = json.dumps(other) if isinstance(other, dict) else str(other)
            print(f"  {key:<{width}}  {shown:<14}  {other_shown}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redelivered", type=float, default=0.1)
    parser.add_argument("--kills", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--cut-s", type=float, default=4.0)
    parser.add_argument("--load-s", type=float, default=600.0, help="deadline for sending (and re-sending)")
    parser.add_argument("--drain-s", type=float, default=300.0, help="deadline for the backlog to drain")
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--reference", action="store_true", help="first run the same load without faults, and print both"
    )
    args = parser.parse_args()
    # The fakes' servers log a reset connection each time the killed service drops a request: noise.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    reference = None
    if args.reference:
        reference = asyncio.run(run(argparse.Namespace(**{**vars(args), "kills": 0, "cut_s": 0.0})))
    report(asyncio.run(run(args)), reference)


if __name__ == "__main__":
    main()
