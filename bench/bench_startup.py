"""Start-up: time from process start to the first 200 from /healthz, resident memory then, and (what
the process still does after answering) time and memory once its warm-up has finished.

    .venv/bin/python bench/bench_startup.py [--runs 3] [--database-url URL] [--root DIR] [--warm-line TEXT]

Two configurations of `python -m bot`, each in a temporary directory on the embedded SQLite default
(or --database-url):
- every integration off (an empty environment);
- every integration configured, against local fakes (tests/support/local_integrations.py): Telegram
  through a fake Bot API (polling), Claude and OpenAI, Meta, Google Calendar, FAL, Stripe, n8n, Twenty,
  S3 (moto) and SMTP. Redis is not among them (no local server).
The reference, in the same rounds (interleaved: the machine is shared and noisy), is a bare aiohttp
process that answers /healthz with nothing else loaded. Goals at the first /healthz 200: under 2 s and
under 150 MB. "Warm" is when the process logs `--warm-line` ("warm-up finished": the Telegram bot is
built and polling, the LLM SDKs are loaded); RSS then is what the process holds for good.

--root starts the code of another checkout (e.g. an export of main, to compare); main before the
deferred start-up logged no warm-up line: pass --warm-line "cheshire started" for it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.local_integrations import LocalIntegrations  # noqa: E402 - after the path

REFERENCE = """
from aiohttp import web
import os
async def healthz(request):
    return web.json_response({"status": "ok"})
app = web.Application()
app.router.add_get("/healthz", healthz)
print("warm-up finished", flush=True)
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
"""


@dataclass(frozen=True, slots=True)
class Sample:
    healthy_s: float
    healthy_mb: float
    warm_s: float
    warm_mb: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(argv: list[str], extra_env: dict[str, str], *, root: Path, warm_line: str) -> Sample:
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        log_path = Path(workdir) / "out.log"
        env = {"HOME": workdir, "PATH": os.environ["PATH"], "PYTHONPATH": str(root), "PORT": str(port)}
        with open(log_path, "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv, cwd=workdir, env=env | extra_env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                async with aiohttp.ClientSession() as http, asyncio.timeout(120):
                    healthy_s, healthy_mb = await _until_healthy(proc, http, port, started)
                    while warm_line not in log_path.read_text(errors="replace"):
                        if proc.poll() is not None:
                            raise SystemExit(f"{argv} exited with {proc.returncode} while warming up")
                        await asyncio.sleep(0.02)
                warm_s, warm_mb = time.perf_counter() - started, rss_mb(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 15)
        return Sample(healthy_s, healthy_mb, warm_s, warm_mb)


async def _until_healthy(
    proc: subprocess.Popen[bytes], http: aiohttp.ClientSession, port: int, started: float
) -> tuple[float, float]:
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"exited with {proc.returncode} before answering")
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == 200:
                    return time.perf_counter() - started, rss_mb(proc.pid)
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.01)


def spread(values: list[float], unit: str, digits: int) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def summary(samples: list[Sample]) -> str:
    return (
        f"healthz {spread([s.healthy_s for s in samples], 's', 2):>20}  "
        f"RSS {spread([s.healthy_mb for s in samples], 'MB', 0):>17}  |  "
        f"warm {spread([s.warm_s for s in samples], 's', 2):>20}  "
        f"RSS {spread([s.warm_mb for s in samples], 'MB', 0):>17}"
    )


async def bench(args: argparse.Namespace) -> None:
    root = Path(args.root).resolve() if args.root else ROOT
    database = {"DATABASE_URL": args.database_url} if args.database_url else {}
    ours = [sys.executable, "-m", "bot"]
    off: list[Sample] = []
    full: list[Sample] = []
    ref: list[Sample] = []
    async with LocalIntegrations() as fakes:
        configured = database | fakes.env()
        for _ in range(args.runs):  # interleaved, so noise from other work hits all three alike
            off.append(await measure(ours, database, root=root, warm_line=args.warm_line))
            ref.append(await measure([sys.executable, "-c", REFERENCE], {}, root=root, warm_line="warm-up"))
            full.append(await measure(ours, configured, root=root, warm_line=args.warm_line))
    print(
        f"start-up of `python -m bot` ({root}), median (min-max) of {args.runs} interleaved rounds, "
        f"database: {args.database_url or 'default SQLite'}; goals at the first /healthz 200: < 2 s, < 150 MB"
    )
    print(f"  every integration off:         {summary(off)}")
    print(f"  every integration configured:  {summary(full)}")
    print(f"  reference (bare aiohttp):      {summary(ref)}")
    for module in ("aiogram.types", "anthropic", "openai"):
        seconds, megabytes = import_cost(module)
        print(f"  diagnostic: `import {module}` alone: {seconds:5.2f} s, peak RSS {megabytes:6.1f} MB")


def import_cost(module: str) -> tuple[float, float]:
    code = (
        "import resource, time; t = time.perf_counter(); import " + module + "; "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, megabytes = out.split()
    return float(seconds), float(megabytes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--root", default=None, help="the checkout whose `python -m bot` is started")
    parser.add_argument("--warm-line", default="warm-up finished", help="the log line that ends warm-up")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
