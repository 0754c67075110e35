"""Structured logging: JSON lines off a terminal, readable lines on one, with request/job ids.

Secrets are kept out twice: settings hold them as SecretStr, and `SecretFilter` masks any registered
secret value that still finds its way into a message (an SDK echoing a URL with a token, say).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)


@contextlib.contextmanager
def job_context(job_id: int, kind: str) -> Iterator[None]:
    token = job_id_var.set(f"{kind}:{job_id}")
    try:
        yield
    finally:
        job_id_var.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get()
        return True


class SecretFilter(logging.Filter):
    """Replaces known secret values with '***' in the message, extra fields and traceback text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.mask(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    # SecretFilter leaves a masked `exc_text`; use it rather than formatting the traceback again.
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and value is not None:
                data[key] = value
        exc = _exception_text(self, record)
        if exc:
            data["exc"] = exc
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{k}={v}" for k in ("request_id", "job_id") if (v := getattr(record, k, None)) is not None
        )
        stamp = self.formatTime(record, "%H:%M:%S")
        base = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base} [{ids}]" if ids else base
        exc = _exception_text(self, record)
        if exc:
            text += "\n" + exc
        return text


def configure_logging(
    *, level: str = "INFO", json_lines: bool | None = None, secrets: Iterable[str] = ()
) -> None:
    use_json = (not sys.stdout.isatty()) if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries: their INFO lines carry full URLs and bodies.
    for name in (
        "httpx",
        "httpcore",
        "aiogram.event",
        "botocore",
        "urllib3",
        "googleapiclient.discovery_cache",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
