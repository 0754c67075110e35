"""The composition root's parts: one small wiring function per domain (booking, payments, telegram,
notify, channels, conversation).

Each takes what it needs as explicit arguments and returns what it built in a small frozen dataclass,
with the async start-up and shutdown hooks it needs (load the catalog, set the Telegram webhook, close
an SDK client); `cheshire/runtime.py` calls them in dependency order and keeps the results. None of
them sees the whole runtime, so each domain's dependencies are visible in its signature, and nothing
is patched onto an object after it was built.

A vendor SDK is imported only when its integration is configured (start-up time and memory are
measured, and a test checks that an empty environment loads none). The heaviest are not imported
before /healthz answers even then: aiogram (~3 s, ~170 MB) is built by `TelegramSection.build()`
afterwards, the LLM SDKs are loaded by the conversation section's warm-up (cheshire/runtime.py).
The composition root never names an aiogram type (tests/test_import_rules.py): the Telegram
section's objects come in bot/wiring.py's `TelegramWiring`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.conversation.tools import ContactLinks
from core.db.database import Database
from core.db.leader import one_process_at_a_time
from core.deferred import Deferred, DeferredNotifier, DeferredSender, deferred_fetcher
from core.events import FollowUps
from core.jobs.worker import JobRegistry
from core.notify.jobs import ADMIN_EMAIL_JOB, EmailFallback
from core.ports import AdminNotifier, CalendarProvider, ChannelSender
from core.reach import ReachPolicy
from core.settings import Settings

PhotoFetcher = Callable[[Mapping[str, Any]], Awaitable[bytes]]  # as core/previews/service.py's

if TYPE_CHECKING:
    from bot.deferred import WebhookHandler
    from bot.wiring import TelegramWiring
    from core.booking.service import DefaultBookingService
    from core.conversation.engine import ConversationEngine
    from core.payments.service import Payments
    from core.previews.service import Previews

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
# A warm-up step run after /healthz answers: loads what start-up left out; integration name -> works.
WarmUpStep = Callable[[], Awaitable[Mapping[str, bool]]]


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
    from core.booking.jobs import queue_calendar_backfill
    from core.booking.jobs import register_jobs as register_booking_jobs
    from core.booking.service import DefaultBookingService
    from core.calendar import is_configured as calendar_configured

    google = None
    if calendar_configured(settings):
        from core.calendar.google import GoogleCalendarProvider  # loads the Google SDK only then

        google = GoogleCalendarProvider(settings)
    booking = DefaultBookingService(settings, google, reach=reach_policy(settings))
    register_booking_jobs(registry, db=db, settings=settings, calendar=google, booking=booking)
    setup_oauth_routes(app, db=db, settings=settings, calendar=google)

    async def load_catalog() -> None:  # catalog.toml -> DB (when the file changed); stored Google token
        async with db.transaction() as session:
            # Processes starting together would both insert the services (a unique violation).
            await one_process_at_a_time(session, "catalog")
            await apply_catalog_file(session, settings.catalog_file)
            if google is not None:
                await google.load_stored_credentials(session)
                if google.connected:  # credentials from the environment: events missed before them
                    await queue_calendar_backfill(session, reason="startup")
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


def reach_policy(settings: Settings) -> ReachPolicy:
    """Which channels can carry a reminder (core/reach.py), from what is configured: a channel
    counts only with its sender; Messenger past its window only with utility messages."""
    from core.reach import WINDOW_S

    configured = {
        "telegram": settings.telegram_bot_token is not None,
        "email": settings.smtp_url is not None,
        "messenger": settings.facebook_page_access_token is not None,
        "instagram": settings.instagram_access_token is not None,
    }
    return ReachPolicy(
        pushable=frozenset(channel for channel, on in configured.items() if on),
        windows={"messenger": WINDOW_S, "instagram": WINDOW_S},
        templates=frozenset({"messenger"}) if settings.meta_utility_messages else frozenset(),
    )


# --- Payments: Stripe deposits (core/payments/) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentsWiring:
    payments: Payments
    warm_up: tuple[WarmUpStep, ...]
    on_shutdown: tuple[Hook, ...]


def wire_payments(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    subscribers: FollowUps,
) -> PaymentsWiring:
    """Deposits on the booking events (one subscription per event), their jobs, POST /webhook/stripe
    and the pages Checkout returns to. The stripe SDK is loaded only with STRIPE_SECRET_KEY and
    STRIPE_WEBHOOK_SECRET; without them no deposit is asked for (the card says so) and the webhook
    answers 400 to everything."""
    from channels.payments import CANCEL_PATH, SUCCESS_PATH
    from channels.payments import setup_routes as setup_payment_routes
    from core.payments.gateway import PaymentGateway, SignatureError
    from core.payments.service import PaymentPages, Payments

    gateway: PaymentGateway | None = None
    warm_up: tuple[WarmUpStep, ...] = ()  # the SDK is loaded after /healthz answers
    if settings.stripe_enabled:
        from core.payments.stripe_adapter import StripeGateway  # loads the stripe SDK only then

        stripe_gateway = StripeGateway(settings)
        gateway = stripe_gateway
        warm_up = (warm_up_step("stripe", stripe_gateway.warm_up),)
    elif settings.stripe_secret_key or settings.stripe_webhook_secret:
        log.warning("Stripe needs both STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET: deposits are off")
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    payments = Payments(
        db=db,
        gateway=gateway,
        pages=PaymentPages(success_url=base + SUCCESS_PATH, cancel_url=base + CANCEL_PATH),
        currency=settings.stripe_currency,
        tz=settings.tz,
    )
    payments.subscribe(subscribers)
    payments.register_jobs(registry)

    def refuse(raw: bytes, signature: str | None) -> Mapping[str, Any]:
        del raw, signature
        raise SignatureError("Stripe is not configured")

    setup_payment_routes(app, db=db, verify=gateway.verify_event if gateway is not None else refuse)
    return PaymentsWiring(
        payments=payments, warm_up=warm_up, on_shutdown=(gateway.close,) if gateway is not None else ()
    )


def warm_up_step(integration: str, load: Hook) -> WarmUpStep:
    """A warm-up step that loads one integration's SDK; it counts as working when that succeeded."""

    async def step() -> Mapping[str, bool]:
        try:
            await load()
        except Exception:
            log.exception("%s's SDK could not be loaded: %s is off", integration, integration)
            return {integration: False}
        return {integration: True}

    return step


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


