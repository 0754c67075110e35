"""`python -m demo` (what `make demo` runs): Cheshire with no keys, on one machine.

Starts, in one event loop: a fake Telegram Bot API (demo/kimmie.py) and a fake Meta Graph API (the
test suite's fakes, tests/fakes/), then the real service (cheshire/runtime.py `run`) on SQLite
(var/demo.sqlite3) with the offline responder (no LLM key), its bot polling the fake Telegram, and
Messenger sending to the fake Graph API. Two pages:

- http://127.0.0.1:8080/        the website chat: play the customer and book by buttons;
- http://127.0.0.1:8081/kimmie  Kimmie's Telegram chat: her notifications, the cards and their
                                buttons, pressed through the fake Bot API into the real handlers.

DEMO_PORT / DEMO_KIMMIE_PORT choose the ports; Ctrl-C stops it all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from cheshire.runtime import run
from core.logging import configure_logging
from core.settings import Settings
from demo.kimmie import DemoTelegram, kimmie_app
from tests.fakes.graph_api import FakeGraphAPI

KIMMIE_CHAT = 777000
BOT_TOKEN = "1000:demo-token-not-a-secret"
log = logging.getLogger("demo")


def demo_settings(*, port: int, telegram: str, graph: str, database: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,  # the demo never reads the operator's .env or keys
        environment="development",
        port=port,
        database_url=f"sqlite+aiosqlite:///{database}",
        telegram_bot_token=BOT_TOKEN,
        telegram_api_base=telegram,
        telegram_kimmie_chat_id=KIMMIE_CHAT,
        telegram_mode="polling",
        telegram_bot_username="cheshire_demo_bot",
        facebook_page_access_token="PAGE_TOKEN",
        meta_graph_api_base=graph,
        meta_allow_unsigned=True,
        job_poll_interval_s=0.2,
        log_json=False,
    )


async def main() -> None:
    port = int(os.environ.get("DEMO_PORT", "8080"))
    kimmie_port = int(os.environ.get("DEMO_KIMMIE_PORT", str(port + 1)))
    database = Path("var") / "demo.sqlite3"
    database.parent.mkdir(exist_ok=True)
    telegram, graph = DemoTelegram(bot_id=1000), FakeGraphAPI()
    await telegram.start()
    graph_url = await graph.start()
    settings = demo_settings(port=port, telegram=telegram.base_url, graph=graph_url, database=database)
    configure_logging(level="INFO", json_lines=False, secrets=[])
    runner = web.AppRunner(kimmie_app(telegram, KIMMIE_CHAT, customer_url=f"http://127.0.0.1:{port}/"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", kimmie_port).start()
    print(
        f"\n  Cheshire demo (no keys; Ctrl-C stops it)\n"
        f"  customer (website chat):  http://127.0.0.1:{port}/\n"
        f"  Kimmie (her Telegram):    http://127.0.0.1:{kimmie_port}/kimmie\n",
        file=sys.stderr,
        flush=True,
    )
    try:
        await run(settings)
    finally:
        await runner.cleanup()
        await graph.stop()
        await telegram.stop()


if __name__ == "__main__":
    asyncio.run(main())
