"""Deposits on the booking's events: ask, hear back, refund, keep, capture, release, reconcile.

Decisions are made in the transaction of the booking change that calls for them (a follow-up on
booking.requested / declined / cancelled / no_show / completed / hold_expired): the payment row gets
its new status and a job is queued. Jobs do the network calls, outside any transaction (read, close,
call Stripe, write), each with an idempotency key, so a retried job never moves money twice.

Statuses (`payment.status`; every change appended to `payment.history`):
  creating → pending (a Checkout link was sent) → paid | held (kind "hold") | expired | failed
  paid → refund_pending → refunded, or kept (late cancellation, no-show)
  held → capture_pending → captured (no-show, late cancellation) | release_pending → released
  not_collected: the policy asked for one but Stripe is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.alerts import notify_admin, raise_alert
from core.booking.catalog import read_rules
from core.booking.followups import tell_customer
from core.booking.records import LIVE
from core.db.database import Database, dialect_name
from core.db.models import Appointment, AppointmentPet, Payment, Pet, Service, utcnow
from core.events import Event, FollowUp, FollowUps
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, RetryLater, enqueue
from core.jobs.worker import JobRegistry
from core.payments import events as ev
from core.payments import texts
from core.payments.card import REFUNDABLE
from core.payments.gateway import CheckoutRequest, CheckoutSession, GatewayError, PaymentGateway
from core.payments.policy import RequestFacts, decide
from core.types import AppointmentStatus, QuickReply

log = logging.getLogger(__name__)

CHECKOUT_JOB = "payment_checkout"
ACTION_JOB = "payment_action"
RECONCILE_JOB = "payment_reconcile"
# Stripe: a Checkout Session expires 30 min to 24 h after it is created. Margins for clocks and the
# time between our reading the clock and Stripe's.
SESSION_MIN = timedelta(minutes=31)
SESSION_MAX = timedelta(hours=23, minutes=55)
# The reconciliation asks Stripe this long before the session (and the hold) expires.
RECONCILE_LEAD = timedelta(minutes=10)

LIVE_STATUSES = ("creating", "pending")  # a link that may still be paid
ACTIONS = {"refund": "refund_pending", "capture": "capture_pending", "release": "release_pending"}


@job_payload(CHECKOUT_JOB)
class CheckoutPayload(JobPayload):
    payment_id: int


@job_payload(ACTION_JOB)
class ActionPayload(JobPayload):
    payment_id: int
    action: str  # refund | capture | release | expire


@job_payload(RECONCILE_JOB)
class ReconcilePayload(JobPayload):
    payment_id: int


@dataclass(frozen=True, slots=True)
class PaymentPages:
    """Where Stripe sends the customer back: Cheshire's own pages (channels/payments.py)."""

    success_url: str
    cancel_url: str


def record(payment: Payment, status: str, note: str, now: datetime) -> None:
    """A status change, appended to the row's history (a new list: JSON columns track assignment)."""
    payment.history = [*(payment.history or []), {"at": now.isoformat(), "status": status, "note": note}]
    payment.status = status


async def payment_for(session: AsyncSession, appointment_id: int, *, lock: bool = False) -> Payment | None:
    query = select(Payment).where(Payment.appointment_id == appointment_id)
    if lock and dialect_name(session) == "postgresql":
        query = query.with_for_update()
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()


async def locked(session: AsyncSession, payment_id: int) -> Payment | None:
    query = select(Payment).where(Payment.id == payment_id).execution_options(populate_existing=True)
    if dialect_name(session) == "postgresql":
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def request_refund(session: AsyncSession, appointment_id: int, *, by: str, now: datetime) -> bool:
    """Kimmie's refund from the card (after her confirming tap): refund a paid or kept deposit,
    release a hold. False when there is nothing to refund (already refunded, never paid)."""
    payment = await payment_for(session, appointment_id, lock=True)
    if payment is None or payment.status not in REFUNDABLE:
        return False
    await start_action(session, payment, "release" if payment.status == "held" else "refund", f"by {by}", now)
    return True


