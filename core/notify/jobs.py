"""The "notify_admin" job: core.alerts queues it, the wired AdminNotifier (Telegram or logs) delivers.

Payload: `NotifyAdminPayload` (core/alerts.py, where it is queued): an alert's text, a booking request
or change, a hand-over; the e-mail job's `AdminEmailPayload` is the same plus the hand-over's facts.

E-mail fallback (ADMIN_EMAIL + SMTP_URL, wired by the composition root's notify section): a notification
Telegram cannot take is handed to one "notify_admin_email" job (channels/email/admin_mail.py) and this
job ends done. That happens
when the bot is not configured, when Kimmie's chat is unreachable (bot blocked, chat not found, token
refused, no chat id: `AdminUnreachableError`), or on the last attempt after transient failures. A
transient failure before that retries Telegram. The e-mail job's idempotency key is this job's id,
so a notification is handed over at most once, however often this job runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from core.alerts import NOTIFY_ADMIN_JOB, NotifyAdminPayload
from core.db.database import Database
from core.db.models import utcnow
from core.jobs.payloads import job_payload
from core.jobs.queue import ClaimedJob, PermanentJobError, enqueue
from core.jobs.worker import Handler, JobRegistry
from core.notify.errors import AdminUnreachableError
from core.ports import AdminNotifier

log = logging.getLogger(__name__)

ADMIN_EMAIL_JOB = "notify_admin_email"


@job_payload(ADMIN_EMAIL_JOB)
class AdminEmailPayload(NotifyAdminPayload):
    """The notification (handled by channels/email/admin_mail.py), with why it went by e-mail."""

    notify_job_id: int
    fallback_reason: str
    handed_over_ms: int  # fixes the mail's Message-ID, the same on every try of the e-mail job


async def deliver(notifier: AdminNotifier, payload: NotifyAdminPayload) -> None:
    """One notification through `notifier`."""
    if payload.type == "alert":
        await notifier.alert(payload.text or "")
    elif payload.type == "booking_request":
        await notifier.booking_request(payload.appointment)
    elif payload.type == "booking_changed":
        await notifier.booking_changed(payload.appointment, payload.event or "changed")
    else:
        await notifier.handover(payload.conversation, payload.reason or "")


@dataclass(frozen=True, slots=True)
class EmailFallback:
    """Hands a notification Telegram cannot take to the "notify_admin_email" job."""

    db: Database
    # A Telegram attempt is cut off after this, so even a hanging last attempt ends in the hand-over
    # (the worker itself cancels a handler at 80 % of the lease, which would leave no time for it).
    telegram_timeout_s: float

    async def hand_over(self, job: ClaimedJob, notification: NotifyAdminPayload, reason: str) -> None:
        payload = AdminEmailPayload(
            **notification.model_dump(),
            notify_job_id=job.id,
            fallback_reason=reason,
            handed_over_ms=int(utcnow().timestamp() * 1000),
        )
        async with self.db.transaction() as session:
            email_job = await enqueue(
                session, ADMIN_EMAIL_JOB, payload.dump(), idempotency_key=f"admin_email:{job.id}"
            )
        log.warning(
            "notification for Kimmie goes by e-mail",
            extra={"reason": reason, "email_job_id": email_job, "type": notification.type},
        )


def make_notify_handler(
    notifier: AdminNotifier, *, fallback: EmailFallback | None = None, telegram: bool = True
) -> Handler:
    """`telegram`: `notifier` is the Telegram one (False: the logging notifier, the bot is off)."""

    async def handle(job: ClaimedJob) -> None:
        # Malformed: JobPayloadError, dead at once (an e-mail could not render it either).
        payload = NotifyAdminPayload.load(job.payload)
        if fallback is not None and not telegram:
            await deliver(notifier, payload)  # the log line it always was
            await fallback.hand_over(job, payload, "Telegram is not configured")
            return
        try:
            if fallback is None:
                await deliver(notifier, payload)
            else:
                async with asyncio.timeout(fallback.telegram_timeout_s):
                    await deliver(notifier, payload)
        except AdminUnreachableError as exc:
            if fallback is None:
                raise
            await fallback.hand_over(job, payload, f"Telegram cannot reach your chat ({exc})")
        except PermanentJobError:
            raise  # the notifier says retrying cannot help: neither can an e-mail
        except Exception as exc:  # rate limit, network, 5xx, time-out: Telegram again, until the last try
            if fallback is None or job.attempts < job.max_attempts:
                raise
            await fallback.hand_over(
                job, payload, f"Telegram failed on all {job.attempts} attempts (last: {type(exc).__name__})"
            )

    return handle


def register_jobs(
    registry: JobRegistry,
    *,
    notifier: AdminNotifier,
    fallback: EmailFallback | None = None,
    telegram: bool = True,
) -> None:
    registry.register(NOTIFY_ADMIN_JOB, make_notify_handler(notifier, fallback=fallback, telegram=telegram))
