"""The offline responder: no LLM at all, and the booking path still works end to end by buttons."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from core.conversation.engine import ConversationEngine
from core.db.database import Database
from core.db.models import Appointment, Conversation, Job, Message, Pet
from tests.conversation.conftest import replies, send


def _check_limits(message: Message) -> None:
    assert len(message.quick_replies) <= 13
    for quick in message.quick_replies:
        assert len(quick["title"]) <= 20, quick
        assert quick["payload"].isascii() and len(quick["payload"].encode()) <= 64, quick


async def _tap(
    db: Database, engine: ConversationEngine, last: Message, index: int = 0, contains: str = ""
) -> Message:
    """Tap a button of the last reply, as the customer would, and return the new last reply."""
    options = [q for q in last.quick_replies if contains in q["title"]]
    assert options, f"no button with {contains!r} in {last.quick_replies}"
    chosen = options[index]
    sent = await send(db, chosen["title"], payload=chosen["payload"])
    result = await engine.process(sent.message_id, sent.conversation_id)
    assert result.status == "offline"
    out = await replies(db, sent.conversation_id)
    for message in out:
        _check_limits(message)
    return out[-1]


async def test_books_end_to_end_through_buttons_alone(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(None)  # no API keys: offline only
    db = catalog_db
    hello = await send(db, "hi there")
    assert (await engine.process(hello.message_id, hello.conversation_id)).status == "offline"
    [greeting] = await replies(db, hello.conversation_id)
    assert "Cheshire" in greeting.text and "automated assistant" in greeting.text
    assert [q["payload"] for q in greeting.quick_replies] == [
        "BOOK",
        "PRICES",
        "HOURS",
        "MY_BOOKINGS",
        "HUMAN",
    ]

    services = await _tap(db, engine, greeting, contains="Book")
    assert "Which service" in services.text
    # No dog on file: the only answer to "for which dog?" is a new one, so its size comes at once.
    sizes = await _tap(db, engine, services, contains="Full groom")
    assert "How big" in sizes.text
    coats = await _tap(db, engine, sizes, contains="Medium")
    days = await _tap(db, engine, coats, contains="Curly")
    assert "Which day" in days.text and len(days.quick_replies) >= 3
    times = await _tap(db, engine, days, index=1)
    assert "Free times" in times.text
    # Before filing: the dog's name (typed), then a way to reach the customer later (one tap).
    asked = await _tap(db, engine, times, index=0)
    assert asked.text == "Before I send the request: what's your dog's name?"
    named = await send(db, "Biscuit")
    await engine.process(named.message_id, named.conversation_id)
    contact = (await replies(db, named.conversation_id))[-1]
    assert "reminder the day before" in contact.text and "e-mail" in contact.text
    done = await _tap(db, engine, contact, contains="Skip")
    assert done.text.startswith("Request sent!") and "Biscuit" in done.text and "Dog 1" not in done.text
    twice = await _tap(db, engine, times, index=0)  # an impatient second tap on the same time
    assert twice.text.startswith("That one is already requested")

    async with db.transaction() as session:
        [appt] = (await session.execute(select(Appointment))).scalars().all()
        assert appt.status == "requested" and appt.client_id == hello.client_id
        assert appt.source_channel == "messenger"
        [pet] = (await session.execute(select(Pet))).scalars().all()
        assert (pet.name, pet.size_class, pet.coat_type, pet.placeholder) == (
            "Biscuit",
            "medium",
            "curly",
            False,
        )
        jobs = (await session.execute(select(Job).where(Job.kind == "notify_admin"))).scalars().all()
        assert [j.payload["type"] for j in jobs] == ["booking_request"]
        assert jobs[0].payload["appointment_id"] == appt.id

    # The same flow lists the appointment, and cancels it after a confirmation tap.
    mine = await send(db, "My bookings", payload="MY_BOOKINGS")
    await engine.process(mine.message_id, mine.conversation_id)
    listing = (await replies(db, mine.conversation_id))[-1]
    assert f"#{appt.id}" in listing.text and "requested" in listing.text
    confirm = await _tap(db, engine, listing, contains="Cancel")
    assert confirm.text.startswith("Cancel ")
    cancelled = await _tap(db, engine, confirm, contains="Yes")
    assert cancelled.text.startswith("Cancelled")
    async with db.transaction() as session:
        assert (await session.get_one(Appointment, appt.id)).status == "cancelled"


async def test_prices_and_hours_come_from_the_catalog(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(None)
    prices = await send(catalog_db, "Prices", payload="PRICES")
    await engine.process(prices.message_id, prices.conversation_id)
    hours = await send(catalog_db, "what are your opening hours?")
    await engine.process(hours.message_id, hours.conversation_id)
    price_reply, hours_reply = await replies(catalog_db, prices.conversation_id)
    assert "Full groom: $" in price_reply.text
    assert "Tue 09:00-17:00" in hours_reply.text and "Mon closed" in hours_reply.text


async def test_unanswerable_text_flags_the_chat_and_notifies_kimmie_once(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(None)
    for text in ("Can you do a lion cut on my Pomeranian?", "And teeth?"):
        sent = await send(catalog_db, text)
        await engine.process(sent.message_id, sent.conversation_id)
    out = await replies(catalog_db, sent.conversation_id)
    assert all("Kimmie will answer you personally" in m.text for m in out)
    async with catalog_db.transaction() as session:
        assert (await session.get_one(Conversation, sent.conversation_id)).needs_attention
        jobs = (await session.execute(select(Job).where(Job.kind == "notify_admin"))).scalars().all()
        assert [(j.payload["type"], j.payload["conversation_id"]) for j in jobs] == [
            ("handover", sent.conversation_id)
        ]


async def test_forged_payloads_cannot_touch_another_clients_pet_or_appointment(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(None)
    # Bob books by buttons; Alice then replays payloads naming Bob's pet and appointment.
    bob = await send(catalog_db, "hi", user="bob", name="Bob")
    async with catalog_db.transaction() as session:
        pet = Pet(client_id=bob.client_id, name="Rex", size_class="large", coat_type="short", photos=[])
        session.add(pet)
        await session.flush()
        pet_id = pet.id
    days = await send(catalog_db, "", payload=f"BK:full_groom:p{pet_id}", user="bob", name="Bob")
    await engine.process(days.message_id, days.conversation_id)
    day_button = (await replies(catalog_db, bob.conversation_id))[-1].quick_replies[0]
    times = await send(catalog_db, "", payload=day_button["payload"], user="bob", name="Bob")
    await engine.process(times.message_id, times.conversation_id)
    time_button = (await replies(catalog_db, bob.conversation_id))[-1].quick_replies[0]
    for payload in (time_button["payload"], "RQ:skip"):  # the time, then Skip on the contact step
        booked = await send(catalog_db, "", payload=payload, user="bob", name="Bob")
        await engine.process(booked.message_id, booked.conversation_id)
    async with catalog_db.transaction() as session:
        [appt] = (await session.execute(select(Appointment))).scalars().all()

    for forged in (
        f"BK:full_groom:p{pet_id}",
        time_button["payload"],
        f"CX:{appt.id}:y",
        f"MV:{appt.id}",
        f"APPT_CANCEL:{appt.id}",
    ):
        alice = await send(catalog_db, "", payload=forged, user="alice")
        await engine.process(alice.message_id, alice.conversation_id)
        answer = (await replies(catalog_db, alice.conversation_id))[-1]
        assert "can't find" in answer.text, (forged, answer.text)
    async with catalog_db.transaction() as session:
        rows = (await session.execute(select(Appointment))).scalars().all()
        assert [(a.id, a.status, a.client_id) for a in rows] == [(appt.id, "requested", bob.client_id)]


async def test_an_unknown_button_or_empty_message_gets_a_greeting_not_a_flag(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(None)
    sent = await send(catalog_db, "", payload="GET_STARTED")
    await engine.process(sent.message_id, sent.conversation_id)
    [reply] = await replies(catalog_db, sent.conversation_id)
    assert reply.text.startswith("Hi Alice!")
    async with catalog_db.transaction() as session:
        assert not (await session.get_one(Conversation, sent.conversation_id)).needs_attention


async def test_persona_and_groomer_names_come_from_settings(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    from core.llm.scripted import ScriptedChatModel

    offline = make_engine(None, assistant_name="Dormouse", groomer_name="Dinah")
    sent = await send(catalog_db, "hello")
    await offline.process(sent.message_id, sent.conversation_id)
    [greeting] = await replies(catalog_db, sent.conversation_id)
    assert "I'm Dormouse" in greeting.text and "Looking Glass Groomery" in greeting.text
    assert greeting.quick_replies[-1] == {"title": "Talk to Dinah", "payload": "HUMAN"}

    model = ScriptedChatModel()
    online = make_engine(model, assistant_name="Dormouse", groomer_name="Dinah")
    again = await send(catalog_db, "are you a bot?")
    await online.process(again.message_id, again.conversation_id)
    stable = model.requests[0].system.stable
    assert stable.startswith("You are Dormouse, the AI booking assistant of Looking Glass Groomery")
    rules = stable.split("Business facts")[0]  # (catalog policies may name her: that is data)
    assert "Dinah is the groomer" in rules and "Kimmie" not in rules


async def test_thanks_is_answered_kindly_and_asking_for_the_groomer_hands_over(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    engine = make_engine(None)
    thanks = await send(catalog_db, "Thanks!")
    await engine.process(thanks.message_id, thanks.conversation_id)
    async with catalog_db.transaction() as session:
        assert not (await session.get_one(Conversation, thanks.conversation_id)).needs_attention
    ask = await send(catalog_db, "Can I talk to kimmie please")
    await engine.process(ask.message_id, ask.conversation_id)
    welcome, handed = await replies(catalog_db, thanks.conversation_id)
    assert welcome.text.startswith("You're welcome")
    assert "Kimmie will answer you personally" in handed.text
    async with catalog_db.transaction() as session:
        assert (await session.get_one(Conversation, ask.conversation_id)).needs_attention


async def test_the_contact_step_offers_the_telegram_link_and_one_tap_files_the_request(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    link = "https://t.me/LookingGlassBot?start=signed-token"
    engine = make_engine(None, contact_links=lambda client_id: {"telegram": link})
    db = catalog_db
    hello = await send(db, "hi")
    await engine.process(hello.message_id, hello.conversation_id)
    [greeting] = await replies(db, hello.conversation_id)
    sizes = await _tap(db, engine, await _tap(db, engine, greeting, contains="Book"), contains="Full groom")
    days = await _tap(db, engine, await _tap(db, engine, sizes, contains="Small"), contains="Short")
    times = await _tap(db, engine, days, index=0)
    await _tap(db, engine, times, index=0)
    named = await send(db, "her name is Pip")
    await engine.process(named.message_id, named.conversation_id)
    contact = (await replies(db, named.conversation_id))[-1]
    assert link in contact.text
    assert [q["title"] for q in contact.quick_replies] == ["Done on Telegram", "Skip"]
    done = await _tap(db, engine, contact, contains="Done on Telegram")
    assert done.text.startswith("Request sent!") and "Pip" in done.text
    async with db.transaction() as session:
        [appt] = (await session.execute(select(Appointment))).scalars().all()
        conversation = await session.get_one(Conversation, hello.conversation_id)
    assert appt.status == "requested"
    assert "pending_request" not in (conversation.state or {})  # nothing left waiting
