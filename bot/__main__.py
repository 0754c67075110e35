"""`python -m bot` (what `make run` calls): load settings, configure logging, run the process.

Exit codes: 0 after a graceful stop, 2 when the configuration is invalid (one line naming the
variable, never its value).
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import SecretStr

from core.logging import configure_logging
from core.settings import Settings, SettingsError


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, so the log filter can mask it if a library echoes one."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    return values


def main() -> int:
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"cheshire: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, json_lines=settings.log_json, secrets=secret_values(settings))

    from bot.runtime import run  # after logging, so import-time warnings are formatted

    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
