"""The composition root's parts: one small wiring function per domain (booking, telegram, notify,
channels, conversation).

Each takes what it needs as explicit arguments and returns what it built in a small frozen dataclass,
with the async start-up and shutdown hooks it needs (load the catalog, set the Telegram webhook, close
an SDK client); `cheshire/runtime.py` calls them in dependency order and keeps the results. None of
them sees the whole runtime, so each domain's dependencies are visible in its signature, and nothing
is patched onto an object after it was built.

A vendor SDK is imported only when its integration is configured (start-up time and memory are
measured, and a test checks that an empty environment loads none): aiogram alone costs ~1 s and
~90 MB. The composition root never names an aiogram type (tests/test_import_rules.py): the Telegram
section's objects come in bot/wiring.py's `TelegramWiring`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from core.conversation.tools import ContactLinks
from core.db.database import Database
from core.db.leader import one_process_at_a_time
from core.jobs.worker import JobRegistry
from core.notify.jobs import ADMIN_EMAIL_JOB, EmailFallback
from core.ports import AdminNotifier, CalendarProvider, ChannelSender
from core.settings import Settings

if TYPE_CHECKING:
    from bot.wiring import TelegramWiring
    from core.booking.service import DefaultBookingService
    from core.conversation.engine import ConversationEngine

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


# --- Booking + calendar ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookingWiring:
    service: DefaultBookingService
    calendar: CalendarProvider | None
    on_startup: tuple[Hook, ...]
    on_shutdown: tuple[Hook, ...]


def wire_booking(
    *, settings: Settings, db: Database, registry: JobRegistry, app: web.Application
) -> BookingWiring:
    """The booking service, its jobs, Google Calendar (when configured) and its OAuth routes."""
    from channels.oauth import setup_routes as setup_oauth_routes
    from core.booking.catalog import apply_catalog_file
    from core.booking.jobs import register_jobs as register_booking_jobs
    from core.booking.service import DefaultBookingService
    from core.calendar import is_configured as calendar_configured

    google = None
    if calendar_configured(settings):
        from core.calendar.google import GoogleCalendarProvider  # loads the Google SDK only then

        google = GoogleCalendarProvider(settings)
    booking = DefaultBookingService(settings, google)
    register_booking_jobs(registry, db=db, settings=settings, calendar=google, booking=booking)
    setup_oauth_routes(app, db=db, settings=settings, calendar=google)

    async def load_catalog() -> None:  # catalog.toml -> DB (when the file changed); stored Google token
        async with db.transaction() as session:
            # Processes starting together would both insert the services (a unique violation).
            await one_process_at_a_time(session, "catalog")
            await apply_catalog_file(session, settings.catalog_file)
            if google is not None:
                await google.load_stored_credentials(session)
        if google is not None:
            google.start_warming()  # freeBusy fetched outside transactions, before searches need it
            if not google.connected:
                from core.calendar.oauth import start_link

                log.warning("Google Calendar not connected; open within 30 min: %s", start_link(settings))

    return BookingWiring(
        service=booking,
        calendar=google,
        on_startup=(load_catalog,),
        on_shutdown=(google.stop_warming,) if google is not None else (),
    )


# --- The job queue's own upkeep: retention (core/jobs/retention.py) ---------------------------------


@dataclass(frozen=True, slots=True)
class JobsWiring:
    on_startup: tuple[Hook, ...]
    on_shutdown: tuple[Hook, ...]


def wire_jobs(*, settings: Settings, db: Database, registry: JobRegistry) -> JobsWiring:
    """The hourly `prune` job (JOB_RETENTION_DAYS, JOB_DEAD_RETENTION_DAYS, MESSAGE_RETENTION_DAYS)
    and the process's clock that queues it."""
    from core.jobs.retention import PruneSchedule, Retention, register_prune_job

    retention = Retention.of_days(
        jobs=settings.job_retention_days,
        dead_jobs=settings.job_dead_retention_days,
        messages=settings.message_retention_days,
    )
    register_prune_job(registry, db=db, retention=retention)
    schedule = PruneSchedule(db)
    return JobsWiring(on_startup=(schedule.start,), on_shutdown=(schedule.stop,))


# --- Telegram (the bot, its sender, Kimmie's notifier): bot/wiring.py -----------------------------


def wire_telegram(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    booking: DefaultBookingService,
) -> TelegramWiring | None:
    """None without TELEGRAM_BOT_TOKEN, and then aiogram is never imported."""
    if settings.telegram_mode == "off":
        return None
    from bot.wiring import wire_telegram as wire_the_bot

    return wire_the_bot(settings=settings, db=db, registry=registry, app=app, booking=booking)


# --- Kimmie's notifications: the "notify_admin" job and its e-mail fallback ----------------------


@dataclass(frozen=True, slots=True)
class NotifyWiring:
    notifier: AdminNotifier
    email_fallback: EmailFallback | None


def wire_notify(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    booking: DefaultBookingService,
    telegram_notifier: AdminNotifier | None,
) -> NotifyWiring:
    """ "notify_admin" through the Telegram notifier, or the logging one when the bot is off
    (core/notify/log_notifier.py); "notify_admin_email" with ADMIN_EMAIL and SMTP_URL."""
    from core.notify.jobs import register_jobs as register_notify_jobs
    from core.notify.log_notifier import LoggingNotifier

    fallback = wire_email_fallback(settings=settings, db=db, registry=registry, booking=booking)
    notifier = telegram_notifier if telegram_notifier is not None else LoggingNotifier()
    register_notify_jobs(
        registry, notifier=notifier, fallback=fallback, telegram=telegram_notifier is not None
    )
    return NotifyWiring(notifier=notifier, email_fallback=fallback)


