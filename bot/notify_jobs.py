"""The "notify_admin" job: core.alerts queues it, the wired AdminNotifier (Telegram or logs) delivers.

Payloads (core/alerts.py): {"type": "alert", "text"}, {"type": "booking_request", "appointment_id"},
{"type": "booking_changed", "appointment_id", "event"}, {"type": "handover", "conversation_id", "reason"}.
"""

from __future__ import annotations

import logging

from core.alerts import NOTIFY_ADMIN_JOB
from core.jobs.queue import ClaimedJob, PermanentJobError
from core.jobs.worker import Handler, JobRegistry
from core.ports import AdminNotifier

log = logging.getLogger(__name__)


class NoAdminChatError(Exception):
    """No admin chat is configured: retrying cannot help."""


def make_notify_handler(notifier: AdminNotifier) -> Handler:
    async def handle(job: ClaimedJob) -> None:
        payload = job.payload
        kind = payload.get("type")
        try:
            if kind == "alert":
                await notifier.alert(str(payload.get("text", "")))
            elif kind == "booking_request":
                await notifier.booking_request(int(payload["appointment_id"]))
            elif kind == "booking_changed":
                await notifier.booking_changed(
                    int(payload["appointment_id"]), str(payload.get("event", "changed"))
                )
            elif kind == "handover":
                await notifier.handover(int(payload["conversation_id"]), str(payload.get("reason", "")))
            else:
                raise PermanentJobError(f"unknown notify_admin type {kind!r}")
        except (KeyError, ValueError) as exc:
            raise PermanentJobError(f"bad notify_admin payload: {exc}") from None
        except NoAdminChatError as exc:
            raise PermanentJobError(str(exc)) from None

    return handle


def register_jobs(registry: JobRegistry, *, notifier: AdminNotifier) -> None:
    registry.register(NOTIFY_ADMIN_JOB, make_notify_handler(notifier))
