"""The real service as a child process (`python -m bot`), for tests and benches that need more than one
process, or a process to kill: start it with an environment, wait until /healthz answers, read its
JSON log lines, stop it with SIGTERM or SIGKILL. Also Meta's webhook signature, for load generators.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One `python -m bot`, its log in `log_path` (JSON lines), listening on `port`."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str], *, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._env = {
            "HOME": str(workdir),
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "PORT": str(self.port),
            "LOG_JSON": "true",
        } | env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot"],
            cwd=self.workdir,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_healthy(self, timeout_s: float = 60.0) -> None:
        async with aiohttp.ClientSession() as http, asyncio.timeout(timeout_s):
            while True:
                assert self.alive(), f"{self.name} exited early: {self.tail()}"
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup (what the OOM killer or a power cut does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        elif self.proc is not None:
            code = self.proc.returncode
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by SIGKILL
        return lines

    def logged(self, text: str) -> bool:
        return any(text in str(line.get("msg", "")) for line in self.logs())

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def wait_until_logged(process: ServiceProcess, text: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not process.logged(text):
            await asyncio.sleep(0.1)


def meta_event(
    secret: str, *, mid: str, sender: str, text: str, ts_ms: int | None = None
) -> tuple[bytes, str]:
    """A Messenger message webhook body and its X-Hub-Signature-256, as Meta signs it."""
    ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
    payload = {
        "object": "page",
        "entry": [
            {
                "id": "PAGE",
                "time": ts,
                "messaging": [
                    {
                        "sender": {"id": sender},
                        "recipient": {"id": "PAGE"},
                        "timestamp": ts,
                        "message": {"mid": mid, "text": text},
                    }
                ],
            }
        ],
    }
    raw = json.dumps(payload).encode()
    return raw, "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
