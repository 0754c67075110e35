"""Decisions that forgive, on Kimmie's Telegram card (issue 14, section 3): Decline asks why with one
more tap, Undo restores the request for 5 minutes, Approve stays one tap, and a customer tapping the
time Kimmie offered is booked without her approving it again."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.callbacks import ApptAction, DeclineReason
from core.db.models import Appointment, Message
from core.types import Channel
from tests.bot.conftest import CUSTOMER, KIMMIE, Harness
from tests.fakes.telegram_api import Call


async def _card(h: Harness) -> tuple[int, int]:
    """A Telegram customer's request whose card reached Kimmie: (appointment id, card message id)."""
    client_id, pet_id, _ = await h.customer_with_pet(channel=Channel.TELEGRAM)
    booking = await h.request(client_id, pet_id)
    await h.run_jobs()
    card = h.fake.last("sendMessage")
    assert card.chat_id == KIMMIE
    return booking.id, len([c for c in h.fake.calls if c.method in {"sendMessage", "sendPhoto"}])


async def _row(h: Harness, appointment_id: int) -> Appointment:
    async with h.db.transaction() as session:
        return await session.get_one(Appointment, appointment_id)


def _to_customer(h: Harness) -> list[Call]:
    return [c for c in h.fake.calls_to("sendMessage") if c.chat_id == CUSTOMER]


async def test_decline_asks_why_then_undo_restores_the_request(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    h.fake.clear()

    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="decline", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    picker = h.fake.last("editMessageText")
    assert [t for t, _ in picker.buttons()] == ["📅 Fully booked", "🙅 Not a fit", "… Other reason", "↩ Back"]
    assert "Why decline?" in picker.text
    assert (await _row(h, appointment_id)).status == "requested"  # the first tap changes nothing

    await h.feed(h.callback(KIMMIE, picker.button_data("Fully booked"), message_id=message_id))
    row = await _row(h, appointment_id)
    assert (row.status, row.decline_code) == ("declined", "fully_booked")
    card = h.fake.last("editMessageText")
    assert "Declined (fully booked)" in card.text and "Undo is possible for 5 minutes" in card.text
    assert [t for t, _ in card.buttons() if "Approve" in t] == []
    undo = card.button_data("Undo")
    assert undo == ApptAction(action="undo", appointment_id=appointment_id).pack()
    await h.run_jobs()
    assert "fully booked" in _to_customer(h)[-1].text

    await h.feed(h.callback(KIMMIE, undo, message_id=message_id))
    row = await _row(h, appointment_id)
    assert (row.status, row.decline_code) == ("requested", None)
    card = h.fake.last("editMessageText")
    assert "Decline undone" in card.text and "waiting for your decision" in card.text
    assert any("Approve" in t for t, _ in card.buttons()) and not any("Undo" in t for t, _ in card.buttons())
    await h.run_jobs()
    assert "please ignore the last message" in _to_customer(h)[-1].text

    # Approve stays one tap.
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="approve", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    assert (await _row(h, appointment_id)).status == "confirmed"


async def test_undo_after_five_minutes_says_too_late(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    reason = DeclineReason(reason="not_a_fit", appointment_id=appointment_id).pack()
    await h.feed(h.callback(KIMMIE, reason, message_id=message_id))
    async with h.db.transaction() as session:
        row = await session.get_one(Appointment, appointment_id)
        assert row.decided_at is not None
        row.decided_at -= timedelta(minutes=6)
    h.fake.clear()
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="undo", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    answer = h.fake.last("answerCallbackQuery")
    assert answer.data["show_alert"] in ("true", True) and "Too late to undo" in answer.data["text"]
    assert (await _row(h, appointment_id)).status == "declined"


async def test_a_customer_pressing_a_decline_reason_is_refused(harness: Harness) -> None:
    h = harness
    appointment_id, _ = await _card(h)
    await h.feed(h.callback(CUSTOMER, DeclineReason(reason="other", appointment_id=appointment_id).pack()))
    assert (await _row(h, appointment_id)).status == "requested"
    assert "only for the salon staff" in h.fake.last("answerCallbackQuery").data["text"]


async def test_the_customer_taking_kimmies_offer_is_booked_without_a_second_approval(
    harness: Harness,
) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="offer", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    picker = h.fake.last("editMessageText")
    _title, alt = next((t, d) for t, d in picker.buttons() if d.startswith("k.ap:alt:"))
    await h.feed(h.callback(KIMMIE, alt, message_id=message_id))
    await h.run_jobs()
    offer = _to_customer(h)[-1]
    offered = [(t, d) for t, d in offer.buttons() if d.startswith("ALT:")]
    assert len(offered) == 1
    h.fake.clear()

    await h.feed(h.callback(CUSTOMER, offered[0][1], markup=offer.data.get("reply_markup")))
    await h.run_jobs()

    async with h.db.transaction() as session:
        rows = list((await session.execute(select(Appointment).order_by(Appointment.id))).scalars())
    assert [r.status for r in rows] == ["declined", "confirmed"]
    to_kimmie = [c for c in h.fake.calls_to("sendMessage") if c.chat_id == KIMMIE]
    assert len(to_kimmie) == 1  # one line, no card asking her to approve
    assert "took the time you offered" in to_kimmie[0].text and not to_kimmie[0].buttons()
    said = " ".join(c.text for c in _to_customer(h))
    assert "You're booked!" in said
    async with h.db.transaction() as session:
        out = (await session.execute(select(Message.text).where(Message.direction == "out"))).scalars()
        assert not any("will confirm shortly" in (t or "") for t in out)