def wire_email_fallback(
    *, settings: Settings, db: Database, registry: JobRegistry, booking: DefaultBookingService
) -> EmailFallback | None:
    """Register "notify_admin_email" when ADMIN_EMAIL and SMTP_URL are set, and say at start-up
    either way whether Kimmie's notifications have a fallback."""
    missing = [
        name
        for name, value in (("ADMIN_EMAIL", settings.admin_email), ("SMTP_URL", settings.smtp_url))
        if value is None
    ]
    if missing:
        log.warning(
            "Kimmie's notifications have no fallback (%s not set): one Telegram cannot take is only "
            "logged, its job ends dead",
            " and ".join(missing),
        )
        return None
    from channels.email.admin_mail import AdminMailer  # loads aiosmtplib only now

    mailer = AdminMailer(db=db, settings=settings, booking=booking)
    registry.register(ADMIN_EMAIL_JOB, mailer.handle)
    log.info("Kimmie's notifications fall back to e-mail (ADMIN_EMAIL) when Telegram cannot take them")
    return EmailFallback(db, telegram_timeout_s=settings.job_lease_s * 0.5)


# --- Channels: Meta, website chat, e-mail; the delivery job ---------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelsWiring:
    # Channel value ("telegram", "messenger", "instagram", "web", "email") -> its sender.
    senders: Mapping[str, ChannelSender]
    on_startup: tuple[Hook, ...]
    on_shutdown: tuple[Hook, ...]


def wire_channels(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    telegram: ChannelSender | None,
) -> ChannelsWiring:
    """Meta webhooks + senders, the website chat, the e-mail channel (with SMTP_URL), and the
    "deliver_message" and "fetch_profile" jobs over every sender (`telegram` included when wired)."""
    from channels.meta.sender import MetaSenders
    from channels.meta.views import setup_routes as setup_meta_routes
    from channels.web.sender import WebSender
    from channels.web.views import setup_routes as setup_web_routes
    from core.delivery import register_jobs as register_delivery_jobs
    from core.profiles import register_jobs as register_profile_jobs

    meta = MetaSenders(settings)  # a sender per configured token; HTTP session opened at start-up
    senders: dict[str, ChannelSender] = {**meta.senders, "web": WebSender()}
    if telegram is not None:
        senders["telegram"] = telegram
    if settings.smtp_url is not None:
        # Delivery falls back to a client's e-mail when Meta's window is closed.
        from channels.email.sender import EmailSender  # loads aiosmtplib only then

        senders["email"] = EmailSender(settings)
    setup_meta_routes(app, db=db, settings=settings)  # + hardening middlewares, rate limiter
    setup_web_routes(app, db=db, settings=settings)
    register_delivery_jobs(registry, db=db, senders=senders, settings=settings)
    # "fetch_profile": a new Messenger/Instagram customer's name, asked of the Graph API once.
    register_profile_jobs(registry, db=db, sources=meta.senders)
    return ChannelsWiring(senders=senders, on_startup=(meta.start,), on_shutdown=(meta.close,))


# --- Conversation engine --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationWiring:
    engine: ConversationEngine
    on_shutdown: tuple[Hook, ...]


def wire_conversation(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    booking: DefaultBookingService,
    on_llm_call: Callable[[str, str], None] | None,
    contact_links: ContactLinks | None,
) -> ConversationWiring:
    """ "process_message": Claude -> OpenAI -> offline responder, tools on `booking`. `on_llm_call`
    counts LLM calls by provider and outcome (GET /metrics); `contact_links` lets the assistant share
    a Telegram link (None: not offered)."""
    from core.conversation.engine import ConversationEngine
    from core.conversation.engine import register_jobs as register_conversation_jobs

    chat_model = None  # without API keys: offline responder only
    on_shutdown: tuple[Hook, ...] = ()
    if settings.anthropic_api_key or settings.openai_api_key:
        # Imported only with a key: the SDKs cost seconds and ~60 MB at start-up.
        from core.llm.factory import build_chat_model, close_chat_model

        chat_model = build_chat_model(settings, on_call=on_llm_call)
        on_shutdown = (partial(close_chat_model, chat_model),)
    engine = ConversationEngine(
        db=db, settings=settings, booking=booking, model=chat_model, contact_links=contact_links
    )
    register_conversation_jobs(registry, db=db, engine=engine)
    return ConversationWiring(engine=engine, on_shutdown=on_shutdown)


def telegram_contact_links(settings: Settings, telegram: TelegramWiring | None) -> ContactLinks | None:
    """The assistant's contact_options tool shares https://t.me/<bot>?start=<signed client token>,
    with the bot and TELEGRAM_BOT_USERNAME."""
    if telegram is None:
        return None
    if not settings.telegram_bot_username:
        log.info("TELEGRAM_BOT_USERNAME is not set: customers are not offered a Telegram link")
        return None
    from bot.links import contact_links

    return partial(contact_links, settings)
