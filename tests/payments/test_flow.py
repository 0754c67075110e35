"""The whole deposit flow by buttons, no LLM, as production wires it (cheshire/wiring.py's
`wire_payments`): a customer books a giant dog on Telegram by tapping, gets a Checkout link as a
button, pays (the signed completion webhook), gets the receipt; Kimmie's card says "deposit: paid",
she approves, then refunds from the card with a confirming tap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.callbacks import ApptAction
from cheshire.wiring import PaymentsWiring, wire_payments
from core.db.database import Database
from core.db.models import Appointment, Payment
from core.events import FollowUps
from tests.bot.conftest import CUSTOMER, KIMMIE, Harness, build_harness
from tests.bot.conftest import make_settings as bot_settings
from tests.fakes.stripe import API_KEY, FakeStripe, signed
from tests.fakes.telegram_api import Call, FakeTelegramAPI
from tests.payments.conftest import WHSEC
from tests.support import databases


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def wired(
    database_url: str, fake_tg: FakeTelegramAPI, fake_stripe: FakeStripe, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[tuple[Harness, PaymentsWiring, Any]]:
    settings = bot_settings(
        database_url,
        stripe_secret_key=API_KEY,
        stripe_webhook_secret=WHSEC,
        stripe_api_base=fake_stripe.base_url,
        public_base_url="https://cheshire.example",
        telegram_webhook_secret="tg-secret",
    )
    subscribers = FollowUps()
    db = Database(database_url, subscribers=subscribers)
    await databases.wipe(db)
    h = await build_harness(db, settings, fake_tg)
    app = web.Application()
    payments = wire_payments(settings=settings, db=db, registry=h.registry, app=app, subscribers=subscribers)
    client = await aiohttp_client(app)
    try:
        yield h, payments, client
    finally:
        for hook in payments.on_shutdown:
            await hook()
        await h.bot.session.close()
        await db.dispose()


def _to_customer(h: Harness) -> list[Call]:
    return [c for c in h.fake.calls if c.method == "sendMessage" and c.chat_id == CUSTOMER]


async def _tap(h: Harness, call: Call, data: str, *, user: int = CUSTOMER) -> None:
    await h.feed(h.callback(user, data, markup=call.data.get("reply_markup") or {}))
    await h.run_jobs()


async def _book_a_giant_by_buttons(h: Harness) -> Appointment:
    await h.feed(h.message(CUSTOMER, "/start"))
    await h.run_jobs()
    await _tap(h, _to_customer(h)[-1], "BOOK")
    preferred = ["BK:full_groom", ":new", ":giant", ":short"]
    for _ in range(10):
        async with h.db.transaction() as session:
            found = (await session.execute(select(Appointment))).scalar_one_or_none()
        if found is not None:
            return found
        last = _to_customer(h)[-1]
        if "dog's name" in last.text and not last.buttons():  # asked before filing (issue 14): typed
            await h.feed(h.message(CUSTOMER, "Biscuit"))
            await h.run_jobs()
            continue
        buttons = [d for _, d in last.buttons() if d.startswith("BK:")]
        assert buttons, f"no booking button in {last.text!r}"
        await _tap(h, last, next((d for d in buttons for end in preferred if d.endswith(end)), buttons[0]))
    raise AssertionError("the button flow did not book")


async def test_request_link_payment_receipt_approve_and_refund_by_buttons(
    wired: tuple[Harness, PaymentsWiring, Any], fake_stripe: FakeStripe
) -> None:
    h, _payments, client = wired
    assert h.settings.anthropic_api_key is None and h.settings.openai_api_key is None
    appt = await _book_a_giant_by_buttons(h)
    await h.run_jobs()

    # The link, as a button on Telegram.
    link = next(c for c in reversed(_to_customer(h)) if "deposit" in c.text)
    [(title, url)] = [(t, d) for t, d in link.buttons() if d.startswith("https://")]
    assert title == "💳 Pay the deposit" and url.startswith("https://checkout.stripe.com/c/pay/cs_test_")
    async with h.db.transaction() as session:
        payment = (await session.execute(select(Payment))).scalar_one()
    assert payment.appointment_id == appt.id and payment.status == "pending" and payment.checkout_url == url
    cards = [c for c in h.fake.calls if c.chat_id == KIMMIE and "Booking request" in c.text]
    assert "deposit: pending ($20)" in cards[-1].text

    # The customer pays; Stripe's signed completion arrives.
    session_obj = fake_stripe.complete(payment.stripe_checkout_session_id or "")
    raw, header = signed(fake_stripe.event("checkout.session.completed", session_obj), WHSEC)
    response = await client.post("/webhook/stripe", data=raw, headers={"Stripe-Signature": header})
    assert response.status == 200
    await h.run_jobs()
    receipt = _to_customer(h)[-1]
    assert receipt.text.startswith("Deposit of $20 received")
    card = [c for c in h.fake.calls if c.chat_id == KIMMIE and "Booking request" in c.text][-1]
    assert "deposit: paid ($20)" in card.text
    assert any("deposit paid" in c.text for c in h.fake.calls if c.chat_id == KIMMIE)

    # Kimmie approves from the card.
    await h.feed(h.callback(KIMMIE, ApptAction(action="approve", appointment_id=appt.id).pack()))
    await h.run_jobs()
    async with h.db.transaction() as session:
        assert (await session.get_one(Appointment, appt.id)).status == "confirmed"

    # And refunds from it: the first tap only asks.
    await h.feed(h.callback(KIMMIE, ApptAction(action="refund", appointment_id=appt.id).pack()))
    ask = h.fake.last("editMessageText")
    assert "Refund the deposit" in ask.text and any(t == "✅ Yes, refund" for t, _ in ask.buttons())
    assert fake_stripe.posts("/v1/refunds") == []
    await h.feed(h.callback(KIMMIE, ApptAction(action="refund_yes", appointment_id=appt.id).pack()))
    await h.run_jobs()
    [refund] = fake_stripe.posts("/v1/refunds")
    assert refund.headers["Idempotency-Key"] == f"refund:{payment.id}"
    assert "deposit was refunded" in _to_customer(h)[-1].text
    async with h.db.transaction() as session:
        done = (await session.execute(select(Payment))).scalar_one()
    assert done.status == "refunded"
    assert [e["status"] for e in done.history] == [
        "creating",
        "pending",
        "paid",
        "refund_pending",
        "refunded",
    ]
