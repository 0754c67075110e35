"""What reaches Kimmie: alerts once per fault, hand-over cards, booking changes editing the card,
photo cards; and the logging notifier used when Telegram is off."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import update

from bot.callbacks import ApptAction, ChatAction
from core.alerts import notify_admin, raise_alert
from core.db.models import Appointment, Pet
from core.notify.log_notifier import LoggingNotifier
from tests.bot.conftest import KIMMIE, Harness
from tests.fakes.telegram_api import Call


def _to_kimmie(h: Harness, method: str = "sendMessage") -> list[Call]:
    return [c for c in h.fake.calls_to(method) if c.chat_id == KIMMIE]


async def test_an_alert_reaches_kimmie_once_per_fault(harness: Harness) -> None:
    h = harness
    for _ in range(3):
        async with h.db.transaction() as session:
            await raise_alert(session, "llm:anthropic:model", "Claude model <claude-x> is retired & refused")
    await h.run_jobs()
    alerts = _to_kimmie(h)
    assert len(alerts) == 1
    assert alerts[0].text == "⚠️ Claude model &lt;claude-x&gt; is retired &amp; refused"


async def test_a_handover_card_has_an_open_chat_button(harness: Harness) -> None:
    h = harness
    _, _, conversation_id = await h.customer_with_pet()
    async with h.db.transaction() as session:
        await notify_admin(session, "handover", conversation_id=conversation_id, reason="asked for a human")
    await h.run_jobs()
    card = _to_kimmie(h)[-1]
    assert "Ann Lee" in card.text and "Telegram" in card.text and "asked for a human" in card.text
    assert card.button_data("Open chat") == ChatAction(action="open", conversation_id=conversation_id).pack()


async def test_a_customer_cancelling_updates_the_card_and_tells_kimmie(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    await h.run_jobs()
    async with h.db.transaction() as session:
        await h.booking.cancel(session, appointment_id=booking.id, client_id=client_id)
    await h.run_jobs()
    edit = h.fake.last("editMessageText")
    assert edit.chat_id == KIMMIE and "cancelled" in edit.text
    assert not any(d.startswith("k.ap:approve") for _, d in edit.buttons())
    assert "cancelled by the customer" in _to_kimmie(h)[-1].text


async def test_a_pet_with_a_photo_gets_a_photo_card_whose_caption_is_edited(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    async with h.db.transaction() as session:
        await session.execute(
            update(Pet)
            .where(Pet.id == pet_id)
            .values(photos=[{"url": "https://example.test/bella.jpg", "key": "k", "kind": "photo"}])
        )
    booking = await h.request(client_id, pet_id)
    await h.run_jobs()
    card = _to_kimmie(h, "sendPhoto")[-1]
    assert card.data["photo"] == "https://example.test/bella.jpg" and "Booking request" in card.text
    async with h.db.transaction() as session:
        message_id = (await session.get_one(Appointment, booking.id)).admin_card_message_id
    assert message_id is not None
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="approve", appointment_id=booking.id).pack(), message_id=message_id
        )
    )
    caption = h.fake.last("editMessageCaption")
    assert "confirmed" in caption.text and int(caption.data["message_id"]) == message_id


async def test_a_retried_request_job_does_not_send_a_second_card(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    await h.run_jobs()
    async with h.db.transaction() as session:
        await notify_admin(session, "booking_request", appointment_id=booking.id)
    await h.run_jobs()
    cards = [c for c in _to_kimmie(h) if "Booking request" in c.text]
    assert len(cards) == 1


async def test_logging_notifier_logs_each_notification(caplog: pytest.LogCaptureFixture) -> None:
    notifier = LoggingNotifier()
    with caplog.at_level(logging.INFO, logger="cheshire.admin"):
        await notifier.booking_request(7)
        await notifier.booking_changed(7, "cancelled")
        await notifier.handover(3, "asked for a human")
        await notifier.alert("Meta token expired")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and "Meta token expired" in messages[-1]
    assert caplog.records[0].appointment_id == 7  # type: ignore[attr-defined]


async def test_a_chat_that_refuses_the_bot_ends_the_job_at_once(harness: Harness) -> None:
    h = harness
    h.fake.fail_next("sendMessage", status=403)
    async with h.db.transaction() as session:
        await raise_alert(session, "meta:token", "The Instagram token expired")
    await h.run_jobs()
    jobs = [j for j in await h.jobs("notify_admin") if j.payload.get("fault_key") == "meta:token"]
    assert jobs[0].status == "dead" and "refused" in (jobs[0].last_error or "")
    assert len(h.fake.calls_to("sendMessage")) == 1  # not retried 8 times


async def test_429_on_a_notification_waits_retry_after(harness: Harness) -> None:
    h = harness
    h.fake.fail_next("sendMessage", status=429, retry_after=9)
    async with h.db.transaction() as session:
        await raise_alert(session, "calendar:down", "Google Calendar is unreachable")
    await h.run_jobs()
    job = (await h.jobs("notify_admin"))[0]
    assert job.status == "queued" and job.last_error and "rate limit" in job.last_error
