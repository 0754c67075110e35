"""Settings: defaults with nothing set, one clear line per bad value (never the value itself), and
secrets that stay out of repr, dumps and logs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.__main__ import secret_values
from core.logging import configure_logging, job_context
from core.settings import DEFAULT_SQLITE_URL, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Cheshire variable in the environment and no .env in the working directory."""
    names = {name.upper() for name in Settings.model_fields}
    names |= {"NODE_ENV", "FAL_KEY", "NEXT_PUBLIC_STRIPE_PUBLISHABLE_KEY"}
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_empty_environment_runs_on_embedded_sqlite_with_integrations_disabled(clean_env: Path) -> None:
    settings = Settings.load()
    assert settings.database_url == DEFAULT_SQLITE_URL
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.telegram_mode == "off"
    assert not any(settings.integrations().values())


def test_blank_values_from_a_copied_env_example_mean_unset(clean_env: Path) -> None:
    (clean_env / ".env").write_text("TELEGRAM_BOT_TOKEN=\nANTHROPIC_API_KEY=\nPORT=9000\n")
    settings = Settings.load()
    assert settings.port == 9000
    assert settings.telegram_bot_token is None and settings.anthropic_api_key is None
    assert not any(settings.integrations().values())


def test_values_come_from_env_file_and_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("TELEGRAM_BOT_TOKEN=123456:from-file\nTELEGRAM_ADMIN_IDS=1, 2\n")
    monkeypatch.setenv("DATABASE_URL", "postgres://cheshire@db.internal/cheshire")
    monkeypatch.setenv("TELEGRAM_KIMMIE_CHAT_ID", "42")
    settings = Settings.load()
    assert settings.database_url == "postgresql+asyncpg://cheshire@db.internal/cheshire"
    assert settings.telegram_mode == "polling"
    assert settings.admin_chat_ids == frozenset({1, 2, 42})
    assert settings.integrations()["telegram"] is True


