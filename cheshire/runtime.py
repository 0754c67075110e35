"""The composition root: the one place where the process is assembled and run.

`build_runtime(settings)` creates the long-lived objects every domain shares (database, job registry
and worker, metrics, the aiohttp app) and calls each domain's wiring function (cheshire/wiring.py) in
dependency order; `run(settings)` upgrades the database, starts the HTTP server, the workers and the
bot in one event loop, and stops them gracefully on SIGTERM/SIGINT. Nothing here runs at import time.

Adapters (bot/, channels/) never import this package: they are handed what they need. Only the entry
point `python -m bot` (bot/__main__.py) does, to run it (tests/test_import_rules.py checks both).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from channels.app import create_app, freeze_startup_heap
from cheshire.wiring import (
    Hook,
    telegram_contact_links,
    wire_booking,
    wire_channels,
    wire_conversation,
    wire_integrations,
    wire_jobs,
    wire_notify,
    wire_payments,
    wire_previews,
    wire_telegram,
)
from core.alerts import raise_alert
from core.db.database import Database
from core.db.migrate import upgrade_to_head
from core.events import FollowUps
from core.events import register_jobs as register_event_jobs
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker, WorkerConfig
from core.metrics import Metrics
from core.ports import AdminNotifier, CalendarProvider, ChannelSender
from core.settings import Settings

if TYPE_CHECKING:
    from bot.wiring import TelegramWiring
    from core.booking.api import BookingService
    from core.conversation.engine import ConversationEngine

log = logging.getLogger(__name__)

# Budget for a graceful stop; systemd's default TimeoutStopSec is 90 s, our promise is 10 s.
STOP_WORKERS_S = 6.0
STOP_HTTP_S = 2.0
STOP_TOTAL_S = 9.0


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the process holds. Built by `build_runtime`, run by `run`."""

    settings: Settings
    db: Database
    registry: JobRegistry
    worker: Worker
    app: web.Application
    # Channel value ("telegram", "messenger", "instagram", "web", "email") -> its sender (core/delivery.py).
    senders: Mapping[str, ChannelSender]
    notifier: AdminNotifier
    booking: BookingService
    calendar: CalendarProvider | None
    engine: ConversationEngine
    # The bot, its dispatcher, sender and notifier; None when TELEGRAM_BOT_TOKEN is not set.
    telegram: TelegramWiring | None
    on_startup: tuple[Hook, ...]
    on_shutdown: tuple[Hook, ...]


def build_runtime(settings: Settings) -> Runtime:
    # The process's event subscribers: every unit of work carries them, so an event emitted anywhere
    # starts the integrations' jobs in its own transaction. Integrations subscribe in their wiring.
    subscribers = FollowUps()
    db = Database(settings.database_url, subscribers=subscribers)
    registry = JobRegistry()
    register_event_jobs(registry, db=db, subscribers=subscribers)
    metrics = Metrics()  # GET /metrics (channels/metrics.py); the worker counts job outcomes in it
    worker = Worker(
        db,
        registry,
        WorkerConfig(
            concurrency=settings.job_workers,
            poll_interval_s=settings.job_poll_interval_s,
            lease_s=settings.job_lease_s,
            heartbeat_s=settings.job_heartbeat_s,
            max_run_s=settings.job_max_run_s,
        ),
        on_outcome=metrics.job_outcome,
    )
    registry.dead_listeners.append(_alert_on_dead_job(db))
    jobs = wire_jobs(settings=settings, db=db, registry=registry)
    app = create_app(settings, db, metrics)
    booking = wire_booking(settings=settings, db=db, registry=registry, app=app)
    payments = wire_payments(settings=settings, db=db, registry=registry, app=app, subscribers=subscribers)
    telegram = wire_telegram(settings=settings, db=db, registry=registry, app=app, booking=booking.service)
    notify = wire_notify(
        settings=settings,
        db=db,
        registry=registry,
        booking=booking.service,
        telegram_notifier=telegram.notifier if telegram else None,
        app=app,
    )
    channels = wire_channels(
        settings=settings, db=db, registry=registry, app=app, telegram=telegram.sender if telegram else None
    )
    fetchers = dict(channels.photo_fetchers)
    if telegram is not None:
        fetchers["telegram"] = telegram.sender.fetch_photo
    previews = wire_previews(settings=settings, db=db, registry=registry, app=app, photo_fetchers=fetchers)
    conversation = wire_conversation(
        settings=settings,
        db=db,
        registry=registry,
        booking=booking.service,
        on_llm_call=metrics.llm_call,
        contact_links=telegram_contact_links(settings, telegram),
        previews=previews.previews,
    )
    integrations = wire_integrations(
        settings=settings,
        db=db,
        registry=registry,
        app=app,
        subscribers=subscribers,
        on_call=metrics.integration_call,
    )
    return Runtime(
        settings=settings,
        db=db,
        registry=registry,
        worker=worker,
        app=app,
        senders=channels.senders,
        notifier=notify.notifier,
        booking=booking.service,
        calendar=booking.calendar,
        engine=conversation.engine,
        telegram=telegram,
        # The catalog first: searches need it. Shutdown runs these in reverse.
        on_startup=(
            *booking.on_startup,
            *(telegram.on_startup if telegram else ()),
            *channels.on_startup,
            *integrations.on_startup,
            *jobs.on_startup,
        ),
        on_shutdown=(
            *integrations.on_shutdown,
            *booking.on_shutdown,
            *payments.on_shutdown,
            *(telegram.on_shutdown if telegram else ()),
            *channels.on_shutdown,
            *previews.on_shutdown,
            *conversation.on_shutdown,
            *jobs.on_shutdown,
        ),
    )


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
        if rt.telegram is not None:
            polling = rt.telegram.start_polling()
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


async def _shutdown(rt: Runtime, runner: web.AppRunner, polling: asyncio.Task[None] | None) -> None:
    if polling is not None and rt.telegram is not None:
        await rt.telegram.stop_polling(polling)
    # Stop claiming and finish/release in-flight jobs while HTTP drains; both still need the DB.
    await asyncio.gather(rt.worker.stop(timeout_s=STOP_WORKERS_S), runner.cleanup(), return_exceptions=True)
    for hook in reversed(rt.on_shutdown):
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook failed")
    if rt.telegram is not None:
        await rt.telegram.close()
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
