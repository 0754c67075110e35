"""Start-up: time from process start to the first 200 from /healthz, and resident memory then.

    .venv/bin/python bench/bench_startup.py [--runs 3] [--database-url URL]

Runs `python -m bot` in a temporary directory with an empty environment (the embedded SQLite
default, every integration off; or --database-url), and as a reference, in the same run, a bare
aiohttp process that answers /healthz with nothing else loaded. Goals: under 2 s and under 150 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = """
from aiohttp import web
import os
async def healthz(request):
    return web.json_response({"status": "ok"})
app = web.Application()
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(argv: list[str], extra_env: dict[str, str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = {"HOME": workdir, "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PORT": str(port)}
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env | extra_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{argv} exited with {proc.returncode} before answering")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.01)
            elapsed = time.perf_counter() - started
            memory = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        return elapsed, memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    extra = {"DATABASE_URL": args.database_url} if args.database_url else {}

    ours = [measure([sys.executable, "-m", "bot"], extra) for _ in range(args.runs)]
    ref = [measure([sys.executable, "-c", REFERENCE], {}) for _ in range(args.runs)]
    # The same with the SDK-backed integrations configured (endpoints point at a closed local port:
    # what is measured is loading and wiring them, not talking to them).
    nowhere = "http://127.0.0.1:9"
    configured = extra | {
        "TELEGRAM_BOT_TOKEN": "123456:bench",
        "TELEGRAM_API_BASE": nowhere,
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": nowhere,
        "OPENAI_API_KEY": "bench-key",
        "OPENAI_BASE_URL": f"{nowhere}/v1",
    }
    full = [measure([sys.executable, "-m", "bot"], configured) for _ in range(args.runs)]

    def summary(samples: list[tuple[float, float]]) -> str:
        times = [t for t, _ in samples]
        rss = [m for _, m in samples]
        return (
            f"{statistics.median(times):5.2f} s (min {min(times):.2f})  RSS {statistics.median(rss):6.1f} MB"
        )

    print(
        f"start-up to first 200 from /healthz, median of {args.runs} "
        f"(database: {args.database_url or 'default SQLite'})"
    )
    print(f"  cheshire (python -m bot): {summary(ours)}   goals: < 2 s, < 150 MB")
    print(f"  + Telegram, Claude, OpenAI: {summary(full)}")
    print(f"  reference (bare aiohttp): {summary(ref)}")
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


if __name__ == "__main__":
    main()
