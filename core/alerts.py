"""Alerts for Kimmie, deduplicated by a fault key: she hears of a fault once, not once per message.

`raise_alert` is called inside the caller's transaction; the notification itself is a
`notify_admin` job delivered by whatever AdminNotifier the entry point wired (Telegram, or logs).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.database import insert_for
from core.db.models import AdminAlert, utcnow
from core.jobs.payloads import JobPayload, JobPayloadError, job_payload
from core.jobs.queue import enqueue

NOTIFY_ADMIN_JOB = "notify_admin"

NotifyType = Literal["alert", "booking_request", "booking_changed", "handover"]
# The fields each type cannot do without (the others are optional context).
_NEEDS: dict[str, tuple[str, ...]] = {
    "alert": ("text",),
    "booking_request": ("appointment_id",),
    "booking_changed": ("appointment_id",),
    "handover": ("conversation_id",),
}


@job_payload(NOTIFY_ADMIN_JOB)
class NotifyAdminPayload(JobPayload):
    """One notification for Kimmie (handled by core/notify/jobs.py): one flat model, since every
    renderer (Telegram card, e-mail) switches on `type` anyway."""

    type: NotifyType
    text: str | None = None  # alert
    fault_key: str | None = None  # alert, from raise_alert
    message_id: int | None = None  # alert about a message that could not be delivered
    appointment_id: int | None = None  # booking_request, booking_changed
    event: str | None = None  # booking_changed (missing: "changed"; booking_request: "requested")
    conversation_id: int | None = None  # handover
    reason: str | None = None  # handover

    @model_validator(mode="after")
    def _has_what_its_type_needs(self) -> Self:
        missing = [name for name in _NEEDS[self.type] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.type} notification needs {', '.join(missing)}")
        return self

    @property
    def appointment(self) -> int:
        return _present(self.appointment_id, "appointment_id")

    @property
    def conversation(self) -> int:
        return _present(self.conversation_id, "conversation_id")


def _present(value: int | None, name: str) -> int:
    if value is None:  # only for a type that does not need it: the validator checked the rest
        raise JobPayloadError(f"this notification has no {name}")
    return value


async def raise_alert(session: AsyncSession, fault_key: str, text: str) -> bool:
    """Record a fault; queue a notification only the first time (or after it was resolved).

    Safe under concurrency: the insert races on the unique fault key, and only its winner notifies.
    Returns True when Kimmie will be notified.
    """
    now = utcnow()
    insert = insert_for(session)
    inserted = (
        await session.execute(
            insert(AdminAlert)
            .values(fault_key=fault_key, message=text, occurrences=1, first_seen_at=now, last_seen_at=now)
            .on_conflict_do_nothing(index_elements=["fault_key"])
            .returning(AdminAlert.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        reopened = await session.execute(
            update(AdminAlert)
            .where(AdminAlert.fault_key == fault_key, AdminAlert.resolved_at.is_not(None))
            .values(
                resolved_at=None,
                message=text,
                first_seen_at=now,
                last_seen_at=now,
                occurrences=AdminAlert.occurrences + 1,
            )
        )
        if not reopened.rowcount:  # type: ignore[attr-defined]
            await session.execute(
                update(AdminAlert)
                .where(AdminAlert.fault_key == fault_key)
                .values(last_seen_at=now, occurrences=AdminAlert.occurrences + 1)
            )
            return False
    payload = NotifyAdminPayload(type="alert", fault_key=fault_key, text=text)
    await enqueue(session, NOTIFY_ADMIN_JOB, payload.dump())
    return True


async def resolve_alert(session: AsyncSession, fault_key: str) -> None:
    alert = (
        await session.execute(select(AdminAlert).where(AdminAlert.fault_key == fault_key))
    ).scalar_one_or_none()
    if alert is not None and alert.resolved_at is None:
        alert.resolved_at = utcnow()


async def notify_admin(session: AsyncSession, kind: NotifyType, **data: object) -> None:
    """Queue a notification for Kimmie (booking_request, booking_changed, handover, or an alert that
    needs no deduplication); `data` are NotifyAdminPayload's fields (JobPayloadError otherwise)."""
    payload = NotifyAdminPayload.load({"type": kind, **data})
    await enqueue(session, NOTIFY_ADMIN_JOB, payload.dump())


async def credentials_refused(
    session: AsyncSession, channel: str, fault_key: str | None, error: str
) -> None:
    """A channel's token was refused (delivery, profile look-ups): Kimmie hears once per token. The
    adapter names its `credentials_fault_key` so every user of one token shares it."""
    await raise_alert(
        session,
        fault_key or f"{channel}:token",
        f"The {channel} access token was refused ({error[:200]}). Replies on {channel} are "
        "waiting: renew the token in the settings and restart Cheshire.",
    )
