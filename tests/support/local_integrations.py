"""Every integration `python -m bot` can use, as local fakes, and the environment that points the
process at them: the Bot API, Claude and OpenAI, Meta's Graph API, Google Calendar, FAL, Stripe, n8n,
Twenty, S3 (a moto server) and SMTP. For the start-up test and bench (everything configured at once).

Redis is not among them (no local Redis server here): the FSM storage and send limiter stay in-process.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from moto.server import ThreadedMotoServer

from tests.fakes.fal import FakeFal
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.n8n import FakeN8n
from tests.fakes.smtp_server import FakeSMTPServer
from tests.fakes.stripe import API_KEY as STRIPE_KEY
from tests.fakes.stripe import FakeStripe
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.twenty import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]

TELEGRAM_TOKEN = "123456:ALL-integrations-token"
KIMMIE_CHAT = 777
# What the start-up log's "integrations: enabled=..." line lists with this environment.
CONFIGURED = (
    "claude",
    "email",
    "fal",
    "google_calendar",
    "instagram",
    "messenger",
    "meta_signature",
    "n8n",
    "openai",
    "s3",
    "stripe",
    "telegram",
    "twenty",
)


class LocalIntegrations:
    """`async with LocalIntegrations() as fakes:` starts them all; `fakes.env()` is the environment."""

    def __init__(self) -> None:
        self.telegram = FakeTelegramAPI()
        self.llm = FakeLLMServer()
        self.graph = FakeGraphAPI()
        self.google = FakeGoogleCalendar()
        self.fal = FakeFal()
        self.stripe = FakeStripe()
        self.n8n = FakeN8n()
        self.twenty = FakeTwenty()
        self.smtp = FakeSMTPServer()
        self.s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._bases: dict[str, str] = {}

    async def __aenter__(self) -> LocalIntegrations:
        self._bases["telegram"] = await self.telegram.start()
        await self.llm.start()
        self._bases["graph"] = await self.graph.start()
        await self.google.start()
        self._bases["fal"] = await self.fal.start()
        self._bases["stripe"] = await self.stripe.start()
        self.n8n.add_workflow("cheshire events", path="cheshire")
        self._bases["n8n"] = await self.n8n.start()
        self._bases["twenty"] = await self.twenty.start()
        self.smtp.start()
        self.s3.start()
        host, port = self.s3.get_host_and_port()
        self._bases["s3"] = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.s3.stop()
        self.smtp.stop()
        for stop in (self.twenty.stop, self.n8n.stop, self.stripe.stop, self.fal.stop, self.graph.stop):
            await stop()
        await self.google.close()
        await self.llm.close()
        await self.telegram.stop()

    def env(self) -> dict[str, str]:
        fal = self._bases["fal"]
        return {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_API_BASE": self._bases["telegram"],
            "TELEGRAM_MODE": "polling",
            "TELEGRAM_KIMMIE_CHAT_ID": str(KIMMIE_CHAT),
            "TELEGRAM_BOT_USERNAME": "cheshire_test_bot",
            "ANTHROPIC_API_KEY": "sk-ant-local",
            "ANTHROPIC_BASE_URL": self.llm.anthropic_base_url,
            "OPENAI_API_KEY": "sk-openai-local",
            "OPENAI_BASE_URL": self.llm.openai_base_url,
            "META_APP_SECRET": "all-integrations-app-secret",
            "FACEBOOK_PAGE_ACCESS_TOKEN": "PAGE_TOKEN",
            "INSTAGRAM_ACCESS_TOKEN": "IG_TOKEN",
            "META_GRAPH_API_BASE": self._bases["graph"],
            "GOOGLE_CLIENT_ID": "client-1.apps.googleusercontent.com",
            "GOOGLE_CLIENT_SECRET": "client-secret",
            "GOOGLE_REFRESH_TOKEN": "refresh-env",
            "GOOGLE_CALENDAR_API_BASE": self.google.api_base,
            "GOOGLE_OAUTH_TOKEN_URI": self.google.token_uri,
            "GOOGLE_OAUTH_AUTH_URI": self.google.auth_uri,
            "FAL_KEY": "fal-local-key",
            "FAL_QUEUE_BASE": fal + "/",
            "FAL_JWKS_URL": fal + "/.well-known/jwks.json",
            "CATALOG_FILE": str(ROOT / "catalog.toml"),  # it has the [[styles]] previews need
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRET": "whsec_local",
            "STRIPE_API_BASE": self._bases["stripe"],
            "N8N_BASE_URL": self._bases["n8n"],
            "N8N_WEBHOOK_SECRET": "n8n-local-secret",
            "N8N_API_KEY": self.n8n.api_key,
            "TWENTY_BASE_URL": self._bases["twenty"],
            "TWENTY_API_KEY": self.twenty.api_key,
            "TWENTY_WEBHOOK_SECRET": "twenty-local-secret",
            "S3_BUCKET": "cheshire-media",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_ENDPOINT_URL_S3": self._bases["s3"],
            "SMTP_URL": self.smtp.url(),
            "SMTP_FROM": "cheshire@example.com",
            "ADMIN_EMAIL": "kimmie@example.com",
        }
