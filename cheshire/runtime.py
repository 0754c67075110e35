"""The composition root: the one place where the process is assembled and run.

`build_runtime(settings)` creates the long-lived objects every domain shares (database, job registry
and worker, metrics, the aiohttp app) and calls each domain's wiring function (cheshire/wiring.py) in
dependency order; `run(settings)` upgrades the database, starts the HTTP server and the workers, then
warms up in the background (`WarmUp`: builds and starts the Telegram bot, loads the LLM SDKs) and
stops everything gracefully on SIGTERM/SIGINT. Nothing here runs at import time.

Start-up answers /healthz before the warm-up: with every integration configured, importing aiogram,
anthropic and openai took ~5 s and ~180 MB of the ~6 s and ~275 MB it took before (bench_startup.py).
What needs the bot before it is built awaits it (core/deferred.py); the "integrations:" line is
logged when the warm-up has finished, and lists an integration as enabled only when it started.

Adapters (bot/, channels/) never import this package: they are handed what they need. Only the entry
point `python -m bot` (bot/__main__.py) does, to run it (tests/test_import_rules.py checks both).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from channels.app import create_app, freeze_startup_heap
from cheshire.wiring import (
    Hook,
    TelegramSection,
    WarmUpStep,
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
    # The bot (built after start-up: `telegram.build()`) and its stand-ins; None without
    # TELEGRAM_BOT_TOKEN.
    telegram: TelegramSection | None
    on_startup: tuple[Hook, ...]
    # Run after /healthz answers (`WarmUp`), besides building the bot: loading Stripe's and the LLM SDKs.
    warm_up: tuple[WarmUpStep, ...]
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
        telegram_notifier=telegram.notifier if telegram is not None else None,
        app=app,
    )
    channels = wire_channels(
        settings=settings,
        db=db,
        registry=registry,
        app=app,
        telegram=telegram.sender if telegram is not None else None,
    )
    fetchers = dict(channels.photo_fetchers)
    if telegram is not None:
        fetchers["telegram"] = telegram.fetch_photo
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
        warm_up=(*payments.warm_up, *conversation.warm_up),
        # The catalog first: searches need it. Shutdown runs these in reverse.
        on_startup=(
            *booking.on_startup,
            *channels.on_startup,
            *integrations.on_startup,
            *jobs.on_startup,
        ),
        on_shutdown=(
            *integrations.on_shutdown,
            *booking.on_shutdown,
            *payments.on_shutdown,
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

    runner = web.AppRunner(rt.app, access_log=None, shutdown_timeout=STOP_HTTP_S)
    warm_up = WarmUp(rt)
    try:
        await runner.setup()
        for hook in rt.on_startup:
            await hook()
        await web.TCPSite(runner, settings.host, settings.port).start()
        freeze_startup_heap()  # everything wired now lives as long as the process
        rt.worker.start()
        log.info(
            "cheshire started",
            extra={
                "listen": f"http://{settings.host}:{settings.port}",
                "database": rt.db.dialect,
                "telegram": settings.telegram_mode,
                "job_kinds": sorted(rt.registry.kinds),
            },
        )
        warm_up.start()
        await stop.wait()
        log.info("stopping")
    finally:
        try:
            async with asyncio.timeout(STOP_TOTAL_S):
                await _shutdown(rt, runner, warm_up)
        except TimeoutError:
            log.error("shutdown did not finish in time; exiting anyway")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


class WarmUp:
    """What runs once /healthz answers: the Telegram bot built (aiogram imported in a thread), its
    start-up calls made and polling started; the LLM SDKs loaded. Then the "integrations:" line, with
    what started, and "warm-up finished" (benches and tests wait for it)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._task: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="warm-up")

    async def _run(self) -> None:
        steps = [*self._rt.warm_up]
        if self._rt.telegram is not None:
            steps.append(partial(self._start_telegram, self._rt.telegram))
        # Side by side: a Bot API that does not answer the start-up calls must not hold the LLMs back.
        works: dict[str, bool] = {}
        for result in await asyncio.gather(*(step() for step in steps)):
            works.update(result)
        freeze_startup_heap()  # what the warm-up built lives as long as the process too
        _log_integrations(self._rt.settings, works)
        log.info("warm-up finished")

    async def _start_telegram(self, telegram: TelegramSection) -> Mapping[str, bool]:
        try:
            wiring = await telegram.build()
        except Exception:
            log.exception("the Telegram bot could not be built: Telegram is off")
            return {"telegram": False}
        answered = await wiring.start()
        # Polled even when the start-up calls failed: polling retries, and logs why it cannot.
        self._polling = wiring.start_polling()
        return {"telegram": answered}

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        wiring = self._rt.telegram.bot.value if self._rt.telegram is not None else None
        if self._polling is not None and wiring is not None:
            await wiring.stop_polling(self._polling)


async def _shutdown(rt: Runtime, runner: web.AppRunner, warm_up: WarmUp) -> None:
    await warm_up.stop()  # and Telegram's polling
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


def _log_integrations(settings: Settings, works: Mapping[str, bool] | None = None) -> None:
    """Each integration enabled (configured, and it started), disabled (not configured) or failed
    (configured, but it did not start: `works` says so, from the warm-up)."""
    works = works or {}
    states = settings.integrations()
    enabled = sorted(name for name, on in states.items() if on and works.get(name, True))
    disabled = sorted(name for name, on in states.items() if not on)
    failed = sorted(name for name, on in states.items() if on and not works.get(name, True))
    log.info(
        "integrations: enabled=%s disabled=%s%s",
        ",".join(enabled) or "none",
        ",".join(disabled) or "none",
        f" failed={','.join(failed)}" if failed else "",
    )
    if settings.telegram_mode == "off":
        log.info("telegram bot is off: TELEGRAM_BOT_TOKEN is not set")
    else:
        log.info("telegram bot runs in %s mode", settings.telegram_mode)