async def start_action(
    session: AsyncSession, payment: Payment, action: str, note: str, now: datetime
) -> None:
    record(payment, ACTIONS[action], note, now)
    await enqueue(
        session,
        ACTION_JOB,
        ActionPayload(payment_id=payment.id, action=action).dump(),
        idempotency_key=f"{ACTION_JOB}:{action}:{payment.id}",
    )


class Payments:
    """The use cases. `gateway` None: Stripe is off (deposits are noted as not collected)."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: PaymentGateway | None,
        pages: PaymentPages,
        currency: str,
        tz: ZoneInfo,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.pages = pages
        self.currency = currency.lower()
        self.tz = tz
        self.now = now

    # --- wiring -------------------------------------------------------------------------------------
    def subscribe(self, subscribers: FollowUps) -> None:
        """One line per booking event the deposits follow."""
        table = {
            events.BOOKING_REQUESTED: (CHECKOUT_JOB, self.on_requested),
            events.BOOKING_DECLINED: (ACTION_JOB, self.on_declined),
            events.BOOKING_CANCELLED: (ACTION_JOB, self.on_cancelled),
            events.BOOKING_NO_SHOW: (ACTION_JOB, self.on_no_show),
            events.BOOKING_COMPLETED: (ACTION_JOB, self.on_completed),
            events.BOOKING_HOLD_EXPIRED: (ACTION_JOB, self.on_hold_expired),
        }
        for event_type, (kind, run) in table.items():
            subscribers.subscribe(event_type, FollowUp(kind, run, "deposit"))

    def register_jobs(self, registry: JobRegistry) -> None:
        registry.register(CHECKOUT_JOB, self.checkout_job)
        registry.register(ACTION_JOB, self.action_job)
        registry.register(RECONCILE_JOB, self.reconcile_job)
        registry.register(ev.STRIPE_EVENT_JOB, self.event_job)

    # --- follow-ups (in the booking change's transaction) ---------------------------------------------
    async def on_requested(self, session: AsyncSession, event: Event) -> None:
        appt = await _appointment(session, event)
        if appt is None or await payment_for(session, appt.id) is not None:
            return
        rules = await read_rules(session)
        deposit = decide(rules.deposits, await self._facts(session, appt))
        if deposit is None:
            return
        payment = Payment(
            appointment_id=appt.id,
            client_id=appt.client_id,
            kind=deposit.kind,
            amount_cents=deposit.amount_cents,
            currency=self.currency,
            status="creating",
            history=[],
        )
        now = self.now()
        if self.gateway is None:
            record(payment, "not_collected", f"{deposit.rule}: Stripe is off", now)
            session.add(payment)
            return
        record(payment, "creating", deposit.rule, now)
        session.add(payment)
        await session.flush()
        await enqueue(
            session,
            CHECKOUT_JOB,
            CheckoutPayload(payment_id=payment.id).dump(),
            idempotency_key=f"{CHECKOUT_JOB}:{payment.id}",
        )

    async def on_declined(self, session: AsyncSession, event: Event) -> None:
        await self._give_back(session, event, "declined")

    async def on_cancelled(self, session: AsyncSession, event: Event) -> None:
        appt = await _appointment(session, event)
        if appt is None:
            return
        by = str(event.data.get("by") or "kimmie")
        rules = await read_rules(session)
        notice = rules.deposits.refund_notice_hours or rules.cancellation_notice_hours
        late = appt.start_at - self.now() < timedelta(hours=notice)
        if by == "customer" and late and event.data.get("was_confirmed"):
            await self._keep(session, appt.id, "late cancellation")
        else:
            await self._give_back(session, event, f"cancelled by {by}")

    async def on_no_show(self, session: AsyncSession, event: Event) -> None:
        appt = await _appointment(session, event)
        if appt is not None:
            await self._keep(session, appt.id, "no-show")

    async def on_completed(self, session: AsyncSession, event: Event) -> None:
        """After the visit a card hold is released (the deposit charge was taken off the price)."""
        appt = await _appointment(session, event)
        payment = await payment_for(session, appt.id, lock=True) if appt else None
        if payment is not None and payment.status == "held":
            await start_action(session, payment, "release", "visit completed", self.now())

    async def on_hold_expired(self, session: AsyncSession, event: Event) -> None:
        """The request's hold ran out unpaid: the link stops working (the booking's own follow-ups
        release the slot and tell the customer and Kimmie)."""
        appt = await _appointment(session, event)
        payment = await payment_for(session, appt.id, lock=True) if appt else None
        if payment is not None and payment.status in LIVE_STATUSES:
            await self._expire(session, payment, "the request's hold expired unpaid")

    async def _give_back(self, session: AsyncSession, event: Event, why: str) -> None:
        appt = await _appointment(session, event)
        payment = await payment_for(session, appt.id, lock=True) if appt else None
        if payment is None:
            return
        if payment.status in LIVE_STATUSES:
            await self._expire(session, payment, why)
        elif payment.status in ("paid", "held"):
            await start_action(
                session, payment, "release" if payment.status == "held" else "refund", why, self.now()
            )

    async def _keep(self, session: AsyncSession, appointment_id: int, why: str) -> None:
        payment = await payment_for(session, appointment_id, lock=True)
        if payment is None:
            return
        if payment.status == "paid":
            record(payment, "kept", why, self.now())
        elif payment.status == "held":
            await start_action(session, payment, "capture", why, self.now())
        elif payment.status in LIVE_STATUSES:
            await self._expire(session, payment, why)

    async def _expire(self, session: AsyncSession, payment: Payment, why: str) -> None:
        record(payment, "expired", why, self.now())
        if payment.stripe_checkout_session_id:
            await enqueue(
                session,
                ACTION_JOB,
                ActionPayload(payment_id=payment.id, action="expire").dump(),
                idempotency_key=f"{ACTION_JOB}:expire:{payment.id}",
            )

    async def _facts(self, session: AsyncSession, appt: Appointment) -> RequestFacts:
        past = await session.execute(
            select(Appointment.status, func.count())
            .where(Appointment.client_id == appt.client_id, Appointment.id != appt.id)
            .group_by(Appointment.status)
        )
        counts = {status: n for status, n in past.all()}
        sizes = await session.execute(
            select(Pet.size_class)
            .join(AppointmentPet, AppointmentPet.pet_id == Pet.id)
            .where(AppointmentPet.appointment_id == appt.id)
        )
        return RequestFacts(
            first_visit=not counts.get(AppointmentStatus.COMPLETED.value),
            sizes=[s for s in sizes.scalars() if s],
            no_shows=counts.get(AppointmentStatus.NO_SHOW.value, 0),
            price_min_cents=appt.price_min_cents,
            price_max_cents=appt.price_max_cents,
            ahead=appt.start_at - self.now(),
        )

    # --- the Checkout link --------------------------------------------------------------------------------
    async def checkout_job(self, job: ClaimedJob) -> None:
        payload = CheckoutPayload.load(job.payload)
        gateway = self._gateway()
        async with self.db.transaction() as session:
            payment = await session.get(Payment, payload.payment_id)
            appt = (
                await session.get(Appointment, payment.appointment_id)
                if payment and payment.appointment_id
                else None
            )
            if payment is None or appt is None or payment.status != "creating":
                return
            service = await session.get_one(Service, appt.service_id)
            request = self._checkout_request(payment, appt, service.name)
        try:
            created = await gateway.create_checkout(request)
        except GatewayError as exc:
            await self._checkout_failed(payment.id, exc)
            return
        async with self.db.transaction() as session:
            await self._checkout_created(session, payment.id, created)

    def _checkout_request(self, payment: Payment, appt: Appointment, service_name: str) -> CheckoutRequest:
        now = self.now()
        hold_until = appt.hold_expires_at or now + SESSION_MAX
        expires = min(max(hold_until, now + SESSION_MIN), now + SESSION_MAX)
        when = f"{appt.start_at.astimezone(self.tz):%a %b %d %H:%M}"
        return CheckoutRequest(
            payment_id=payment.id,
            appointment_id=appt.id,
            client_id=appt.client_id,
            amount_cents=payment.amount_cents,
            currency=payment.currency,
            description=f"{'Card hold' if payment.kind == 'hold' else 'Deposit'}: {service_name}, {when}",
            expires_at=expires,
            success_url=self.pages.success_url,
            cancel_url=self.pages.cancel_url,
            hold=payment.kind == "hold",
            # Per appointment: a retry after a timeout gets the same session, never a second one.
            idempotency_key=f"checkout:{appt.id}",
        )

    async def _checkout_failed(self, payment_id: int, exc: GatewayError) -> None:
        if exc.retryable:
            raise RetryLater(30.0, str(exc))
        async with self.db.transaction() as session:
            payment = await locked(session, payment_id)
            if payment is None or payment.status != "creating":
                return
            record(payment, "failed", str(exc)[:200], self.now())
            await raise_alert(
                session,
                "stripe_checkout",
                f"A deposit link could not be made ({str(exc)[:200]}); check the Stripe keys.",
            )
            if payment.appointment_id is not None:
                await notify_admin(
                    session, "booking_changed", appointment_id=payment.appointment_id, event="deposit_failed"
                )

    async def _checkout_created(
        self, session: AsyncSession, payment_id: int, created: CheckoutSession
    ) -> None:
        payment = await locked(session, payment_id)
        if payment is None or payment.appointment_id is None:
            return
        appt = await session.get_one(Appointment, payment.appointment_id)
        payment.stripe_checkout_session_id = created.id
        payment.checkout_url = created.url
        payment.expires_at = created.expires_at
        if payment.status != "creating":  # cancelled or expired while Stripe was asked
            await self._expire(session, payment, "no longer needed when the link was made")
            return
        record(payment, "pending", f"checkout session {created.id}", self.now())
        until = created.expires_at or self.now() + SESSION_MIN
        await tell_customer(
            session,
            appt,
            texts.deposit_link(
                payment.amount_cents,
                payment.currency,
                hold=payment.kind == "hold",
                url=created.url or "",
                start=appt.start_at,
                until=until,
                tz=self.tz,
            ),
            (QuickReply(texts.pay_button(payment.kind == "hold"), "", url=created.url),)
            if created.url
            else (),
        )
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event="deposit_pending")
        await enqueue(
            session,
            RECONCILE_JOB,
            ReconcilePayload(payment_id=payment.id).dump(),
            run_at=max(until - RECONCILE_LEAD, self.now()),
            idempotency_key=f"{RECONCILE_JOB}:{payment.id}",
        )

    # --- webhook events (the job behind POST /webhook/stripe) ------------------------------------------
    async def event_job(self, job: ClaimedJob) -> None:
        event = ev.StripeEventPayload.load(job.payload)
        async with self.db.transaction() as session:
            payment = await self._find(session, event)
            if payment is None:
                log.info("stripe event for no payment of ours", extra={"type": event.type})
                return
            await self._apply(session, payment, event)

    async def _find(self, session: AsyncSession, event: ev.StripeEventPayload) -> Payment | None:
        if event.payment_id is not None:
            found = await locked(session, event.payment_id)
            if found is not None:
                return found
        if event.type in ev.SESSION_EVENTS:
            column, value = Payment.stripe_checkout_session_id, event.object_id
        elif event.payment_intent_id:
            column, value = Payment.stripe_payment_intent_id, event.payment_intent_id
        else:
            return None
        row = (await session.execute(select(Payment.id).where(column == value))).scalar_one_or_none()
        return await locked(session, row) if row is not None else None

    async def _apply(self, session: AsyncSession, payment: Payment, event: ev.StripeEventPayload) -> None:
        if event.type in ev.SESSION_EVENTS and payment.stripe_checkout_session_id not in (
            None,
            event.object_id,
        ):
            return  # another session's event (a forged or stale metadata): not this payment's
        if event.payment_intent_id and not payment.stripe_payment_intent_id:
            payment.stripe_payment_intent_id = event.payment_intent_id
        if event.type in ev.SESSION_EVENTS and payment.stripe_checkout_session_id is None:
            payment.stripe_checkout_session_id = event.object_id
        kind = event.type
        if kind in (ev.SESSION_COMPLETED, ev.SESSION_ASYNC_SUCCEEDED):
            if event.payment_status == "paid":
                await self._received(session, payment, "held" if payment.kind == "hold" else "paid", kind)
            elif payment.kind == "hold" and kind == ev.SESSION_COMPLETED:
                await self._received(session, payment, "held", kind)
        elif kind == ev.INTENT_CAPTURABLE and payment.kind == "hold":
            await self._received(session, payment, "held", kind)
        elif kind == ev.SESSION_ASYNC_FAILED and payment.status in LIVE_STATUSES:
            record(payment, "failed", kind, self.now())
            await self._tell(session, payment, texts.PAYMENT_FAILED, "deposit_failed")
        elif kind == ev.SESSION_EXPIRED and payment.status in LIVE_STATUSES:
            record(payment, "expired", kind, self.now())
            await self._tell(session, payment, None, "deposit_expired")
        elif kind == ev.INTENT_FAILED:
            payment.history = [
                *(payment.history or []),
                {"at": self.now().isoformat(), "status": payment.status, "note": kind},
            ]
        elif (
            kind == ev.CHARGE_REFUNDED
            and payment.status != "refunded"
            and (event.amount_refunded or 0) >= payment.amount_cents
        ):
            record(payment, "refunded", kind, self.now())
            await self._tell(
                session,
                payment,
                texts.refunded(payment.amount_cents, payment.currency, hold=False),
                "deposit_refunded",
            )

    async def _received(self, session: AsyncSession, payment: Payment, status: str, why: str) -> None:
        """Money in (or a card held): only once, and only from a status it can follow."""
        if payment.status not in (*LIVE_STATUSES, "expired", "failed"):
            return  # already received (a duplicate, or a later event came first)
        appt = await session.get(Appointment, payment.appointment_id) if payment.appointment_id else None
        record(payment, status, why, self.now())
        if appt is None or appt.status not in LIVE:
            # Paid after the request was released (a last-minute payment, a lost race): give it back.
            await start_action(
                session, payment, "release" if status == "held" else "refund", "paid too late", self.now()
            )
            if appt is not None:
                await tell_customer(
                    session, appt, texts.paid_too_late(payment.amount_cents, payment.currency)
                )
            return
        body = texts.receipt(
            payment.amount_cents, payment.currency, hold=status == "held", start=appt.start_at, tz=self.tz
        )
        await self._tell(session, payment, body, "payment_received")

    async def _tell(self, session: AsyncSession, payment: Payment, body: str | None, card_event: str) -> None:
        if payment.appointment_id is None:
            return
        appt = await session.get_one(Appointment, payment.appointment_id)
        if body:
            await tell_customer(session, appt, body)
        await notify_admin(session, "booking_changed", appointment_id=appt.id, event=card_event)

    # --- refunds, captures, releases, expiries --------------------------------------------------------
    async def action_job(self, job: ClaimedJob) -> None:
        payload = ActionPayload.load(job.payload)
        gateway = self._gateway()
        async with self.db.transaction() as session:
            payment = await session.get(Payment, payload.payment_id)
            if payment is None:
                return
            status, intent, checkout = (
                payment.status,
                payment.stripe_payment_intent_id,
                payment.stripe_checkout_session_id,
            )
            amount = payment.amount_cents
        if payload.action == "expire":
            if checkout:
                await self._expire_at_stripe(gateway, payment.id, checkout)
            return
        if status != ACTIONS.get(payload.action) or not intent:
            return  # done already, or changed meanwhile
        key = f"{payload.action}:{payment.id}"
        try:
            if payload.action == "refund":
                result = await gateway.refund(intent, amount_cents=amount, idempotency_key=key)
            elif payload.action == "capture":
                result = await gateway.capture(intent, idempotency_key=key)
            else:
                result = await gateway.release(intent, idempotency_key=key)
        except GatewayError as exc:
            if exc.retryable:
                raise RetryLater(30.0, str(exc)) from None
            await self._action_refused(payment.id, payload.action, exc)
            return
        async with self.db.transaction() as session:
            await self._action_done(session, payment.id, payload.action, result.id, result.status)

    async def _action_done(
        self, session: AsyncSession, payment_id: int, action: str, object_id: str, result: str
    ) -> None:
        payment = await locked(session, payment_id)
        if payment is None or payment.status != ACTIONS[action]:
            return
        if action == "refund":
            payment.stripe_refund_id = object_id
            if result in ("succeeded", "pending"):
                record(payment, "refunded", f"refund {object_id}: {result}", self.now())
                body = texts.refunded(payment.amount_cents, payment.currency, hold=False)
                await self._tell(session, payment, body, "deposit_refunded")
        elif action == "capture":
            record(payment, "captured", f"captured: {result}", self.now())
            await self._tell(session, payment, None, "deposit_captured")
        else:
            record(payment, "released", f"released: {result}", self.now())
            body = texts.refunded(payment.amount_cents, payment.currency, hold=True)
            await self._tell(session, payment, body, "deposit_released")

    async def _action_refused(self, payment_id: int, action: str, exc: GatewayError) -> None:
        async with self.db.transaction() as session:
            payment = await locked(session, payment_id)
            if payment is None:
                return
            payment.history = [
                *(payment.history or []),
                {
                    "at": self.now().isoformat(),
                    "status": payment.status,
                    "note": f"{action} refused: {str(exc)[:200]}",
                },
            ]
            await raise_alert(
                session,
                f"stripe_{action}:{payment_id}",
                f"Stripe refused to {action} the deposit of booking #{payment.appointment_id}: "
                f"{str(exc)[:200]}",
            )

    async def _expire_at_stripe(self, gateway: PaymentGateway, payment_id: int, checkout: str) -> None:
        try:
            state = await gateway.expire_checkout(checkout)
        except GatewayError as exc:
            if exc.retryable:
                raise RetryLater(30.0, str(exc)) from None
            state = await self._read_session(gateway, checkout)  # already complete or expired
        async with self.db.transaction() as session:
            payment = await locked(session, payment_id)
            if payment is not None:
                await self._settle(session, payment, state)

    # --- reconciliation: the webhook may never come --------------------------------------------------------
    async def reconcile_job(self, job: ClaimedJob) -> None:
        payload = ReconcilePayload.load(job.payload)
        gateway = self._gateway()
        async with self.db.transaction() as session:
            payment = await session.get(Payment, payload.payment_id)
            if (
                payment is None
                or payment.status not in LIVE_STATUSES
                or not payment.stripe_checkout_session_id
            ):
                return
            checkout = payment.stripe_checkout_session_id
        state = await self._read_session(gateway, checkout)
        async with self.db.transaction() as session:
            payment = await locked(session, payload.payment_id)
            if payment is not None:
                await self._settle(session, payment, state)

    async def _read_session(self, gateway: PaymentGateway, checkout: str) -> CheckoutSession:
        try:
            return await gateway.get_checkout(checkout)
        except GatewayError as exc:
            raise RetryLater(30.0, str(exc)) from None

    async def _settle(self, session: AsyncSession, payment: Payment, state: CheckoutSession) -> None:
        """Stripe's view of a session, applied as its webhook would have been."""
        if state.payment_intent_id and not payment.stripe_payment_intent_id:
            payment.stripe_payment_intent_id = state.payment_intent_id
        if state.status == "complete" and (state.payment_status == "paid" or payment.kind == "hold"):
            await self._received(session, payment, "held" if payment.kind == "hold" else "paid", "reconciled")
        elif state.status == "expired" and payment.status in LIVE_STATUSES:
            record(payment, "expired", "reconciled: expired at Stripe", self.now())
            await self._tell(session, payment, None, "deposit_expired")

    def _gateway(self) -> PaymentGateway:
        if self.gateway is None:
            raise RetryLater(3600.0, "Stripe is not configured")
        return self.gateway


async def _appointment(session: AsyncSession, event: Event) -> Appointment | None:
    booking = event.data.get("booking") or {}
    appointment_id = booking.get("id") if isinstance(booking, dict) else None
    return await session.get(Appointment, int(appointment_id)) if appointment_id else None
