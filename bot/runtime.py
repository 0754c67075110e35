"""The composition root: the one place where the process is assembled and run.

`build_runtime(settings)` creates every long-lived object (database, job registry and worker, the
aiohttp app, the aiogram bot when configured) and wires the domains together; `run(settings)` upgrades
the database, starts the HTTP server, the workers and the bot in one event loop, and stops them
gracefully on SIGTERM/SIGINT. Nothing here runs at import time.

Each engineer adds their wiring in `_wire()` below, in the section marked for their domain, with a few
lines: build the adapter, store it on the `Runtime`, register job handlers, mount routes. Async
set-up that needs the network or the database (load the catalog, set the Telegram webhook) goes in
`rt.on_startup`; clean-up (close SDK clients) in `rt.on_shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.app import create_app, freeze_startup_heap
from channels.metrics import METRICS_KEY
from core.alerts import raise_alert
from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.metrics import Metrics
from core.ports import AdminNotifier, CalendarProvider, ChannelSender
from core.settings import Settings

if TYPE_CHECKING:
    from aiogram import Bot, Dispatcher

    from core.booking.api import BookingService

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

# Budget for a graceful stop; systemd's default TimeoutStopSec is 90 s, our promise is 10 s.
STOP_WORKERS_S = 6.0
STOP_HTTP_S = 2.0
STOP_TOTAL_S = 9.0


@dataclass
class Runtime:
    """Everything the process holds. Built by `build_runtime`, run by `run`."""

    settings: Settings
    db: Database
    registry: JobRegistry
    worker: Worker
    app: web.Application
    # Channel value ("telegram", "messenger", "instagram", "web") -> its sender (core/delivery.py).
    senders: dict[str, ChannelSender] = field(default_factory=dict)
    notifier: AdminNotifier | None = None
    booking: BookingService | None = None
    calendar: CalendarProvider | None = None
    # The aiogram bot and dispatcher, None when TELEGRAM_BOT_TOKEN is not set.
    bot: Bot | None = None
    dispatcher: Dispatcher | None = None
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)
    # Anything else a domain needs to share, by name (prefer a typed field above when it is core).
    extras: dict[str, Any] = field(default_factory=dict)


def build_runtime(settings: Settings) -> Runtime:
    db = Database(settings.database_url)
    registry = JobRegistry()
    metrics = Metrics()  # GET /metrics (channels/metrics.py); the worker counts job outcomes in it
    worker = Worker(
        db,
        registry,
        WorkerConfig(
            concurrency=settings.job_workers,
            poll_interval_s=settings.job_poll_interval_s,
            lease_s=settings.job_lease_s,
        ),
        on_outcome=metrics.job_outcome,
    )
    rt = Runtime(
        settings=settings,
        db=db,
        registry=registry,
        worker=worker,
        app=create_app(settings, db, metrics),
    )
    if settings.telegram_mode != "off":
        rt.bot, rt.dispatcher = _build_telegram(settings)
    registry.dead_listeners.append(_alert_on_dead_job(db))
    _wire(rt)
    return rt


def _wire(rt: Runtime) -> None:
    """Each domain's wiring, in dependency order. Keep every section to a few lines, and import a
    vendor SDK only when its integration is configured (start-up time and memory are measured)."""

    # --- Booking + calendar (ENG-C, issue 4) ---------------------------------------------------
    from channels.oauth import setup_routes as setup_oauth_routes
    from core.booking.catalog import apply_catalog_file
    from core.booking.jobs import register_jobs as register_booking_jobs
    from core.booking.service import DefaultBookingService
    from core.calendar import is_configured as calendar_configured

    google = None
    if calendar_configured(rt.settings):
        from core.calendar.google import GoogleCalendarProvider  # loads the Google SDK only then

        rt.calendar = google = GoogleCalendarProvider(rt.settings)
    booking = DefaultBookingService(rt.settings, rt.calendar)
    rt.booking = booking
    register_booking_jobs(rt.registry, db=rt.db, settings=rt.settings, calendar=rt.calendar, booking=booking)
    setup_oauth_routes(rt.app, db=rt.db, settings=rt.settings, calendar=google)

    async def _load_catalog() -> None:  # catalog.toml -> DB (when the file changed); stored Google token
        async with rt.db.transaction() as session:
            await apply_catalog_file(session, rt.settings.catalog_file)
            if google is not None:
                await google.load_stored_credentials(session)
        if google is not None:
            google.start_warming()  # freeBusy fetched outside transactions, before searches need it
            if not google.connected:
                from core.calendar.oauth import start_link

                log.warning("Google Calendar not connected; open within 30 min: %s", start_link(rt.settings))

    rt.on_startup.insert(0, _load_catalog)
    if google is not None:
        rt.on_shutdown.append(google.stop_warming)

    # --- Kimmie's notifications by e-mail when Telegram cannot take them (ADMIN_EMAIL + SMTP_URL) ---
    from bot.notify_jobs import wire_email_fallback

    notify_fallback = wire_email_fallback(rt)  # None (and a warning) without them

    # --- Telegram: senders, Kimmie's notifier, routers (ENG-E, issue 6) -----------------------
    # Telegram sender, dispatcher (FSM storage, routers), "notify_admin" (logging notifier when the
    # bot is off), POST /webhook/telegram in webhook mode, command menus + setWebhook at start-up.
    if rt.bot is not None:
        from bot.setup import wire_telegram

        wire_telegram(rt, fallback=notify_fallback)
    else:  # what wire_telegram does without a bot, without loading aiogram (~1 s, ~90 MB at start-up)
        from bot.notify_jobs import register_jobs as register_notify_jobs
        from core.notify import LoggingNotifier

        rt.notifier = LoggingNotifier()
        register_notify_jobs(rt.registry, notifier=rt.notifier, fallback=notify_fallback, telegram=False)

    # --- Channels: Meta + website chat, delivery job (ENG-D, issue 5) --------------------------
    from channels.meta.sender import MetaSenders
    from channels.meta.views import setup_routes as setup_meta_routes
    from channels.web.sender import WebSender
    from channels.web.views import setup_routes as setup_web_routes
    from core.delivery import register_jobs as register_delivery_jobs
    from core.profiles import register_jobs as register_profile_jobs

    meta = MetaSenders(rt.settings)  # a sender per configured token; HTTP session opened at start-up
    rt.senders.update(meta.senders)
    rt.senders["web"] = WebSender()
    rt.on_startup.append(meta.start)
    rt.on_shutdown.append(meta.close)
    setup_meta_routes(rt.app, db=rt.db, settings=rt.settings)  # + hardening middlewares, rate limiter
    setup_web_routes(rt.app, db=rt.db, settings=rt.settings)
    # rt.senders is read at each delivery, so senders wired in other sections are routes too.
    register_delivery_jobs(rt.registry, db=rt.db, senders=rt.senders, settings=rt.settings)
    # "fetch_profile": a new Messenger/Instagram customer's name, asked of the Graph API once.
    register_profile_jobs(rt.registry, db=rt.db, sources=meta.senders)

    # --- Conversation engine (ENG-B, issue 3) --------------------------------------------------
    # "process_message": Claude -> OpenAI -> offline responder, tools on rt.booking. Needs rt.booking
    # (wired in the booking section above); without it the jobs wait and die with "no handler".
    from core.conversation.engine import ConversationEngine
    from core.conversation.engine import register_jobs as register_conversation_jobs

    if rt.booking is not None:
        chat_model = None  # without API keys: offline responder only
        if rt.settings.anthropic_api_key or rt.settings.openai_api_key:
            # Imported only with a key: the SDKs cost seconds and ~60 MB at start-up.
            from core.llm.factory import build_chat_model, close_chat_model

            chat_model = build_chat_model(rt.settings)
            rt.on_shutdown.append(partial(close_chat_model, chat_model))
            if chat_model is not None:  # LLM calls by provider and outcome, for GET /metrics
                chat_model.on_call = rt.app[METRICS_KEY].llm_call
        engine = ConversationEngine(db=rt.db, settings=rt.settings, booking=rt.booking, model=chat_model)
        register_conversation_jobs(rt.registry, db=rt.db, engine=engine)
        rt.extras["conversation_engine"] = engine
    else:
        log.warning("no booking service wired: customer messages will not be answered")

    # --- Reaching customers outside Meta's 24-hour window: e-mail channel, Telegram link -------
    # Delivery falls back to a client's e-mail or Telegram identity when the window is closed.
    if rt.settings.smtp_url is not None:
        from channels.email.sender import EmailSender  # loads aiosmtplib only then

        rt.senders["email"] = EmailSender(rt.settings)
    engine_for_links = rt.extras.get("conversation_engine")
    if engine_for_links is not None and rt.bot is not None and rt.settings.telegram_bot_username:
        from bot.links import contact_links

        # The assistant's contact_options tool shares https://t.me/<bot>?start=<signed client token>.
        engine_for_links.toolbox.contact_links = partial(contact_links, rt.settings)
    elif rt.bot is not None:
        log.info("TELEGRAM_BOT_USERNAME is not set: customers are not offered a Telegram link")


def _build_telegram(settings: Settings) -> tuple[Bot, Dispatcher]:
    # Imported here: a process without a token never loads aiogram.
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    assert settings.telegram_bot_token is not None
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
        if settings.telegram_api_base
        else AiohttpSession()
    )
    bot = Bot(settings.telegram_bot_token.get_secret_value(), session=session)
    return bot, Dispatcher()


def _alert_on_dead_job(db: Database) -> Callable[[ClaimedJob, str], Awaitable[None]]:
    """Tell Kimmie once per job kind that jobs are dying (not once per job)."""

    async def on_dead(job: ClaimedJob, error: str) -> None:
        text = (
            f"A background job of kind '{job.kind}' failed for good (job {job.id}): {error[:300]}\n"
            "See `python -m core.jobs dead`; `python -m core.jobs retry <id>` runs one again."
        )
        async with db.transaction() as session:
            await raise_alert(session, f"job_dead:{job.kind}", text)

    return on_dead


# --- Running ----------------------------------------------------------------------------------------


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then shut down within ~10 s."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await upgrade_to_head(settings.database_url)
    rt = build_runtime(settings)
    _log_integrations(settings)

    runner = web.AppRunner(rt.app, access_log=None, shutdown_timeout=STOP_HTTP_S)
    polling: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        for hook in rt.on_startup:
            await hook()
        await web.TCPSite(runner, settings.host, settings.port).start()
        freeze_startup_heap()  # everything wired now lives as long as the process
        rt.worker.start()
        if _should_poll(rt):
            assert rt.bot is not None and rt.dispatcher is not None
            polling = asyncio.create_task(_poll(rt.dispatcher, rt.bot), name="telegram-polling")
        log.info(
            "cheshire started",
            extra={
                "listen": f"http://{settings.host}:{settings.port}",
                "database": rt.db.dialect,
                "telegram": settings.telegram_mode,
                "job_kinds": sorted(rt.registry.kinds),
            },
        )
        await stop.wait()
        log.info("stopping")
    finally:
        try:
            async with asyncio.timeout(STOP_TOTAL_S):
                await _shutdown(rt, runner, polling)
        except TimeoutError:
            log.error("shutdown did not finish in time; exiting anyway")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def _should_poll(rt: Runtime) -> bool:
    if rt.bot is None or rt.dispatcher is None or rt.settings.telegram_mode != "polling":
        return False
    if not rt.dispatcher.resolve_used_update_types():
        # Polling with no handlers would confirm (and so discard) every update Telegram holds.
        log.error("telegram: no handlers are wired, so the bot does not poll; updates wait at Telegram")
        return False
    return True


async def _poll(dispatcher: Dispatcher, bot: Bot) -> None:
    try:
        await dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    except asyncio.CancelledError:
        raise
    except Exception:
        # A revoked token or an unreachable API must not take the channels and workers down with it.
        log.exception("telegram polling stopped with an error; the rest of the service keeps running")


async def _shutdown(rt: Runtime, runner: web.AppRunner, polling: asyncio.Task[None] | None) -> None:
    if polling is not None and rt.dispatcher is not None:
        if not polling.done():
            with contextlib.suppress(RuntimeError):  # polling had not started yet
                await rt.dispatcher.stop_polling()
            polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
    # Stop claiming and finish/release in-flight jobs while HTTP drains; both still need the DB.
    await asyncio.gather(rt.worker.stop(timeout_s=STOP_WORKERS_S), runner.cleanup(), return_exceptions=True)
    for hook in reversed(rt.on_shutdown):
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook failed")
    if rt.bot is not None:
        with contextlib.suppress(Exception):
            await rt.bot.session.close()
    await rt.db.dispose()


def _log_integrations(settings: Settings) -> None:
    states = settings.integrations()
    enabled = sorted(name for name, on in states.items() if on)
    disabled = sorted(name for name, on in states.items() if not on)
    log.info(
        "integrations: enabled=%s disabled=%s",
        ",".join(enabled) or "none",
        ",".join(disabled) or "none",
    )
    if settings.telegram_mode == "off":
        log.info("telegram bot is off: TELEGRAM_BOT_TOKEN is not set")
    else:
        log.info("telegram bot runs in %s mode", settings.telegram_mode)