@dataclass(frozen=True, slots=True)
class TelegramSection:
    """The Telegram section, built in two steps because importing aiogram takes seconds and ~170 MB:
    what the rest of the process is handed at construction exists from the start (a sender, Kimmie's
    notifier, a photo fetcher and the webhook route, each awaiting `bot` with a bound: core/deferred.py),
    and `build()` makes the bot itself once /healthz answers (cheshire/runtime.py) and resolves `bot`."""

    settings: Settings
    db: Database
    booking: DefaultBookingService
    bot: Deferred[TelegramWiring]
    sender: ChannelSender
    notifier: AdminNotifier
    fetch_photo: PhotoFetcher

    async def build(self) -> TelegramWiring:
        """Import aiogram in a thread (the event loop keeps answering between its time slices), build
        the bot, resolve `bot`. When that fails, `bot` fails too: its waiters hear it at once."""
        try:
            wire_the_bot = await asyncio.to_thread(_load_bot_wiring)
            wiring = wire_the_bot(settings=self.settings, db=self.db, booking=self.booking)
        except Exception as exc:
            self.bot.fail(f"{type(exc).__name__}: {exc}")
            raise
        self.bot.resolve(wiring)
        return wiring

    async def close(self) -> None:
        """The built bot's shutdown hooks (FSM storage, send limiter), then its HTTP session: last,
        because other shutdown hooks may still call Telegram."""
        wiring = self.bot.value
        if wiring is None:
            return
        for hook in reversed(wiring.on_shutdown):
            try:
                await hook()
            except Exception:
                log.exception("telegram shutdown hook failed")
        await wiring.close()


def _load_bot_wiring() -> Callable[..., TelegramWiring]:
    from bot.wiring import wire_telegram  # aiogram and every Telegram module: seconds of CPU

    return wire_telegram


def wire_telegram(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    booking: DefaultBookingService,
) -> TelegramSection | None:
    """None without TELEGRAM_BOT_TOKEN. Otherwise the section before its bot exists: the stand-ins,
    the pruning job and, in webhook mode, POST /webhook/telegram (the router is frozen once the
    server runs); aiogram is not imported here."""
    if settings.telegram_mode == "off":
        return None
    from bot.deferred import TELEGRAM_CAPABILITIES, mount_webhook
    from bot.processed_updates import register_prune_job

    bot: Deferred[TelegramWiring] = Deferred("the Telegram bot")
    register_prune_job(registry, db=db)
    if settings.telegram_mode == "webhook":
        mount_webhook(app, settings, bot, _webhook_of)
    return TelegramSection(
        settings=settings,
        db=db,
        booking=booking,
        bot=bot,
        sender=DeferredSender(bot, _sender_of, capabilities=TELEGRAM_CAPABILITIES),
        notifier=DeferredNotifier(bot, _notifier_of),
        fetch_photo=deferred_fetcher(bot, _fetcher_of),
    )


