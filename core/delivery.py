"""The `deliver_message` job: one outbound message row → its channel's sender, at least once and never
twice once a platform accepted it.

Per attempt:
1. Load the message and its recipient (the conversation's channel identity) in a short transaction.
   A message no longer `pending` (sent, or dead) is left alone: a retried job never sends twice.
2. Pick the route, by what each sender declares (`ChannelSender.capabilities`, core/ports.py). A
   `messaging_window_s` (Meta: 24 h): automated messages (author assistant/system) go there only
   inside that window after the person's last message, checked before calling the API. Kimmie's own
   messages are tried and the platform decides, unless the sender declares `human_agent_window_s`
   (Meta's HUMAN_AGENT tag, when approved): past the standard window and inside that one they go out
   marked `human_agent`; past it, they take the fallback route. A channel that cannot push
   (`can_push=False`: the website chat, which the browser polls) is never used as a fallback.
3. Send, outside any transaction, resuming after the parts already accepted (below). Then, in a new
   transaction:
   - accepted → `delivery_status=sent`, the platform's id, `delivered_via`;
   - throttled/transient → `RetryLater` with the platform's hint (else exponential backoff);
   - window closed, or the person unreachable (identity marked `unreachable_at`), or no sender for
     the channel → the client's other reachable identity (most recently active first), else the
     message is marked dead with the reason and Kimmie is told;
   - token invalid → Kimmie is alerted once (per token) and the job retries later;
   - rejected for good → dead with the reason, Kimmie told.
   On the job's last attempt a retryable failure also marks the message dead and tells Kimmie, so a
   dead job always has a visibly dead message.

Multi-part messages. A platform may take one message as several calls (images, a long text cut at its
limit): the sender's "parts", planned deterministically, so part N is the same on every attempt. After
each part the platform accepts, the sender calls back and its progress is committed at once, in a
short transaction of its own (`parts_sent`, `parts_identity_id` on the message row), before the next
call. A retried job, in this process or another, after a restart, tells the sender to resume after
those parts: a throttled part 2 of 3 is sent again, part 1 never is. A crash between a part's
acceptance and its commit sends that one part again (at least once; never more than that part).

Progress belongs to the channel identity that accepted the parts, not to the message. A fallback
route (another channel, so another recipient and another way of cutting the text) starts at its first
part (index 0), and its first accepted part moves the record over to it; the parts the first route
delivered stay with the person there (e.g. Messenger showed part 1, then its window closed: Telegram
gets the whole message). A retry tries the route holding the progress first, so a half-delivered
message is finished where it was started rather than begun again elsewhere. Only the latest route's
progress is kept: if that route is lost too, the next one starts at its first part (a route given up
earlier would repeat its parts, but only after its window reopened). A record naming an identity that
is no longer a route (merged, deleted) simply matches nothing: that route starts at its first part.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.alerts import credentials_refused, notify_admin, resolve_alert
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Conversation, Message, utcnow
from core.jobs.payloads import JobPayloadError
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater, backoff_delay
from core.jobs.worker import JobRegistry
from core.outbox import DELIVER_JOB, REMINDER_PURPOSE, DeliverPayload, image_refs, template_of
from core.ports import (
    ChannelCredentialsError,
    ChannelSender,
    PermanentDeliveryError,
    RecipientUnreachableError,
    RetryableDeliveryError,
    SendResult,
    WindowClosedError,
)
from core.settings import Settings
from core.types import Author, Channel, DeliveryStatus, OutboundMessage, QuickReply, Recipient

log = logging.getLogger(__name__)

AUTOMATED_AUTHORS = frozenset({Author.ASSISTANT.value, Author.SYSTEM.value})
CREDENTIALS_RETRY_S = 300.0
# Stay clear of the window's edge: a message queued at 23:59:59 may reach Meta after it closed.
WINDOW_MARGIN = timedelta(minutes=1)
ALERT_TEXT_CHARS = 300


@dataclass(frozen=True, slots=True)
class _Route:
    identity_id: int
    channel: str
    external_id: str
    last_inbound_at: datetime | None
    unreachable: bool


@dataclass(frozen=True, slots=True)
class _Pending:
    message_id: int
    author: str
    outbound: OutboundMessage
    client_label: str
    primary: _Route
    others: tuple[_Route, ...]
    # Parts of this message already accepted, and the identity they went to (see the docstring).
    parts_sent: int = 0
    parts_identity_id: int | None = None
    # "reminder": a dead one is not alerted one by one; core/booking/reach_jobs.py lists it for Kimmie.
    purpose: str | None = None

    def routes(self) -> tuple[_Route, ...]:
        """Primary first, then the others; a route already holding part of the message goes first."""
        every = (self.primary, *self.others)
        if self.parts_sent <= 0:
            return every
        started = tuple(r for r in every if r.identity_id == self.parts_identity_id)
        return (*started, *(r for r in every if r.identity_id != self.parts_identity_id))

    def resume_from(self, route: _Route) -> int:
        return self.parts_sent if route.identity_id == self.parts_identity_id else 0


class _NotDelivered(Exception):  # noqa: N818 - control flow inside this module
    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


class Delivery:
    def __init__(self, *, db: Database, senders: Mapping[str, ChannelSender], settings: Settings) -> None:
        self.db = db
        self.senders = senders
        self.settings = settings

    async def handle(self, job: ClaimedJob) -> None:
        message_id = DeliverPayload.load(job.payload).message_id
        pending = await self._load(message_id)
        if pending is None:
            return
        final = job.attempts >= job.max_attempts
        reasons: list[str] = []
        for route in pending.routes():
            is_primary = route is pending.primary
            try:
                result = await self._try(pending, route, is_primary=is_primary)
            except _NotDelivered as exc:
                reasons.append(f"{route.channel}: {exc.reason}")
                if exc.unreachable:
                    await self._mark_unreachable(route.identity_id)
                continue
            except RetryableDeliveryError as exc:
                delay = exc.retry_after_s if exc.retry_after_s is not None else backoff_delay(job.attempts)
                if final:
                    await self._dead(
                        pending, f"{route.channel}: gave up after {job.attempts} attempts: {exc}"
                    )
                raise RetryLater(delay, f"{route.channel}: {exc}") from None
            except ChannelCredentialsError as exc:
                await self._credentials_fault(route.channel, str(exc))
                if final:
                    await self._dead(pending, f"{route.channel}: credentials invalid: {exc}")
                raise RetryLater(CREDENTIALS_RETRY_S, f"{route.channel}: credentials invalid") from None
            except PermanentDeliveryError as exc:
                if not is_primary:
                    reasons.append(f"{route.channel}: {exc}")
                    continue
                await self._dead(pending, f"{route.channel}: rejected: {exc}")
                raise PermanentJobError(f"{route.channel}: {exc}") from None
            await self._sent(pending, route, result)
            if not is_primary:
                log.info("message delivered through fallback", extra={"message_id": message_id})
            return
        await self._dead(pending, "; ".join(reasons) or "no route to the customer")

    # --- steps ---------------------------------------------------------------------------------

    async def _load(self, message_id: int) -> _Pending | None:
        async with self.db.transaction() as session:
            row = await session.get(Message, message_id)
            if row is None or row.delivery_status != DeliveryStatus.PENDING.value:
                return None  # gone, already sent, or already dead: never send twice
            conversation = await session.get_one(Conversation, row.conversation_id)
            identity = await session.get_one(ChannelIdentity, conversation.identity_id)
            client = await session.get(Client, identity.client_id)
            others = (
                await session.execute(
                    select(ChannelIdentity)
                    .where(ChannelIdentity.client_id == identity.client_id, ChannelIdentity.id != identity.id)
                    .order_by(ChannelIdentity.last_inbound_at.desc().nulls_last(), ChannelIdentity.id.desc())
                )
            ).scalars()
            return _Pending(
                message_id=row.id,
                author=row.author,
                outbound=OutboundMessage(
                    text=row.text or "",
                    quick_replies=tuple(
                        QuickReply(title=str(q["title"]), payload=str(q["payload"]), url=q.get("url"))
                        for q in row.quick_replies or []
                    ),
                    image_urls=image_refs(row.image_urls)[0],
                    image_keys=image_refs(row.image_urls)[1],
                    template=template_of(row.template),
                ),
                client_label=(client.name if client and client.name else None)
                or identity.display_name
                or f"client #{identity.client_id}",
                primary=_route(identity),
                others=tuple(_route(other) for other in others),
                parts_sent=row.parts_sent,
                parts_identity_id=row.parts_identity_id,
                purpose=row.purpose,
            )

    async def _try(self, pending: _Pending, route: _Route, *, is_primary: bool) -> SendResult:
        sender = self.senders.get(route.channel)
        if sender is None:
            raise _NotDelivered("no sender configured for this channel")
        capabilities = sender.capabilities
        if not is_primary and not capabilities.can_push:
            raise _NotDelivered("cannot push to this channel")
        if route.unreachable:
            raise _NotDelivered("the person is unreachable here")
        window_s = capabilities.messaging_window_s
        outbound = pending.outbound
        if window_s is not None and pending.author in AUTOMATED_AUTHORS:
            opened = route.last_inbound_at
            if opened is None or utcnow() > opened + timedelta(seconds=window_s) - WINDOW_MARGIN:
                if outbound.template is None or not capabilities.utility_templates:
                    raise _NotDelivered("outside the 24-hour messaging window")
                # A reminder past the window: the platform's utility template for appointment updates.
                outbound = replace(outbound, as_template=True)
        elif window_s is not None and pending.author == Author.KIMMIE.value:
            outbound = _as_human_agent(capabilities.human_agent_window_s, route, outbound, window_s)
        try:
            channel = Channel(route.channel)
        except ValueError:
            raise _NotDelivered("unknown channel") from None
        recipient = Recipient(channel=channel, external_id=route.external_id, identity_id=route.identity_id)
        try:
            if not capabilities.parts:  # nothing reaches a platform: no progress to resume or record
                return await sender.send(recipient, outbound)
            return await sender.send(
                recipient,
                outbound,
                resume_from=pending.resume_from(route),
                on_part_sent=partial(self._part_sent, pending.message_id, route.identity_id),
            )
        except WindowClosedError as exc:
            raise _NotDelivered(f"messaging window closed ({exc})") from None
        except RecipientUnreachableError as exc:
            raise _NotDelivered(f"unreachable ({exc})", unreachable=True) from None

    async def _part_sent(
        self, message_id: int, identity_id: int, index: int, platform_message_id: str | None
    ) -> None:
        """The platform accepted part `index` for this identity: commit it before the next call, so
        no later attempt sends it again."""
        del platform_message_id  # the message's id is recorded once, by `_sent`
        async with self.db.transaction() as session:
            await session.execute(
                update(Message)
                .where(Message.id == message_id, Message.delivery_status == DeliveryStatus.PENDING.value)
                .values(parts_sent=index + 1, parts_identity_id=identity_id)
            )

    async def _sent(self, pending: _Pending, route: _Route, result: SendResult) -> None:
        values: dict[str, Any] = {
            "delivery_status": DeliveryStatus.SENT.value,
            "delivered_via": route.channel,
            "delivery_error": None,
            "platform_message_id": result.platform_message_id,
        }
        where = (Message.id == pending.message_id, Message.delivery_status == DeliveryStatus.PENDING.value)
        async with self.db.transaction() as session:
            try:
                async with session.begin_nested():
                    await session.execute(update(Message).where(*where).values(**values))
            except IntegrityError:
                # Some platforms number messages per chat; the id column is unique per channel.
                values["platform_message_id"] = (
                    f"{route.channel}:{route.external_id}:{result.platform_message_id}"[:255]
                )
                await session.execute(update(Message).where(*where).values(**values))
            sender = self.senders.get(route.channel)
            if sender is not None and sender.credentials_fault_key is not None:
                await resolve_alert(session, sender.credentials_fault_key)

    async def _mark_unreachable(self, identity_id: int) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(ChannelIdentity)
                .where(ChannelIdentity.id == identity_id)
                .values(unreachable_at=utcnow())
            )

    async def _credentials_fault(self, channel: str, error: str) -> None:
        async with self.db.transaction() as session:
            sender = self.senders.get(channel)
            fault_key = sender.credentials_fault_key if sender is not None else None
            await credentials_refused(session, channel, fault_key, error)

    async def _dead(self, pending: _Pending, reason: str) -> None:
        snippet = pending.outbound.text[:ALERT_TEXT_CHARS]
        async with self.db.transaction() as session:
            await session.execute(
                update(Message)
                .where(
                    Message.id == pending.message_id, Message.delivery_status == DeliveryStatus.PENDING.value
                )
                .values(delivery_status=DeliveryStatus.DEAD.value, delivery_error=reason[:2000])
            )
            if pending.purpose == REMINDER_PURPOSE:
                # Not one alert per reminder: the reminder check puts it on Kimmie's daily list.
                log.info("reminder undeliverable", extra={"message_id": pending.message_id})
                return
            await notify_admin(
                session,
                "alert",
                text=(
                    f"I could not deliver a message to {pending.client_label} ({reason[:300]}). "
                    f"Please reach them another way. The message was:\n{snippet}"
                ),
                message_id=pending.message_id,
            )
        log.warning("message dead", extra={"message_id": pending.message_id, "reason": reason[:300]})


def _as_human_agent(
    human_s: float | None, route: _Route, outbound: OutboundMessage, window_s: float
) -> OutboundMessage:
    """Kimmie's message past the standard window but inside the sender's human-agent one goes out
    marked `human_agent`; past that too, the fallback route. Without a declared human-agent window (or
    a known last message) nothing changes: the platform decides."""
    opened = route.last_inbound_at
    if human_s is None or opened is None:
        return outbound
    now = utcnow()
    if now <= opened + timedelta(seconds=window_s) - WINDOW_MARGIN:
        return outbound  # inside the standard window: an ordinary reply
    if now > opened + timedelta(seconds=human_s) - WINDOW_MARGIN:
        raise _NotDelivered(f"outside the {human_s / 86400:g}-day human-agent window")
    return replace(outbound, human_agent=True)


def _route(identity: ChannelIdentity) -> _Route:
    return _Route(
        identity_id=identity.id,
        channel=identity.channel,
        external_id=identity.external_id,
        last_inbound_at=identity.last_inbound_at,
        unreachable=identity.unreachable_at is not None,
    )


async def _mark_dead_if_pending(session: AsyncSession, message_id: int, error: str) -> bool:
    result = await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.delivery_status == DeliveryStatus.PENDING.value)
        .values(delivery_status=DeliveryStatus.DEAD.value, delivery_error=error[:2000])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def register_jobs(
    registry: JobRegistry, *, db: Database, senders: Mapping[str, ChannelSender], settings: Settings
) -> Delivery:
    """Register the `deliver_message` handler. `senders` is read at each delivery, so channels wired
    after this call (Telegram, say) are used too."""
    delivery = Delivery(db=db, senders=senders, settings=settings)
    registry.register(DELIVER_JOB, delivery.handle)

    async def on_dead(job: ClaimedJob, error: str) -> None:
        # A delivery job that died of something unexpected (not a delivery error) leaves its message
        # visibly dead too, and Kimmie is told.
        if job.kind != DELIVER_JOB:
            return
        try:
            message_id = DeliverPayload.load(job.payload).message_id
        except JobPayloadError:
            return  # no message to mark: the job's own error says why it died
        async with db.transaction() as session:
            if await _mark_dead_if_pending(session, message_id, error):
                await notify_admin(
                    session,
                    "alert",
                    text=f"A reply could not be delivered (message {message_id}): {error[:300]}",
                    message_id=message_id,
                )

    registry.dead_listeners.append(on_dead)
    return delivery