def test_utility_messages_are_listed_only_with_the_page_that_sends_them(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("META_UTILITY_MESSAGES", "true")
    assert Settings.load().integrations()["meta_utility_messages"] is False
    monkeypatch.setenv("FACEBOOK_PAGE_ACCESS_TOKEN", "page-token")
    assert Settings.load().integrations()["meta_utility_messages"] is True


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "eighty-eighty", "PORT: Input should be a valid integer"),
        ("PORT", "70000", "PORT: Input should be less than or equal to 65535"),
        ("DATABASE_URL", "mysql://kim:hunter2-db-pass@db/x", "DATABASE_URL: must be a postgresql://"),
        ("BUSINESS_TIMEZONE", "Wonderland/Teatime", "BUSINESS_TIMEZONE: unknown time zone"),
        ("TELEGRAM_KIMMIE_CHAT_ID", "kimmie-the-groomer", "TELEGRAM_KIMMIE_CHAT_ID: Input should be"),
        ("JOB_WORKERS", "-3", "JOB_WORKERS: Input should be greater than or equal to 0"),
    ],
)
def test_bad_value_gives_one_line_naming_the_variable_without_the_value(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert value not in message


def test_placeholder_secret_is_refused_in_production(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_ENV", "production")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "changeme")
    with pytest.raises(SettingsError, match="STRIPE_SECRET_KEY holds a placeholder value"):
        Settings.load()


def test_webhook_mode_needs_a_webhook_secret(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:abc")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://cheshire.example/")
    with pytest.raises(SettingsError, match="TELEGRAM_WEBHOOK_SECRET is required"):
        Settings.load()
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret-token_1")
    settings = Settings.load()
    assert settings.telegram_mode == "webhook"
    assert settings.public_base_url == "https://cheshire.example"


def test_process_exits_2_with_one_line_on_bad_configuration(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env |= {"PORT": "not-a-port", "ANTHROPIC_API_KEY": "sk-ant-do-not-print-me"}
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cheshire: invalid configuration: PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]
    assert "sk-ant-do-not-print-me" not in result.stdout + result.stderr
    assert not (tmp_path / "var").exists()  # stopped before touching the database


SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-secret-value-1",
    "TELEGRAM_BOT_TOKEN": "123456:telegram-secret-2",
    "META_APP_SECRET": "meta-app-secret-3",
    "STRIPE_SECRET_KEY": "sk_test_stripe_secret_4",
    "GOOGLE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----secret-5",
}


def test_secrets_stay_out_of_repr_str_and_dumps(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = Settings.load()
    assert isinstance(settings.anthropic_api_key, SecretStr)
    assert settings.anthropic_api_key.get_secret_value() == SECRETS["ANTHROPIC_API_KEY"]
    shown = (
        repr(settings)
        + str(settings)
        + settings.model_dump_json()
        + json.dumps(settings.model_dump(mode="json"))
    )
    for value in SECRETS.values():
        assert value not in shown


def test_secrets_are_masked_in_log_output(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = Settings.load()
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging(level="INFO", json_lines=True, secrets=secret_values(settings))
    log = logging.getLogger("cheshire.test")
    token = SECRETS["TELEGRAM_BOT_TOKEN"]

    # What an SDK might do: put the token in a URL (a local Bot API's here), an argument, an extra field
    # or an exception.
    log.info("GET http://127.0.0.1:8081/bot%s/getMe", token)
    log.warning("calling", extra={"url": f"http://127.0.0.1:8081/bot{token}/sendMessage"})
    with job_context(7, "deliver_message"):
        try:
            raise RuntimeError(f"auth failed with key {SECRETS['ANTHROPIC_API_KEY']}")
        except RuntimeError:
            log.exception("job failed")

    output = stream.getvalue()
    for value in SECRETS.values():
        assert value not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert lines[0]["msg"] == "GET http://127.0.0.1:8081/bot***/getMe"
    assert lines[1]["url"] == "http://127.0.0.1:8081/bot***/sendMessage"
    assert lines[2]["job_id"] == "deliver_message:7"
    assert "auth failed with key ***" in lines[2]["exc"]


SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_35256bb122d425c7.txt"
# Every variable the old system's integration audit names (its "Environment Configuration").
SEED_VARIABLES = {
    "DATABASE_URL",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "FAL_AI_KEY",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_KIMMIE_CHAT_ID",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PUBLISHABLE_KEY",
    "INSTAGRAM_ACCESS_TOKEN",
    "INSTAGRAM_VERIFY_TOKEN",
    "FACEBOOK_PAGE_ACCESS_TOKEN",
    "FACEBOOK_VERIFY_TOKEN",
    "TIKTOK_ACCESS_TOKEN",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "GOOGLE_REFRESH_TOKEN",
    "GOOGLE_CALENDAR_ID",
    "GOOGLE_SERVICE_ACCOUNT_EMAIL",
    "GOOGLE_PRIVATE_KEY",
    "N8N_API_KEY",
    "N8N_BASE_URL",
    "TWENTY_API_KEY",
    "TWENTY_BASE_URL",
    "NEXT_PUBLIC_APP_URL",
    "NODE_ENV",
}


def env_example() -> dict[str, str]:
    """NAME -> the comment line just above it."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {}
    for previous, line in zip(["", *lines], lines, strict=False):
        if line and not line.startswith("#") and "=" in line:
            documented[line.split("=", 1)[0]] = previous
    return documented


def settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]).upper() if choices else name.upper())
    return names - {"ENVIRONMENT"} | {"NODE_ENV"}


def test_env_example_documents_every_setting_with_a_comment() -> None:
    documented = env_example()
    assert settings_variables() - set(documented) == set(), "add these to .env.example"
    assert set(documented) - settings_variables() - {"FAL_AI_KEY"} == set(), "not a setting"
    assert [name for name, comment in documented.items() if not comment.startswith("# ")] == []


def test_every_seed_variable_is_documented_and_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if SEED.exists():  # the audit lives beside the repository on the project's machines
        text = SEED.read_text()
        assert {name for name in SEED_VARIABLES if f"`{name}`" not in text} == set()
    assert SEED_VARIABLES - set(env_example()) == set()

    baseline = Settings.load().model_dump()
    unread = []
    for name in sorted(SEED_VARIABLES):
        value = {"DATABASE_URL": "sqlite:///seed.db", "TELEGRAM_KIMMIE_CHAT_ID": "42"}.get(name, "seed-value")
        value = "1:seed-value" if name == "TELEGRAM_BOT_TOKEN" else value
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            if Settings.load().model_dump() == baseline:
                unread.append(name)
    assert unread == []
