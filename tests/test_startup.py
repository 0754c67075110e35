"""Start-up: the real process starts with an empty environment, answers /healthz, and exits 0 on
SIGTERM; /healthz says 503 when the database is unreachable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from channels.app import create_app
from core.db.database import Database
from core.settings import Settings
from tests.support import databases

ROOT = Path(__file__).resolve().parents[1]
AiohttpClient = Callable[..., Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_process(workdir: Path, port: int, **extra_env: str) -> subprocess.Popen[str]:
    # Nothing but what a shell always has, where the code is, and a free port.
    env = {"HOME": str(workdir), "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PORT": str(port)}
    return subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=workdir,
        env=env | extra_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def wait_healthy(proc: subprocess.Popen[str], port: int) -> dict[str, str]:
    async with aiohttp.ClientSession() as http, asyncio.timeout(60):
        while True:
            assert proc.poll() is None, f"process exited early with {proc.returncode}"
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        body: dict[str, str] = await response.json()
                        return body
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]]]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("did not stop within 10 s of SIGTERM") from None
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    return code, lines


async def test_starts_with_an_empty_environment_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = start_process(tmp_path, port)
    try:
        assert await wait_healthy(proc, port) == {"status": "ok", "db": "ok"}
    finally:
        code, logs = stop(proc)

    assert code == 0
    assert (tmp_path / "var" / "cheshire.sqlite3").is_file()  # the embedded default database
    messages = [line["msg"] for line in logs]
    assert any(m.startswith("integrations: enabled=none disabled=") and "telegram" in m for m in messages)
    assert "telegram bot is off: TELEGRAM_BOT_TOKEN is not set" in messages
    assert messages[-1] == "stopped"


async def test_starts_on_the_backend_under_test_and_migrates_it(tmp_path: Path) -> None:
    url = await databases.fresh_empty_url(tmp_path)
    port = free_port()
    proc = start_process(tmp_path, port, DATABASE_URL=url)
    try:
        assert await wait_healthy(proc, port) == {"status": "ok", "db": "ok"}
    finally:
        code, logs = stop(proc)
        await databases.dispose_url(url)
    assert code == 0
    started = next(line for line in logs if line["msg"] == "cheshire started")
    assert started["database"] == ("postgresql" if url.startswith("postgresql") else "sqlite")


async def test_healthz_is_200_when_the_database_answers(
    aiohttp_client: AiohttpClient, db: Database, settings: Settings
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, db))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "db": "ok"}
    assert response.headers["X-Request-Id"]


async def test_healthz_is_503_when_the_database_is_unreachable(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    # Nothing listens on port 1: every connection attempt is refused.
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:1/cheshire")
    try:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, unreachable))
        response = await client.get("/healthz", headers={"X-Request-Id": "probe-1"})
        assert response.status == 503
        assert await response.json() == {"status": "unavailable", "db": "down"}
        assert response.headers["X-Request-Id"] == "probe-1"
    finally:
        await unreachable.dispose()


def test_disabled_integrations_load_no_vendor_sdk(tmp_path: Path) -> None:
    """Start-up time and memory: without credentials, no vendor SDK is even imported."""
    script = (
        "import sys\n"
        "from core.settings import Settings\n"
        "from cheshire.runtime import build_runtime\n"
        "build_runtime(Settings.load())\n"
        "sdks = ['aiogram', 'anthropic', 'openai', 'googleapiclient', 'aioboto3', 'stripe', 'fal_client',\n"
        "        'aiosmtplib', 'httpx', 'core.integrations.n8n', 'core.integrations.twenty']\n"
        "print(','.join(m for m in sdks if m in sys.modules))\n"
    )
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_unreachable_database_at_start_is_one_logged_error_and_exit_1(tmp_path: Path) -> None:
    proc = start_process(
        tmp_path, free_port(), DATABASE_URL="postgresql://postgres:pw-not-shown@127.0.0.1:1/x"
    )
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    logs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert logs[-1]["level"] == "critical"
    assert logs[-1]["msg"] == "cheshire could not start or crashed"
    assert "Connect call failed" in logs[-1]["exc"] or "refused" in logs[-1]["exc"].lower()
    assert "pw-not-shown" not in output
