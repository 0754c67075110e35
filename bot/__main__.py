"""`python -m bot` (what `make run` calls): load settings, configure logging, run the process.

Exit codes: 0 after a graceful stop, 1 when start-up failed (e.g. the database is unreachable),
2 when the configuration is invalid (one line naming the variable, never its value).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from core.logging import configure_logging
from core.settings import Settings, SettingsError


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, so the log filter can mask it if a library echoes one."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    # Passwords inside connection URLs are secrets too.
    for url in (settings.database_url, settings.redis_url):
        if url:
            with contextlib.suppress(Exception):
                password = make_url(url).password
                if password:
                    values.append(str(password))
    return values


def main() -> int:
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"cheshire: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, json_lines=settings.log_json, secrets=secret_values(settings))

    from cheshire.runtime import run  # after logging, so import-time warnings are formatted

    try:
        asyncio.run(run(settings))
    except Exception:
        # E.g. the database is unreachable at start: one logged error (masked), exit 1, and the
        # supervisor restarts us.
        logging.getLogger("bot").critical("cheshire could not start or crashed", exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
