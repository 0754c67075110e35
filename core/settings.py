"""Typed settings, read from the environment and an optional `.env`.

Built once in the entry point (`Settings.load()`) and passed down; nothing here runs at import.
Every secret is a `SecretStr` so it never shows in `repr`, logs or tracebacks.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import time
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./var/cheshire.sqlite3"
DEFAULT_CORS_ORIGINS = (
    "https://www.lookingglassgroomery.com",
    "https://lookingglassgroomery.com",
    "http://localhost:3000",
)
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
# One address, syntax only (whether the mailbox exists, the SMTP server says).
_EMAIL = re.compile(r"^[^@\s<>(),;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
# The Stripe API version stripe-python 16.1.0 pins (its stripe/_api_version.py). Kept here as text
# so settings never import the SDK; a test checks the two agree.
STRIPE_SDK_API_VERSION = "2026-10-28.endive"
# Values people paste from templates; refused outside development.
_TELEGRAM_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{1,200}$")
# TELEGRAM_MODE as configured; "off" is only ever the outcome (no token), never a choice.
TELEGRAM_MODES = ("auto", "polling", "webhook", "off")
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "changethis", "xxx", "your-key-here", "secret"})


class SettingsError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # `FOO=` (a blank line copied from .env.example) means "not set", not "set to empty".
        env_ignore_empty=True,
    )

    # --- Application -------------------------------------------------------------------------
    environment: str = Field("development", validation_alias=AliasChoices("ENVIRONMENT", "NODE_ENV"))
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_base_url: str | None = None
    next_public_app_url: str = "https://throughthelookingglass.pet"
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON when stdout is not a terminal
    business_name: str = "Looking Glass Groomery"
    business_timezone: str = "America/New_York"
    business_address: str = ""
    business_phone: str = ""
    # The assistant's persona and the groomer it works for, as customers see them.
    assistant_name: str = "Cheshire"
    groomer_name: str = "Kimmie"
    catalog_file: str = "catalog.toml"
    # Bearer token for GET /metrics (Prometheus); unset: the endpoint does not exist (404).
    metrics_token: SecretStr | None = None

    # --- Database / cache --------------------------------------------------------------------
    database_url: str = DEFAULT_SQLITE_URL
    redis_url: str | None = None

    # --- Jobs ---------------------------------------------------------------------------------
    job_workers: int = Field(2, ge=0, le=64)
    job_poll_interval_s: float = Field(0.5, gt=0)
    job_lease_s: float = Field(60.0, gt=0)
    # Worker heartbeats: a killed process's jobs run elsewhere after about 3 beats (0 = off).
    job_heartbeat_s: float = Field(2.0, ge=0)
    # The longest one job may run; its lease is extended by the heartbeat meanwhile.
    job_max_run_s: float = Field(300.0, gt=0)
    # Retention (core/jobs/retention.py, the hourly `prune` job). Done and cancelled jobs, and the
    # de-duplication keys of inbound events, are kept this many days; dead jobs (what an operator
    # looks at) JOB_DEAD_RETENTION_DAYS; message bodies the conversation memory has folded into
    # its summary, MESSAGE_RETENTION_DAYS.
    job_retention_days: float = Field(7.0, gt=0)
    job_dead_retention_days: float = Field(30.0, gt=0)
    message_retention_days: float = Field(30.0, gt=0)

    # --- LLM -----------------------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = None
    anthropic_model: str = "claude-sonnet-4-6"
    anthropic_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    # gpt-4-turbo-preview is shut down and gpt-4.1 shuts down 2027-01-14; gpt-6.1-sol is the current
    # mid-tier model (chat completions + tools). OPENAI_REASONING_EFFORT=off for non-reasoning models.
    openai_model: str = "gpt-6.1-sol"
    openai_reasoning_effort: str | None = "low"
    openai_base_url: str | None = None
    llm_turn_deadline_s: float = Field(30.0, gt=0)
    llm_max_tool_rounds: int = Field(6, ge=1, le=20)
    llm_max_retries: int = Field(1, ge=0, le=5)
    llm_max_output_tokens: int = Field(1024, ge=64)
    takeover_idle_hours: float = Field(12.0, gt=0)

    # --- Image generation -------------------------------------------------------------------
    # Looking Glass previews (core/previews/). FAL_KEY; FAL_AI_KEY is the old system's name, still read.
    fal_ai_key: SecretStr | None = Field(None, validation_alias=AliasChoices("FAL_KEY", "FAL_AI_KEY"))
    # An image-edit model that takes the customer's photo (`image_urls`); $0.08 per 1K image (fal docs).
    fal_model: str = "fal-ai/nano-banana-2/edit"
    fal_price_per_image_usd: float = Field(0.08, ge=0)
    # The queue host, e.g. http://127.0.0.1:P/ for a local fake; None: https://queue.fal.run/.
    fal_queue_base: str | None = None
    # FAL's webhook signing keys (Ed25519 JWKS), cached for a day.
    fal_jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    fal_poll_timeout_s: float = Field(600.0, gt=0)  # a job still unfinished after this ends dead
    preview_daily_limit: int = Field(3, ge=0)  # preview requests per client per local day (3 angles: one)
    preview_monthly_budget_usd: float = Field(50.0, ge=0)
    preview_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)  # an uploaded or fetched photo
    # Photos and previews without S3_BUCKET are files here, served by signed /media/... links.
    media_dir: str = "var/media"
    # Key for signing short-lived /media/... links (local storage); None: derived from FAL_KEY.
    media_signing_secret: SecretStr | None = None

    # --- Telegram ----------------------------------------------------------------------------
    telegram_bot_token: SecretStr | None = None
    # auto: webhook when PUBLIC_BASE_URL is set, else polling. polling keeps polling even with
    # PUBLIC_BASE_URL (which then serves only the Calendar OAuth link and the pages). After loading,
    # this holds the mode in effect: "off" (no token), "polling" or "webhook".
    telegram_mode: str = "auto"
    telegram_kimmie_chat_id: int | None = None
    telegram_admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    telegram_webhook_secret: SecretStr | None = None
    telegram_api_base: str | None = None
    # The bot's @username (without @): customers on Instagram/Messenger are offered a t.me link that
    # ties their Telegram to their record. Unset: no link is offered.
    telegram_bot_username: str | None = None

    # --- Meta (Messenger + Instagram) -----------------------------------------------------
    meta_app_secret: SecretStr | None = None
    instagram_app_secret: SecretStr | None = None
    meta_allow_unsigned: bool = False  # development only: accept unsigned webhook POSTs
    facebook_page_access_token: SecretStr | None = None
    facebook_verify_token: SecretStr | None = None
    instagram_access_token: SecretStr | None = None
    instagram_verify_token: SecretStr | None = None
    meta_graph_api_base: str = "https://graph.facebook.com"
    meta_graph_api_version: str = "v23.0"
    # Instagram Login tokens are served by https://graph.instagram.com; None: meta_graph_api_base.
    instagram_graph_api_base: str | None = None
    meta_send_timeout_s: float = Field(10.0, gt=0)
    # Kimmie's own replies between 24 h and 7 days after the customer's last message are sent with
    # Meta's HUMAN_AGENT tag. Needs the Human Agent permission (Meta App Review) for the app.
    meta_human_agent_tag: bool = False
    # Reminders past Messenger's 24 h window go out as a utility message template (appointment
    # update): needs the `page_utility_messaging` permission and an approved Page template with that
    # name whose body takes {{1}} the dog(s), {{2}} the service, {{3}} the day and time, and whose
    # buttons are postbacks (Confirm, Reschedule, Cancel).
    meta_utility_messages: bool = False
    meta_utility_template: str = Field("appointment_reminder", min_length=1, max_length=512)
    meta_utility_template_language: str = Field("en_US", min_length=2, max_length=15)
    tiktok_access_token: SecretStr | None = None  # named by the old system; no TikTok channel yet

    # --- Website chat ------------------------------------------------------------------------
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CORS_ORIGINS)
    )
    chat_sync_wait_s: float = Field(4.0, ge=0)
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(60, ge=1)  # per sender (web session, PSID/IGSID)
    chat_ip_rate_limit_per_minute: int = Field(120, ge=1)  # per client IP on /api/chat
    webhook_rate_limit_per_minute: int = Field(6000, ge=1)  # per client IP on /webhook/* (Meta batches)
    # Behind a proxy (Cloudflare tunnel) every peer is the proxy: read the client IP from this header,
    # believed only as far as TRUSTED_PROXIES wrote it (channels/client_ip.py).
    client_ip_header: str | None = None
    # CIDRs of the proxies whose forwarding header counts. Default: this host (cloudflared, a local
    # nginx); empty: trust none, the TCP peer is always the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_TRUSTED_PROXIES)
    )

    # --- Google Calendar -------------------------------------------------------------------
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_refresh_token: SecretStr | None = None
    google_calendar_id: str = "primary"
    google_service_account_email: str | None = None
    google_private_key: SecretStr | None = None
    google_calendar_api_base: str | None = None
    google_oauth_token_uri: str = "https://oauth2.googleapis.com/token"
    google_oauth_auth_uri: str = "https://accounts.google.com/o/oauth2/auth"
    calendar_timeout_s: float = Field(8.0, gt=0)
    calendar_cache_s: float = Field(60.0, ge=0)

    # --- Booking policy -----------------------------------------------------------------------
    booking_hold_hours: float = Field(24.0, gt=0)
    reminder_hours_before: float = Field(24.0, gt=0)
    # A website reminder counts as delivered once the widget fetched it; after this long unfetched,
    # it goes by e-mail, or onto Kimmie's daily list of reminders that could not reach the customer.
    reminder_fetch_wait_min: float = Field(60.0, gt=0)
    # The local hour of Kimmie's daily list (visits of the next 48 h whose reminder cannot arrive).
    reminder_digest_hour: int = Field(8, ge=0, le=23)
    rebooking_weeks: int = Field(6, ge=1)

    # --- Payments ------------------------------------------------------------------------------
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_publishable_key: str | None = Field(
        None, validation_alias=AliasChoices("STRIPE_PUBLISHABLE_KEY", "NEXT_PUBLIC_STRIPE_PUBLISHABLE_KEY")
    )
    # A local fake Stripe in tests (http allowed); None: Stripe's own https://api.stripe.com.
    stripe_api_base: str | None = None
    # The API version every request and the webhook endpoint use: the one stripe-python 16.1 targets
    # (stripe/_api_version.py; tests/payments check they agree). Change it with the SDK, not alone.
    stripe_api_version: str = STRIPE_SDK_API_VERSION
    stripe_currency: str = Field("usd", pattern=r"^[A-Za-z]{3}$")
    stripe_timeout_s: float = Field(20.0, gt=0)

    # --- Storage (S3) --------------------------------------------------------------------------
    s3_bucket: str | None = None
    s3_prefix: str = "cheshire/"
    aws_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_endpoint_url_s3: str | None = None

    # --- Automation / CRM / mail --------------------------------------------------------------
    # n8n (core/integrations/n8n.py): events are POSTed to {N8N_BASE_URL}/webhook/{N8N_WEBHOOK_PATH},
    # signed with N8N_WEBHOOK_SECRET; N8N_API_KEY only checks that the workflow exists and is active.
    n8n_api_key: SecretStr | None = None
    n8n_base_url: str | None = None
    n8n_webhook_path: str = "cheshire"
    n8n_webhook_secret: SecretStr | None = None
    # Event types sent ("booking.confirmed", "booking.*", "*"); empty: all of them.
    n8n_events: Annotated[list[str], NoDecode] = Field(default_factory=list)
    n8n_timeout_s: float = Field(10.0, gt=0)
    # Twenty CRM (core/integrations/twenty.py): people, notes/tasks or the pets/appointments objects.
    twenty_api_key: SecretStr | None = None
    twenty_base_url: str | None = None
    twenty_rest_prefix: str = "/rest"
    # Twenty's webhook to POST /webhook/twenty (name, e-mail, phone edits made in the CRM); unset: off.
    twenty_webhook_secret: SecretStr | None = None
    twenty_timeout_s: float = Field(10.0, gt=0)
    # smtp://user:pass@host:587 (STARTTLS when offered) or smtps://user:pass@host:465 (implicit TLS):
    # customers' e-mail channel (reminders outside Meta's 24-hour window) and alert e-mails.
    smtp_url: SecretStr | None = None
    # Sender address; None: the SMTP user when it is an address, else no-reply@<smtp host>.
    smtp_from: str | None = None
    smtp_timeout_s: float = Field(15.0, gt=0)
    # Kimmie's address: her notifications are e-mailed there (through SMTP_URL) when Telegram cannot
    # take them. ALERT_EMAIL_TO is the earlier name, still read.
    admin_email: str | None = Field(None, validation_alias=AliasChoices("ADMIN_EMAIL", "ALERT_EMAIL_TO"))

    # ----------------------------------------------------------------------------------------------
    @field_validator(
        "telegram_admin_ids", "cors_allowed_origins", "trusted_proxies", "n8n_events", mode="before"
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: not an IP network (CIDR): {cidr!r}") from None
        return value

    @field_validator("business_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone (use an IANA name such as America/New_York)") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # Operators paste plain URLs; map them to the async drivers we ship.
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value[len("postgresql://") :]
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:/// URL")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = urlsplit(value.get_secret_value())
            if url.scheme not in {"smtp", "smtps"} or not url.hostname:
                raise ValueError("must be smtp://user:password@host:port or smtps://...")
        return value

    @field_validator("admin_email")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _EMAIL.match(value):
            raise ValueError("must be one e-mail address, such as kimmie@example.com")
        return value

    @field_validator("telegram_bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # What @BotFather gives: "<digits>:<letters, digits, _ and ->". Anything else would only fail
        # later, inside aiogram, as a traceback the supervisor restarts forever.
        if value is not None and not _TELEGRAM_TOKEN.match(value.get_secret_value()):
            raise ValueError("malformed (expected <bot id>:<secret> as @BotFather gives it)")
        return value

    @field_validator("telegram_mode", mode="before")
    @classmethod
    def _known_mode(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
        if value not in TELEGRAM_MODES:
            raise ValueError("must be auto, polling or webhook")
        return value

    @field_validator("telegram_bot_username")
    @classmethod
    def _bare_username(cls, value: str | None) -> str | None:
        return value.strip().removeprefix("@") or None if value else value

    @field_validator("public_base_url", "n8n_base_url", "twenty_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("n8n_webhook_path")
    @classmethod
    def _bare_path(cls, value: str) -> str:
        value = value.strip().strip("/")
        if not value:
            raise ValueError("must be the webhook node's path, such as cheshire")
        return value

    @field_validator("twenty_rest_prefix")
    @classmethod
    def _rest_prefix(cls, value: str) -> str:
        return "/" + value.strip().strip("/")

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.is_production:
            for name, field in type(self).model_fields.items():
                secret = getattr(self, name)
                if isinstance(secret, SecretStr) and secret.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"{name.upper()} holds a placeholder value")
                del field
        self.telegram_mode = self._effective_telegram_mode()
        if self.telegram_mode == "webhook" and not self.telegram_webhook_secret:
            raise ValueError("TELEGRAM_WEBHOOK_SECRET is required when Telegram runs in webhook mode")
        return self

    def _effective_telegram_mode(self) -> str:
        if not self.telegram_bot_token:
            return "off"
        if self.telegram_mode == "auto":
            return "webhook" if self.public_base_url else "polling"
        if self.telegram_mode == "webhook" and not self.public_base_url:
            raise ValueError("TELEGRAM_MODE=webhook needs PUBLIC_BASE_URL (where Telegram posts updates)")
        return self.telegram_mode

    # --- Derived -------------------------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.environment.lower() in {"production", "prod"}

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.business_timezone)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def admin_chat_ids(self) -> frozenset[int]:
        ids = set(self.telegram_admin_ids)
        if self.telegram_kimmie_chat_id is not None:
            ids.add(self.telegram_kimmie_chat_id)
        return frozenset(ids)

    @property
    def stripe_enabled(self) -> bool:
        return self.stripe_secret_key is not None and self.stripe_webhook_secret is not None

    def integrations(self) -> dict[str, bool]:
        """Which integrations are configured (and so wired); printed at start-up."""
        return {
            "claude": self.anthropic_api_key is not None,
            "openai": self.openai_api_key is not None,
            "telegram": self.telegram_bot_token is not None,
            "messenger": self.facebook_page_access_token is not None,
            "instagram": self.instagram_access_token is not None,
            # Reminders past Messenger's 24-hour window as utility templates (needs the Page token).
            "meta_utility_messages": (
                self.meta_utility_messages and self.facebook_page_access_token is not None
            ),
            "meta_signature": self.meta_app_secret is not None or self.instagram_app_secret is not None,
            "google_calendar": self.google_refresh_token is not None or self.google_private_key is not None,
            # Previews need the key and somewhere FAL can read the photo from (S3, PUBLIC_BASE_URL, or
            # a data URI: always), and the Pillow check of every photo (a dependency).
            "fal": self.fal_ai_key is not None,
            # Deposits need the key to ask and the webhook secret to hear back (or nothing is ever
            # marked paid): both, or Stripe is off and no deposit is asked for.
            "stripe": self.stripe_enabled,
            "s3": self.s3_bucket is not None,
            "redis": self.redis_url is not None,
            # Events are signed: without the secret n8n is not wired (a warning says so at start-up).
            "n8n": self.n8n_base_url is not None and self.n8n_webhook_secret is not None,
            "twenty": self.twenty_base_url is not None and self.twenty_api_key is not None,
            "email": self.smtp_url is not None,
        }

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Build settings, turning validation errors into one line per bad variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        # Never echo the offending input: it may be a secret. Messages name the variable instead.
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where.upper()}: {message}" if where else message)
    return "invalid configuration: " + "; ".join(lines)


def parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))
