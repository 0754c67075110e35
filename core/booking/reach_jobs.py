"""Reminders that arrive, or Kimmie knows in time: the `reminder_check` and `reminder_digest` jobs.

A reminder (core/booking/reminders.py) is a message with purpose "reminder". Delivery falls back by
itself from a closed Messenger/Instagram window to the client's e-mail; what it cannot know is
whether a message on a channel that cannot push (the website chat) was seen. So, after
`REMINDER_FETCH_WAIT_MIN`, `reminder_check` looks at the reminder: sent on a pushing channel, or
fetched by the widget, is delivered. Otherwise it goes once by e-mail when the client has an address;
failing that the appointment is marked `reminder_undelivered_at` (no alert per message).

`reminder_digest` runs once a day at `REMINDER_DIGEST_HOUR` (local) and sends Kimmie ONE list of the
confirmed visits of the next 48 hours whose reminder did not arrive, or cannot arrive (its reminder is
still ahead and no route will be open then: core/reach.py), each with the customer's contact
details and a "Mark confirmed" button. A visit is listed once (`reminder_listed_at`). When an
undeliverable reminder is found too late for the next list, a list of that one visit goes at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import customers, reach
from core.alerts import notify_admin
from core.booking.followups import DIGEST_JOB, reminder_key
from core.db.models import Appointment, ChannelIdentity, Job, Message, utcnow
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import enqueue
from core.outbox import REMINDER_PURPOSE, queue_outbound
from core.types import Author, Channel, DeliveryStatus, OutboundMessage, QuickReply

log = logging.getLogger(__name__)

REMINDER_CHECK_JOB = "reminder_check"
REMINDER_DIGEST_JOB = DIGEST_JOB
DIGEST_HORIZON = timedelta(hours=48)
PENDING_RECHECK = timedelta(minutes=10)
EMAIL_RECHECK = timedelta(minutes=10)
# An undeliverable reminder found when the next daily list would come later than this before the
# visit is sent to Kimmie at once.
LATEST_LIST_BEFORE_VISIT = timedelta(hours=12)


@job_payload(REMINDER_CHECK_JOB)
class ReminderCheckPayload(JobPayload):
    appointment_id: int
    message_id: int
    emailed: bool = False


@job_payload(REMINDER_DIGEST_JOB)
class ReminderDigestPayload(JobPayload):
    day: date  # the local day whose list this is
    appointment_id: int | None = None  # a list of one visit, sent at once


def delivered(message: Message, policy: reach.ReachPolicy) -> bool:
    """Sent on a channel that pushes, or fetched by the website widget."""
    if message.delivery_status != DeliveryStatus.SENT.value:
        return False
    return (message.delivered_via or message.channel) in policy.pushable or message.fetched_at is not None


class ReminderWatch:
    def __init__(
        self,
        tz: ZoneInfo,
        policy: reach.ReachPolicy,
        *,
        now: Callable[[], datetime],
        reminder_hours_before: float,
        fetch_wait: timedelta,
        digest_hour: int,
    ) -> None:
        self.tz = tz
        self.policy = policy
        self.now = now
        self.reminder_hours_before = reminder_hours_before
        self.fetch_wait = fetch_wait
        self.digest_hour = digest_hour

    # --- scheduling ------------------------------------------------------------------------------
    async def watch(self, session: AsyncSession, appointment_id: int, message_id: int) -> None:
        """Called when a reminder is queued: look at it after the fetch wait."""
        payload = ReminderCheckPayload(appointment_id=appointment_id, message_id=message_id)
        await enqueue(session, REMINDER_CHECK_JOB, payload.dump(), run_at=self.now() + self.fetch_wait)

    def digest_time(self, day: date) -> datetime:
        return datetime.combine(day, time(self.digest_hour), tzinfo=self.tz)

    def next_digest(self) -> datetime:
        now = self.now()
        today = now.astimezone(self.tz).date()
        at = self.digest_time(today)
        return at if at > now else self.digest_time(today + timedelta(days=1))

    async def schedule_digest(self, session: AsyncSession) -> None:
        """The next daily list (idempotent per day): at start-up, and by each list for the next."""
        at = self.next_digest()
        day = at.astimezone(self.tz).date()
        await enqueue(
            session,
            REMINDER_DIGEST_JOB,
            ReminderDigestPayload(day=day).dump(),
            run_at=at,
            idempotency_key=f"reminder_digest:{day.isoformat()}",
        )

    # --- reminder_check --------------------------------------------------------------------------
    async def check(self, session: AsyncSession, payload: ReminderCheckPayload) -> None:
        appt = await session.get(Appointment, payload.appointment_id)
        message = await session.get(Message, payload.message_id)
        now = self.now()
        if appt is None or message is None or appt.status != "confirmed" or appt.start_at <= now:
            return
        if appt.reminder_confirmed_at is not None or delivered(message, self.policy):
            return
        if message.delivery_status == DeliveryStatus.PENDING.value:  # still being retried
            await enqueue(session, REMINDER_CHECK_JOB, payload.dump(), run_at=now + PENDING_RECHECK)
            return
        if not payload.emailed and await self._by_email(session, appt, message):
            return
        appt.reminder_undelivered_at = now
        if self.next_digest() > appt.start_at - LATEST_LIST_BEFORE_VISIT:
            day = now.astimezone(self.tz).date()
            await enqueue(
                session,
                REMINDER_DIGEST_JOB,
                ReminderDigestPayload(day=day, appointment_id=appt.id).dump(),
                idempotency_key=f"reminder_digest:{day.isoformat()}:{appt.id}",
            )
        log.info("reminder did not reach the customer", extra={"appointment_id": appt.id})

    async def _by_email(self, session: AsyncSession, appt: Appointment, message: Message) -> bool:
        """The same reminder once more, by e-mail, when the client has a reachable address."""
        if Channel.EMAIL.value not in self.policy.pushable:
            return False
        identity = (
            await session.execute(
                select(ChannelIdentity)
                .where(
                    ChannelIdentity.client_id == appt.client_id,
                    ChannelIdentity.channel == Channel.EMAIL.value,
                    ChannelIdentity.unreachable_at.is_(None),
                )
                .order_by(ChannelIdentity.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if identity is None:
            return False
        conversation = await customers.get_or_create_conversation(session, identity)
        replies = tuple(QuickReply(str(q["title"]), str(q["payload"])) for q in message.quick_replies or [])
        message_id = await queue_outbound(
            session,
            conversation_id=conversation.id,
            channel=conversation.channel,
            message=OutboundMessage(text=message.text, quick_replies=replies),
            author=Author.SYSTEM,
            purpose=REMINDER_PURPOSE,
        )
        again = ReminderCheckPayload(appointment_id=appt.id, message_id=message_id, emailed=True)
        await enqueue(session, REMINDER_CHECK_JOB, again.dump(), run_at=self.now() + EMAIL_RECHECK)
        return True

    # --- reminder_digest -------------------------------------------------------------------------
    async def digest(self, session: AsyncSession, payload: ReminderDigestPayload) -> list[int]:
        """Kimmie's list: the ids listed (none: nothing is sent)."""
        if payload.appointment_id is None:
            await self.schedule_digest(session)  # tomorrow's
        now = self.now()
        query = select(Appointment).where(
            Appointment.status == "confirmed",
            Appointment.start_at > now,
            Appointment.start_at <= now + DIGEST_HORIZON,
            Appointment.reminder_confirmed_at.is_(None),
            Appointment.reminder_listed_at.is_(None),
        )
        if payload.appointment_id is not None:
            query = query.where(Appointment.id == payload.appointment_id)
        listed = [
            appt
            for appt in (await session.execute(query.order_by(Appointment.start_at))).scalars()
            if await self._cannot_arrive(session, appt)
        ]
        for appt in listed:
            appt.reminder_listed_at = now
        ids = [appt.id for appt in listed]
        if ids:
            await notify_admin(session, "reminder_digest", appointment_ids=tuple(ids))
        return ids

    async def _cannot_arrive(self, session: AsyncSession, appt: Appointment) -> bool:
        if appt.reminder_undelivered_at is not None:
            return True
        reminder_at = appt.start_at - timedelta(hours=self.reminder_hours_before)
        if reminder_at <= self.now():
            return False  # sent already: its check decides
        still_ahead = await session.scalar(
            select(Job.id).where(Job.idempotency_key == reminder_key(appt.id), Job.status == "queued")
        )
        if still_ahead is None:
            return False
        return not await reach.routes_at(session, appt.client_id, reminder_at, self.policy)


async def mark_confirmed(session: AsyncSession, appointment_id: int) -> bool:
    """Kimmie reached the customer herself (her list's "Mark confirmed"): off every later list."""
    appt = await session.get(Appointment, appointment_id)
    if appt is None:
        return False
    if appt.reminder_confirmed_at is None:
        appt.reminder_confirmed_at = utcnow()
    return True