def _sender_of(wiring: TelegramWiring) -> ChannelSender:
    return wiring.sender


def _notifier_of(wiring: TelegramWiring) -> AdminNotifier:
    return wiring.notifier


def _fetcher_of(wiring: TelegramWiring) -> PhotoFetcher:
    return wiring.sender.fetch_photo


def _webhook_of(wiring: TelegramWiring) -> WebhookHandler:
    assert wiring.webhook is not None  # built in webhook mode, the only mode that mounts the route
    return wiring.webhook


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
    app: web.Application | None = None,
) -> NotifyWiring:
    """ "notify_admin" through the Telegram notifier, or the logging one when the bot is off
    (core/notify/log_notifier.py); "notify_admin_email" with ADMIN_EMAIL and SMTP_URL."""
    from core.notify.jobs import register_jobs as register_notify_jobs
    from core.notify.log_notifier import LoggingNotifier

    fallback = wire_email_fallback(settings=settings, db=db, registry=registry, booking=booking, app=app)
    notifier = telegram_notifier if telegram_notifier is not None else LoggingNotifier()
    register_notify_jobs(
        registry, notifier=notifier, fallback=fallback, telegram=telegram_notifier is not None
    )
    return NotifyWiring(notifier=notifier, email_fallback=fallback)


def wire_email_fallback(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    booking: DefaultBookingService,
    app: web.Application | None = None,
) -> EmailFallback | None:
    """Register "notify_admin_email" when ADMIN_EMAIL and SMTP_URL are set, and say at start-up
    either way whether Kimmie's notifications have a fallback. With PUBLIC_BASE_URL (and `app`) its
    request mails carry one-time Approve / Decline links to GET/POST /kimmie/decide."""
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
    if app is not None and settings.public_base_url:
        from channels.email.decide_page import setup_routes as setup_decide_routes

        setup_decide_routes(app, db=db, settings=settings, booking=booking)
    log.info("Kimmie's notifications fall back to e-mail (ADMIN_EMAIL) when Telegram cannot take them")
    return EmailFallback(db, telegram_timeout_s=settings.job_lease_s * 0.5)


# --- Channels: Meta, website chat, e-mail; the delivery job ---------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelsWiring:
    # Channel value ("telegram", "messenger", "instagram", "web", "email") -> its sender.
    senders: Mapping[str, ChannelSender]
    # Channel value -> how to fetch a customer's image attachment (Messenger, Instagram).
    photo_fetchers: Mapping[str, PhotoFetcher]
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
    from core.storage import media_storage

    # A sender per configured token; HTTP session opened at start-up. Images without a public URL
    # (local storage, no PUBLIC_BASE_URL) are uploaded from the media storage.
    meta = MetaSenders(settings, storage=media_storage(settings))
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
    fetchers = {channel: meta.fetch_photo for channel in meta.senders}
    return ChannelsWiring(
        senders=senders, photo_fetchers=fetchers, on_startup=(meta.start,), on_shutdown=(meta.close,)
    )


# --- Looking Glass previews (FAL) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreviewsWiring:
    previews: Previews | None  # None: FAL_KEY not set (or no styles); no buttons, no tool, no routes
    on_shutdown: tuple[Hook, ...]


def wire_previews(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    photo_fetchers: Mapping[str, PhotoFetcher],
) -> PreviewsWiring:
    """The preview service and its jobs, the web chat's photo upload, /media links (local storage)
    and POST /webhook/fal; fal_client is imported only with FAL_KEY."""
    if settings.fal_ai_key is None:
        log.info("Looking Glass previews are off: FAL_KEY is not set")
        return PreviewsWiring(previews=None, on_shutdown=())
    from core.previews.styles import load_styles

    styles = load_styles(settings.catalog_file)
    if not styles:
        log.warning("Looking Glass previews are off: %s has no [[styles]]", settings.catalog_file)
        return PreviewsWiring(previews=None, on_shutdown=())
    from channels.fal_webhook import setup_routes as setup_fal_routes
    from channels.web.photos import setup_routes as setup_photo_routes
    from core.previews.fal import FalEditor  # loads fal_client only now
    from core.previews.service import Previews
    from core.storage import media_storage

    editor = FalEditor(
        key=settings.fal_ai_key,
        model=settings.fal_model,
        queue_base=settings.fal_queue_base,
        jwks_url=settings.fal_jwks_url,
    )
    storage = media_storage(settings)
    previews = Previews(
        db=db, settings=settings, storage=storage, editor=editor, styles=styles, fetchers=photo_fetchers
    )
    previews.register(registry)
    setup_photo_routes(app, db=db, settings=settings, storage=storage)
    setup_fal_routes(app, settings=settings, previews=previews)
    log.info(
        "Looking Glass previews are on: %s, %d styles, photos in %s",
        settings.fal_model,
        len(styles),
        "S3" if settings.s3_bucket else settings.media_dir,
    )
    return PreviewsWiring(previews=previews, on_shutdown=(editor.close,))


