"""No deploy traps (issue 14, section 5): a malformed bot token stops start-up with one line and exit
2 (not a traceback systemd restarts forever), and TELEGRAM_MODE chooses polling or webhook
independently of PUBLIC_BASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError
from tests.test_settings import ROOT, clean_env  # noqa: F401 - the shared fixture

TOKEN = "123456:AAE-good_token"


@pytest.mark.parametrize("token", ["not a token", "123456", "abc:def", "123456:with space", "12:ab/cd"])
def test_malformed_token_exits_2_with_one_line_naming_it(tmp_path: Path, token: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env["TELEGRAM_BOT_TOKEN"] = token
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cheshire: invalid configuration: TELEGRAM_BOT_TOKEN:")
    assert token not in result.stderr + result.stdout  # it is a secret, even when malformed
    assert not (tmp_path / "var").exists()  # stopped before touching the database


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


@pytest.mark.usefixtures("clean_env")
def test_telegram_mode_auto_follows_public_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _load(monkeypatch).telegram_mode == "off"  # no token: off, whatever the mode says
    assert _load(monkeypatch, TELEGRAM_BOT_TOKEN=TOKEN).telegram_mode == "polling"
    webhook = _load(monkeypatch, PUBLIC_BASE_URL="https://c.example", TELEGRAM_WEBHOOK_SECRET="s-1")
    assert webhook.telegram_mode == "webhook"


@pytest.mark.usefixtures("clean_env")
def test_polling_mode_keeps_polling_with_a_public_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load(
        monkeypatch, TELEGRAM_BOT_TOKEN=TOKEN, PUBLIC_BASE_URL="https://c.example", TELEGRAM_MODE="Polling"
    )
    assert settings.telegram_mode == "polling"
    assert settings.public_base_url == "https://c.example"  # still serves OAuth and pages
    # No webhook secret needed: Telegram never posts to us in polling mode.
    assert settings.telegram_webhook_secret is None


@pytest.mark.usefixtures("clean_env")
def test_webhook_mode_needs_a_public_url_and_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="TELEGRAM_MODE=webhook needs PUBLIC_BASE_URL"):
        _load(monkeypatch, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_MODE="webhook")
    with pytest.raises(SettingsError, match="TELEGRAM_WEBHOOK_SECRET is required"):
        _load(monkeypatch, PUBLIC_BASE_URL="https://c.example")
    assert _load(monkeypatch, TELEGRAM_WEBHOOK_SECRET="s-1").telegram_mode == "webhook"


@pytest.mark.usefixtures("clean_env")
def test_unknown_mode_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(monkeypatch, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_MODE="carrier-pigeon")
    assert str(caught.value) == "invalid configuration: TELEGRAM_MODE: must be auto, polling or webhook"
