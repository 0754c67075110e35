"""Deposits end to end on the real service parts: the booking request asks for a deposit through the
real stripe SDK against the fake Stripe, the signed webhook marks it paid and the customer gets a
receipt, and the booking's decisions refund, keep, capture or release it by policy."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.booking.catalog import CatalogError, set_config
from core.db.models import Appointment, Job, Payment, ProcessedEvent, utcnow
from core.notify.views import load_card
from core.payments.gateway import CheckoutRequest, GatewayError
from core.settings import STRIPE_SDK_API_VERSION, Settings
from core.types import SizeClass
from tests.payments.conftest import WHSEC, Rig

Make = Callable[..., Any]


# --- asking for it --------------------------------------------------------------------------------


async def test_a_first_time_giant_gets_a_checkout_link_with_the_contracted_fields(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    appt = await rig.appointment(booking.id)

    [call] = rig.fake.posts("/v1/checkout/sessions")
    p = call.params
    assert p["mode"] == "payment"
    assert p["line_items"][0]["price_data"]["unit_amount"] == "2000"
    assert p["line_items"][0]["price_data"]["currency"] == "usd"
    assert p["metadata"]["appointment_id"] == str(booking.id)
    assert p["metadata"]["client_id"] == str(booking.client_id)
    assert p["client_reference_id"] == str(booking.id)
    assert appt.hold_expires_at is not None
    assert int(p["expires_at"]) == int(appt.hold_expires_at.timestamp())
    assert p["success_url"] == "https://cheshire.example/pay/success"
    assert p["cancel_url"] == "https://cheshire.example/pay/cancel"
    assert call.headers["Authorization"].startswith("Bearer sk_test_")
    assert call.headers["Stripe-Version"] == STRIPE_SDK_API_VERSION
    assert call.headers["Idempotency-Key"] == f"checkout:{booking.id}"
    assert "capture_method" not in p["payment_intent_data"]

    assert payment.status == "pending" and payment.checkout_url
    [link] = await rig.said()
    assert "$20 deposit" in link and payment.checkout_url in link and "off the final price" in link
    assert appt.status == "requested"  # the slot stays held while payment is pending
    async with rig.db.transaction() as session:
        card = await load_card(session, rig.booking, booking.id)
    assert card.deposit is not None and card.deposit.line == "deposit: pending ($20)"


async def test_a_small_dog_or_a_returning_client_is_not_asked(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    client_id, pet_id = await rig.customer(size=SizeClass.SMALL)
    small = await rig.request(client_id, pet_id)
    client_id, pet_id = await rig.customer()
    earlier = await rig.request(client_id, pet_id)  # a giant whose owner then came
    async with rig.db.transaction() as session:
        await session.execute(
            update(Appointment).where(Appointment.id == earlier.id).values(status="completed")
        )
    again = await rig.request(client_id, pet_id, days_ahead=3)
    await rig.run_jobs()
    async with rig.db.transaction() as session:
        rows = (await session.execute(select(Payment))).scalars().all()
    assert [r.appointment_id for r in rows] == [earlier.id]  # only the first visit asked
    assert small.id not in [r.appointment_id for r in rows] and again.id not in [
        r.appointment_id for r in rows
    ]


async def test_without_stripe_no_deposit_is_asked_and_the_card_says_so(
    make_rig: Make, database_url: str
) -> None:
    rig: Rig = await make_rig(stripe_on=False)
    client_id, pet_id = await rig.customer()
    booking = await rig.request(client_id, pet_id)
    await rig.run_jobs()
    assert rig.fake.calls == [] and await rig.said() == []
    async with rig.db.transaction() as session:
        card = await load_card(session, rig.booking, booking.id)
    assert card.deposit is not None and card.deposit.line == "deposit: not collected (Stripe off)"
    bare = Settings(_env_file=None, database_url=database_url, environment="test")  # type: ignore[call-arg]
    assert bare.integrations()["stripe"] is False
    assert rig.settings.integrations()["stripe"] is True


def test_the_default_api_version_is_the_one_the_sdk_pins() -> None:
    import stripe

    assert stripe.api_version == STRIPE_SDK_API_VERSION


# --- the webhook ------------------------------------------------------------------------------------


async def test_completion_sends_the_receipt_and_updates_the_card_then_kimmie_approves(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    await rig.pay(payment)
    paid = await rig.payment(booking.id)
    assert paid.status == "paid" and paid.stripe_payment_intent_id
    assert [h["status"] for h in paid.history] == ["creating", "pending", "paid"]
    receipt = (await rig.said())[-1]
    assert receipt.startswith("Deposit of $20 received") and "off the final price" in receipt
    assert "payment_received" in await rig.kimmie_heard()
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=booking.id)
        card = await load_card(session, rig.booking, booking.id)
    assert card.deposit is not None and card.deposit.line == "deposit: paid ($20)"
    assert card.booking.status.value == "confirmed"


async def test_kimmie_may_approve_before_it_is_paid(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=booking.id)
    await rig.run_jobs()
    await rig.pay(payment)
    assert (await rig.payment(booking.id)).status == "paid"


@pytest.mark.parametrize("case", ["missing", "wrong_secret", "stale", "garbage"])
async def test_a_bad_signature_is_400_and_changes_nothing(make_rig: Make, case: str) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    session = rig.fake.complete(payment.stripe_checkout_session_id or "")
    event = rig.fake.event("checkout.session.completed", session)
    if case == "missing":
        response = await rig.client.post("/webhook/stripe", json=event)
        status = response.status
    elif case == "wrong_secret":
        status = await rig.post_event(event, secret="whsec_not_ours")
    elif case == "stale":
        status = await rig.post_event(event, timestamp=int(time.time()) - 301)
    else:
        response = await rig.client.post(
            "/webhook/stripe", data=b"{}", headers={"Stripe-Signature": "t=abc,v1=zz"}
        )
        status = response.status
    assert status == 400
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "pending"
    async with rig.db.transaction() as session_:
        assert await session_.scalar(select(func.count()).select_from(ProcessedEvent)) == 0


async def test_a_signed_event_without_its_fields_is_400_and_an_unknown_type_is_ignored(
    make_rig: Make,
) -> None:
    rig: Rig = await make_rig()
    assert await rig.post_event({"id": "evt_1", "type": "checkout.session.completed", "data": {}}) == 400
    assert await rig.post_event({"type": "checkout.session.completed"}) == 400
    no_status = {"id": "evt_2", "type": "checkout.session.completed", "data": {"object": {"id": "cs_1"}}}
    assert await rig.post_event(no_status) == 400
    raw_list = b"[1, 2]"
    from tests.fakes.stripe import sign

    response = await rig.client.post(
        "/webhook/stripe", data=raw_list, headers={"Stripe-Signature": sign(raw_list, WHSEC)}
    )
    assert response.status == 400
    assert await rig.post_event(rig.fake.event("customer.created", {"id": "cus_1"})) == 200
    async with rig.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 0
        assert await session.scalar(select(func.count()).select_from(Job)) == 0


async def test_a_redelivery_is_200_and_changes_nothing(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    _booking, payment = await rig.requested_with_link()
    session = rig.fake.complete(payment.stripe_checkout_session_id or "")
    event = rig.fake.event("checkout.session.completed", session)
    assert [await rig.post_event(event) for _ in range(3)] == [200, 200, 200]
    await rig.run_jobs()
    assert await rig.post_event(event) == 200
    await rig.run_jobs()
    receipts = [t for t in await rig.said() if t.startswith("Deposit of")]
    assert len(receipts) == 1
    async with rig.db.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(Job).where(Job.kind == "stripe_event")) == 1


async def test_expired_after_completed_changes_nothing(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    session = await rig.pay(payment)
    expired = dict(session, status="expired")
    assert await rig.post_event(rig.fake.event("checkout.session.expired", expired)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "paid"
    assert (await rig.appointment(booking.id)).status == "requested"


async def test_an_unpaid_completion_waits_and_async_success_pays(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    session = dict(rig.fake.complete(payment.stripe_checkout_session_id or ""), payment_status="unpaid")
    assert await rig.post_event(rig.fake.event("checkout.session.completed", session)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "pending"
    paid = dict(session, payment_status="paid")
    assert await rig.post_event(rig.fake.event("checkout.session.async_payment_succeeded", paid)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "paid"


async def test_an_event_for_an_unknown_session_is_200_and_changes_nothing(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, _payment = await rig.requested_with_link()
    stranger = {
        "id": "cs_test_unknown",
        "object": "checkout.session",
        "payment_status": "paid",
        "metadata": {},
    }
    assert await rig.post_event(rig.fake.event("checkout.session.completed", stranger)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "pending"
    async with rig.db.transaction() as s:
        job = (await s.execute(select(Job).where(Job.kind == "stripe_event"))).scalar_one()
    assert job.status == "done"


async def test_an_unpaid_link_expiring_at_stripe_shows_expired(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    expired = rig.fake.expire(payment.stripe_checkout_session_id or "")
    assert await rig.post_event(rig.fake.event("checkout.session.expired", expired)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "expired"
    assert "deposit_expired" in await rig.kimmie_heard()


# --- the hold running out, refunds, fees ------------------------------------------------------------


async def test_the_hold_expiring_unpaid_releases_the_slot_and_tells_both(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    async with rig.db.transaction() as session:
        await session.execute(
            update(Appointment)
            .where(Appointment.id == booking.id)
            .values(hold_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.execute(update(Job).where(Job.kind == "expire_hold").values(run_at=utcnow()))
    await rig.run_jobs()
    assert (await rig.appointment(booking.id)).status == "expired"
    assert (await rig.payment(booking.id)).status == "expired"
    assert rig.fake.sessions[payment.stripe_checkout_session_id or ""]["status"] == "expired"
    assert "slot was released" in (await rig.said())[-1]
    assert "expired" in await rig.kimmie_heard()


async def test_declined_is_refunded_through_the_refunds_api_with_a_key(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    await rig.pay(payment)
    async with rig.db.transaction() as session:
        await rig.booking.decline(session, appointment_id=booking.id)
    await rig.run_jobs()
    [refund] = rig.fake.posts("/v1/refunds")
    assert refund.params == {"payment_intent": payment_intent(rig, payment), "amount": "2000"}
    assert refund.headers["Idempotency-Key"] == f"refund:{payment.id}"
    done = await rig.payment(booking.id)
    assert done.status == "refunded" and done.stripe_refund_id
    assert "deposit was refunded" in (await rig.said())[-1]
    # Stripe's own charge.refunded afterwards changes nothing more.
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": done.stripe_payment_intent_id,
        "amount_refunded": 2000,
    }
    assert await rig.post_event(rig.fake.event("charge.refunded", charge)) == 200
    await rig.run_jobs()
    assert len([t for t in await rig.said() if "refunded" in t]) == 1


def payment_intent(rig: Rig, payment: Payment) -> str:
    return str(rig.fake.sessions[payment.stripe_checkout_session_id or ""]["payment_intent"])


async def test_cancelled_in_time_is_refunded_and_late_is_kept(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    early, payment = await rig.requested_with_link(days_ahead=3)
    await rig.pay(payment)
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=early.id)
    async with rig.db.transaction() as session:
        await rig.booking.cancel(session, appointment_id=early.id, client_id=early.client_id)
    await rig.run_jobs()
    assert (await rig.payment(early.id)).status == "refunded"

    late, payment = await rig.requested_with_link(days_ahead=3)
    await rig.pay(payment)
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=late.id)
        # Inside the notice: Kimmie's policy lets only her cancel now, so move the visit closer.
        await session.execute(
            update(Appointment)
            .where(Appointment.id == late.id)
            .values(start_at=utcnow() + timedelta(hours=30))
        )
    rules_notice = {
        "refund_notice_hours": 48,
        "rules": [{"name": "first visit", "first_visit": True, "amount_cents": 2000}],
    }
    async with rig.db.transaction() as session:
        await set_config(session, "deposits", rules_notice)
        await rig.booking.cancel(session, appointment_id=late.id, client_id=late.client_id)
    await rig.run_jobs()
    kept = await rig.payment(late.id)
    assert kept.status == "kept" and kept.history[-1]["note"] == "late cancellation"
    assert len(rig.fake.posts("/v1/refunds")) == 1


async def test_a_no_show_keeps_the_deposit(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    await rig.pay(payment)
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=booking.id)
        await rig.booking.no_show(session, appointment_id=booking.id)
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "kept"
    assert rig.fake.posts("/v1/refunds") == []


async def test_a_payment_after_the_request_was_cancelled_is_refunded(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    session = rig.fake.complete(payment.stripe_checkout_session_id or "")  # paid, webhook still on its way
    async with rig.db.transaction() as s:
        await rig.booking.cancel(s, appointment_id=booking.id, client_id=booking.client_id)
    await rig.run_jobs()
    assert await rig.post_event(rig.fake.event("checkout.session.completed", session)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "refunded"
    assert any("being refunded" in t for t in await rig.said())


# --- the hold kind ---------------------------------------------------------------------------------------

HOLD = {
    "rules": [
        {
            "name": "first visit, giant",
            "first_visit": True,
            "sizes": ["giant"],
            "amount_cents": 2000,
            "kind": "hold",
        }
    ]
}


async def hold_rig(make_rig: Make) -> Rig:
    rig: Rig = await make_rig()
    async with rig.db.transaction() as session:
        await set_config(session, "deposits", HOLD)
    return rig


async def test_a_hold_is_a_manual_capture_captured_on_a_no_show(make_rig: Make) -> None:
    rig = await hold_rig(make_rig)
    booking, payment = await rig.requested_with_link()
    [call] = rig.fake.posts("/v1/checkout/sessions")
    assert call.params["payment_intent_data"]["capture_method"] == "manual"
    assert payment.kind == "hold"
    await rig.pay(payment)
    held = await rig.payment(booking.id)
    assert held.status == "held" and (await rig.said())[-1].startswith("Card hold of $20 received")
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=booking.id)
        await rig.booking.no_show(session, appointment_id=booking.id)
    await rig.run_jobs()
    [capture] = rig.fake.posts("/v1/payment_intents/")
    assert capture.path.endswith("/capture") and capture.headers["Idempotency-Key"] == f"capture:{payment.id}"
    assert (await rig.payment(booking.id)).status == "captured"
    assert rig.fake.intents[held.stripe_payment_intent_id or ""]["status"] == "succeeded"


async def test_a_hold_is_released_after_the_visit(make_rig: Make) -> None:
    rig = await hold_rig(make_rig)
    booking, payment = await rig.requested_with_link()
    await rig.pay(payment)
    capturable = rig.fake.intents[payment_intent(rig, payment)]
    # The intent's own event may arrive too (in any order): it changes nothing more.
    assert (
        await rig.post_event(
            rig.fake.event("payment_intent.amount_capturable_updated", rig.fake.public(capturable))
        )
        == 200
    )
    async with rig.db.transaction() as session:
        await rig.booking.approve(session, appointment_id=booking.id)
        await rig.booking.complete(session, appointment_id=booking.id)
    await rig.run_jobs()
    [cancel] = rig.fake.posts("/v1/payment_intents/")
    assert cancel.path.endswith("/cancel")
    assert (await rig.payment(booking.id)).status == "released"
    assert capturable["status"] == "canceled"
    assert len([t for t in await rig.said() if t.startswith("Card hold")]) == 1


async def test_a_hold_more_than_five_days_ahead_is_charged_instead(make_rig: Make) -> None:
    rig = await hold_rig(make_rig)
    booking, payment = await rig.requested_with_link(days_ahead=9)
    assert booking.start - utcnow() > timedelta(days=5)
    [call] = rig.fake.posts("/v1/checkout/sessions")
    assert "capture_method" not in call.params["payment_intent_data"]
    assert payment.kind == "charge"


# --- nothing lost without the webhook -----------------------------------------------------------------


async def test_reconciliation_finds_a_payment_whose_webhook_never_came(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    async with rig.db.transaction() as session:
        job = (await session.execute(select(Job).where(Job.kind == "payment_reconcile"))).scalar_one()
    assert payment.expires_at is not None
    assert job.run_at == payment.expires_at - timedelta(minutes=10)  # before the hold expires
    await rig.pay(payment, webhook=False)
    await rig.run_jobs(due_now=False)
    assert (await rig.payment(booking.id)).status == "pending"
    async with rig.db.transaction() as session:
        await session.execute(update(Job).where(Job.kind == "payment_reconcile").values(run_at=utcnow()))
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "paid"
    assert (await rig.said())[-1].startswith("Deposit of $20 received")
    gets = [c for c in rig.fake.calls if c.method == "GET"]
    assert [c.path for c in gets] == [f"/v1/checkout/sessions/{payment.stripe_checkout_session_id}"]


# --- Stripe's errors, through the real SDK ------------------------------------------------------------


async def test_a_rate_limit_or_outage_retries_the_link_later_with_the_same_key(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    rig.fake.fail_next(429, code="rate_limit", path_contains="/checkout/sessions")
    client_id, pet_id = await rig.customer()
    booking = await rig.request(client_id, pet_id)
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "creating"
    rig.fake.fail_next(500, path_contains="/checkout/sessions", should_retry=False)
    await rig.run_jobs(due_now=True)
    assert (await rig.payment(booking.id)).status == "creating"
    await rig.run_jobs(due_now=True)
    assert (await rig.payment(booking.id)).status == "pending"
    keys = {c.headers["Idempotency-Key"] for c in rig.fake.posts("/v1/checkout/sessions")}
    assert keys == {f"checkout:{booking.id}"} and len(rig.fake.posts("/v1/checkout/sessions")) == 3


async def test_a_card_error_on_refund_alerts_kimmie_and_moves_no_money(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    await rig.pay(payment)
    rig.fake.fail_next(402, code="card_declined", message="Your card was declined.", path_contains="/refunds")
    async with rig.db.transaction() as session:
        await rig.booking.decline(session, appointment_id=booking.id)
    await rig.run_jobs()
    stuck = await rig.payment(booking.id)
    assert stuck.status == "refund_pending" and "refund refused: stripe 402" in stuck.history[-1]["note"]
    assert "alert" in await rig.kimmie_heard()
    assert rig.fake.refunds == {}


async def test_the_gateway_replays_an_idempotent_create_and_maps_errors(make_rig: Make) -> None:
    rig: Rig = await make_rig()
    gateway = rig.payments.gateway
    assert gateway is not None
    request = CheckoutRequest(
        payment_id=1,
        appointment_id=1,
        client_id=1,
        amount_cents=2000,
        currency="usd",
        description="Deposit",
        expires_at=utcnow() + timedelta(hours=2),
        success_url="https://x/s",
        cancel_url="https://x/c",
        hold=False,
        idempotency_key="checkout:1",
    )
    first = await gateway.create_checkout(request)
    again = await gateway.create_checkout(request)
    assert first == again and len(rig.fake.sessions) == 1
    with pytest.raises(GatewayError) as refused:
        await gateway.create_checkout(
            _with(request, expires_at=utcnow() + timedelta(hours=30), idempotency_key="k2")
        )
    assert refused.value.status == 400 and not refused.value.retryable
    rig.fake.fail_next(429)
    with pytest.raises(GatewayError) as limited:
        await gateway.get_checkout(first.id)
    assert limited.value.retryable and limited.value.status == 429


def _with(request: CheckoutRequest, **changes: Any) -> CheckoutRequest:
    from dataclasses import replace

    return replace(request, **changes)


def test_a_broken_deposits_table_is_a_catalog_error() -> None:
    from core.booking.catalog import parse_catalog
    from tests.payments.conftest import CATALOG

    text = CATALOG.read_text() + '\n[[deposits.rules]]\nname = "x"\nkind = "later"\namount_cents = 100\n'
    with pytest.raises(CatalogError, match="kind"):
        parse_catalog(text)


async def test_concurrent_deliveries_share_commits_and_store_each_event_once(make_rig: Make) -> None:
    import asyncio

    rig: Rig = await make_rig()
    same = rig.fake.event("charge.refunded", {"id": "ch_x", "payment_intent": "pi_x", "amount_refunded": 1})
    others = [rig.fake.event("charge.refunded", {"id": f"ch_{n}", "amount_refunded": 1}) for n in range(5)]
    statuses = await asyncio.gather(*(rig.post_event(e) for e in [same] * 5 + others))
    assert statuses == [200] * 10
    async with rig.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 6
        assert (
            await session.scalar(select(func.count()).select_from(Job).where(Job.kind == "stripe_event")) == 6
        )


async def test_an_async_payment_that_fails_tells_the_customer_and_a_failed_attempt_is_history(
    make_rig: Make,
) -> None:
    rig: Rig = await make_rig()
    booking, payment = await rig.requested_with_link()
    intent = {"id": "pi_attempt_1", "object": "payment_intent", "metadata": {"payment_id": str(payment.id)}}
    assert await rig.post_event(rig.fake.event("payment_intent.payment_failed", intent)) == 200
    await rig.run_jobs()
    tried = await rig.payment(booking.id)
    assert tried.status == "pending" and tried.history[-1]["note"] == "payment_intent.payment_failed"
    session = dict(rig.fake.sessions[payment.stripe_checkout_session_id or ""], payment_status="unpaid")
    session = rig.fake.public(session)
    assert await rig.post_event(rig.fake.event("checkout.session.async_payment_failed", session)) == 200
    await rig.run_jobs()
    assert (await rig.payment(booking.id)).status == "failed"
    assert (await rig.said())[-1].startswith("The deposit payment did not go through")
    assert "deposit_failed" in await rig.kimmie_heard()
