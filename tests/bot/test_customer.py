"""Customers on Telegram: /start menu, the button booking flow with no LLM, contact linking,
/mybookings (the conversation core's flow as buttons: cancel, move, link by phone), typing indicator,
private data kept private."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.callbacks import MyBooking
from core.conversation import payloads as pl
from core.db.models import Appointment, ChannelIdentity, Client, Message
from tests.bot.conftest import CUSTOMER, KIMMIE, Harness
from tests.fakes.telegram_api import Call


def _to_customer(h: Harness) -> list[Call]:
    return [c for c in h.fake.calls if c.method in {"sendMessage", "sendPhoto"} and c.chat_id == CUSTOMER]


async def _tap(h: Harness, call: Call, data: str) -> None:
    markup: dict[str, Any] = call.data.get("reply_markup") or {}
    await h.feed(h.callback(CUSTOMER, data, markup=markup))
    await h.run_jobs()


async def test_start_greets_with_the_menu_buttons(harness: Harness) -> None:
    h = harness
    await h.feed(h.message(CUSTOMER, "/start"))
    await h.run_jobs()
    greeting = _to_customer(h)[-1]
    assert "Cheshire" in greeting.text and h.settings.business_name in greeting.text
    payloads = [data for _, data in greeting.buttons()]
    assert payloads == ["BOOK", "PRICES", "HOURS", "MY_BOOKINGS", "HUMAN"]


async def test_button_flow_books_a_requested_appointment_without_any_llm(harness: Harness) -> None:
    h = harness
    assert h.settings.anthropic_api_key is None and h.settings.openai_api_key is None
    await h.feed(h.message(CUSTOMER, "/start"))
    await h.run_jobs()
    await _tap(h, _to_customer(h)[-1], "BOOK")

    # Walk the offered buttons: full groom, a new pet (small, curly), the first day, the first time.
    preferred = ["BK:full_groom", ":new", ":small", ":curly"]  # else the first offered (day, time)
    for _ in range(10):
        async with h.db.transaction() as session:
            if (await session.execute(select(Appointment))).first():
                break
        last = _to_customer(h)[-1]
        if "dog's name" in last.text and not last.buttons():  # asked before filing: typed, not tapped
            await h.feed(h.message(CUSTOMER, "Biscuit"))
            await h.run_jobs()
            continue
        buttons = [d for _, d in last.buttons() if d.startswith("BK:")]
        assert buttons, f"no booking button in {last.text!r} {last.buttons()}"
        choice = next((d for d in buttons for end in preferred if d.endswith(end)), buttons[0])
        await _tap(h, last, choice)
    async with h.db.transaction() as session:
        appointment = (await session.execute(select(Appointment))).scalar_one()
        identity = (await session.execute(select(ChannelIdentity))).scalar_one()
    assert appointment.status == "requested" and appointment.source_channel == "telegram"
    # Telegram reaches the customer any time: no contact step; the dog has its real name.
    assert not any("reminder the day before" in c.text for c in _to_customer(h))
    assert appointment.client_id == identity.client_id and identity.external_id == str(CUSTOMER)
    # The customer hears it is requested; Kimmie gets the card with its buttons.
    assert any("request" in c.text.lower() for c in _to_customer(h)[-2:])
    card = [c for c in h.fake.calls_to("sendMessage") if c.chat_id == KIMMIE][-1]
    assert f"#{appointment.id}" in card.text and any("Approve" in t for t, _ in card.buttons())
    # "typing…" was shown while the engine worked on each tap.
    assert h.fake.calls_to("sendChatAction")


async def test_free_text_goes_to_the_conversation_and_gets_an_offline_answer(harness: Harness) -> None:
    h = harness
    await h.feed(h.message(CUSTOMER, "What are your prices?"))
    assert h.fake.last("sendChatAction").data["action"] == "typing"
    await h.run_jobs()
    async with h.db.transaction() as session:
        inbound = (await session.execute(select(Message).where(Message.direction == "in"))).scalar_one()
    assert inbound.text == "What are your prices?" and inbound.channel == "telegram"
    assert _to_customer(h), "the offline responder answered"


async def test_sharing_own_contact_links_the_telegram_chat_to_the_existing_client(harness: Harness) -> None:
    h = harness
    async with h.db.transaction() as session:
        existing = Client(name="Ann Lee (phone booking)", phone="+15551234567")
        session.add(existing)
        await session.flush()
        existing_id = existing.id
    contact = {"phone_number": "+1 555 123 4567", "first_name": "Ann", "user_id": CUSTOMER}
    await h.feed(h.message(CUSTOMER, None, contact=contact))
    async with h.db.transaction() as session:
        identity = (await session.execute(select(ChannelIdentity))).scalar_one()
    assert identity.client_id == existing_id
    assert "linked" in h.fake.last("sendMessage").text


async def test_someone_elses_contact_is_not_linked(harness: Harness) -> None:
    h = harness
    async with h.db.transaction() as session:
        session.add(Client(name="Victim", phone="+15550000000"))
    contact = {"phone_number": "+15550000000", "first_name": "V", "user_id": 999}
    await h.feed(h.message(CUSTOMER, None, contact=contact))
    async with h.db.transaction() as session:
        assert (await session.execute(select(ChannelIdentity))).first() is None
    assert "your own number" in h.fake.last("sendMessage").text


async def test_mybookings_lists_and_cancels_the_customers_own_booking(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    h.fake.clear()
    await h.feed(h.message(CUSTOMER, "/mybookings"))
    await h.run_jobs()
    listing = _to_customer(h)[-1]
    assert "Full groom" in listing.text and "Bella" in listing.text
    cancel = listing.button_data("Cancel")
    assert cancel == pl.cancel(booking.id)  # the conversation core's flow, as inline buttons
    await _tap(h, listing, cancel)
    confirm = _to_customer(h)[-1]
    await _tap(h, confirm, confirm.button_data("Yes, cancel"))
    assert "Cancelled" in _to_customer(h)[-1].text
    async with h.db.transaction() as session:
        assert (await session.get_one(Appointment, booking.id)).status == "cancelled"


async def test_mybookings_moves_a_booking_to_another_free_time(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    await h.feed(h.message(CUSTOMER, "/mybookings"))
    await h.run_jobs()
    listing = _to_customer(h)[-1]
    await _tap(h, listing, listing.button_data("Move"))
    days = _to_customer(h)[-1]
    day = next(d for _, d in days.buttons() if d.startswith(f"MV:{booking.id}:d"))
    await _tap(h, days, day)
    times = _to_customer(h)[-1]
    new_time = next(d for _, d in times.buttons() if d.startswith(f"MV:{booking.id}:t"))
    await _tap(h, times, new_time)
    assert "moved to" in _to_customer(h)[-1].text
    async with h.db.transaction() as session:
        moved = await session.get_one(Appointment, booking.id)
    assert moved.start_at.strftime("%Y%m%d%H%M") == new_time.rpartition(":t")[2]
    assert moved.start_at != booking.start


async def test_mybookings_offers_to_link_by_phone_only_without_a_phone_on_file(harness: Harness) -> None:
    h = harness
    await h.customer_with_pet()
    await h.feed(h.message(CUSTOMER, "/mybookings"))
    offer = h.fake.last("sendMessage")
    assert "Share your phone number" in offer.text
    assert offer.data["reply_markup"]["keyboard"][0][0]["request_contact"] is True
    async with h.db.transaction() as session:
        client = (await session.execute(select(Client))).scalar_one()
        client.phone = "+15551234567"
    h.fake.clear()
    await h.feed(h.message(CUSTOMER, "/mybookings"))
    await h.run_jobs()
    assert not any("Share your phone number" in c.text for c in _to_customer(h))
    assert "no upcoming appointments" in _to_customer(h)[-1].text


async def test_a_customer_cannot_cancel_someone_elses_booking(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet(external_id="other-chat", name="Other")
    booking = await h.request(client_id, pet_id)
    await h.feed(h.message(CUSTOMER, "hello"))  # the attacker has a conversation of their own
    await h.run_jobs()
    # A forged button of the old kind and one of the core flow: both refused, nothing changes.
    for forged in (
        MyBooking(action="cancel_yes", appointment_id=booking.id).pack(),
        pl.cancel(booking.id, confirmed=True),
    ):
        h.fake.clear()
        await h.feed(h.callback(CUSTOMER, forged))
        await h.run_jobs()
        assert "can't find that appointment" in _to_customer(h)[-1].text
        async with h.db.transaction() as session:
            assert (await session.get_one(Appointment, booking.id)).status == "requested"


async def test_a_booking_button_from_before_the_core_flow_still_works(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    await h.feed(h.callback(CUSTOMER, MyBooking(action="cancel", appointment_id=booking.id).pack()))
    await h.run_jobs()
    confirm = _to_customer(h)[-1]
    assert confirm.text.startswith("Cancel Full groom")
    assert confirm.button_data("Yes, cancel") == pl.cancel(booking.id, confirmed=True)


async def test_the_same_update_twice_is_ingested_once(harness: Harness) -> None:
    h = harness
    update = h.message(CUSTOMER, "Hi there", update_id=99)
    await h.feed(update)
    await h.feed(update)
    async with h.db.transaction() as session:
        assert (
            len((await session.execute(select(Message).where(Message.direction == "in"))).scalars().all())
            == 1
        )


async def test_one_chats_concurrent_updates_are_stored_in_order(harness: Harness) -> None:
    import asyncio

    h = harness
    updates = [h.message(CUSTOMER, f"part {i}") for i in range(6)]
    await asyncio.gather(*(h.feed(u) for u in updates))
    async with h.db.transaction() as session:
        rows = (
            await session.execute(select(Message).where(Message.direction == "in").order_by(Message.id))
        ).scalars()
        assert [m.text for m in rows] == [f"part {i}" for i in range(6)]