# --- Conversation engine --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationWiring:
    engine: ConversationEngine
    warm_up: tuple[WarmUpStep, ...]
    on_shutdown: tuple[Hook, ...]


def wire_conversation(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    booking: DefaultBookingService,
    on_llm_call: Callable[[str, str], None] | None,
    contact_links: ContactLinks | None,
    previews: Previews | None = None,
) -> ConversationWiring:
    """ "process_message": Claude -> OpenAI -> offline responder, tools on `booking`. `on_llm_call`
    counts LLM calls by provider and outcome (GET /metrics); `contact_links` lets the assistant share
    a Telegram link (None: not offered)."""
    from core.conversation.engine import ConversationEngine
    from core.conversation.engine import register_jobs as register_conversation_jobs

    chat_model = None  # without API keys: offline responder only
    warm_up: tuple[WarmUpStep, ...] = ()
    on_shutdown: tuple[Hook, ...] = ()
    if settings.anthropic_api_key or settings.openai_api_key:
        # The SDKs (seconds, ~150 MB together) are loaded by the warm-up, after /healthz answers.
        from core.llm.factory import build_chat_model, close_chat_model, warm_up_chat_model

        chat_model = build_chat_model(settings, on_call=on_llm_call)
        warm_up = (partial(warm_up_chat_model, chat_model),)
        on_shutdown = (partial(close_chat_model, chat_model),)
    engine = ConversationEngine(
        db=db,
        settings=settings,
        booking=booking,
        model=chat_model,
        contact_links=contact_links,
        reach=booking.reach,
        previews=previews,
    )
    register_conversation_jobs(registry, db=db, engine=engine)
    return ConversationWiring(engine=engine, warm_up=warm_up, on_shutdown=on_shutdown)


# --- Outbound integrations: n8n events, Twenty CRM ---------------------------------------------


@dataclass(frozen=True, slots=True)
class IntegrationsWiring:
    enabled: tuple[str, ...]
    on_startup: tuple[Hook, ...]
    on_shutdown: tuple[Hook, ...]


def wire_integrations(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    app: web.Application,
    subscribers: FollowUps,
    on_call: Callable[[str, str], None],
) -> IntegrationsWiring:
    """n8n (N8N_BASE_URL + N8N_WEBHOOK_SECRET) and Twenty (TWENTY_BASE_URL + TWENTY_API_KEY): each
    subscribes to the events and registers its jobs; httpx and the adapters load only then.
    `on_call` counts their calls by outcome (GET /metrics)."""
    enabled: list[str] = []
    startup: list[Hook] = []
    shutdown: list[Hook] = []
    if settings.n8n_base_url is not None and settings.n8n_webhook_secret is None:
        log.warning("N8N_BASE_URL is set without N8N_WEBHOOK_SECRET: no events are sent to n8n")
    if settings.integrations()["n8n"]:
        from core.integrations import n8n

        client = n8n.N8nClient(settings)
        n8n.subscribe(subscribers, settings)
        n8n.register_jobs(registry, db=db, client=client, on_call=on_call)
        enabled.append("n8n")
        checking = n8n.StartupCheck(client)
        startup.append(checking.start)
        shutdown += [client.close, checking.stop]  # run in reverse: the check stops first
    if settings.integrations()["twenty"]:
        from core.integrations import twenty

        crm = twenty.TwentyClient(settings)
        twenty.subscribe(subscribers)
        twenty.register_jobs(registry, db=db, client=crm, settings=settings, on_call=on_call)
        enabled.append("twenty")
        shutdown.append(crm.close)
    if settings.twenty_webhook_secret is not None:  # Twenty's edits read back (POST /webhook/twenty)
        from channels.twenty import setup_routes as setup_twenty_routes

        setup_twenty_routes(app, db=db, secret=settings.twenty_webhook_secret)
    return IntegrationsWiring(enabled=tuple(enabled), on_startup=tuple(startup), on_shutdown=tuple(shutdown))


def telegram_contact_links(settings: Settings, telegram: TelegramSection | None) -> ContactLinks | None:
    """The assistant's contact_options tool shares https://t.me/<bot>?start=<signed client token>,
    with the bot and TELEGRAM_BOT_USERNAME."""
    if telegram is None:
        return None
    if not settings.telegram_bot_username:
        log.info("TELEGRAM_BOT_USERNAME is not set: customers are not offered a Telegram link")
        return None
    from bot.links import contact_links

    return partial(contact_links, settings)
