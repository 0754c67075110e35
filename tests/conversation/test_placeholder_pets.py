"""A dog booked by buttons alone is one record: the button flow saves a placeholder ("Dog 1"), and the
assistant's save_pet later fills it in with the real name instead of creating a second dog."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import select

from core.booking.service import DefaultBookingService
from core.conversation.engine import ConversationEngine
from core.db.database import Database
from core.db.models import Appointment, Message, Pet
from core.llm.scripted import Say, ScriptedChatModel, last_tool_results
from core.llm.types import ChatRequest
from tests.conversation.conftest import replies, send


async def _tap(
    db: Database,
    engine: ConversationEngine,
    last: Message,
    *,
    index: int = 0,
    contains: str = "",
    user: str = "psid-1",
) -> Message:
    """Tap a button of the last reply, as the customer would, and return the new last reply."""
    chosen = [q for q in last.quick_replies if contains in q["title"]][index]
    sent = await send(db, chosen["title"], payload=chosen["payload"], user=user)
    assert (await engine.process(sent.message_id, sent.conversation_id)).status == "offline"
    return (await replies(db, sent.conversation_id))[-1]


async def _pets(db: Database) -> list[Pet]:
    async with db.transaction() as session:
        return list((await session.execute(select(Pet).order_by(Pet.id))).scalars())


async def _start(db: Database, engine: ConversationEngine, user: str = "psid-1") -> Message:
    hello = await send(db, "Book", payload="BOOK", user=user)
    await engine.process(hello.message_id, hello.conversation_id)
    return (await replies(db, hello.conversation_id))[-1]


async def _placeholder_to_days(
    db: Database, engine: ConversationEngine, size: str, user: str = "psid-1"
) -> Message:
    """BOOK → service → (Another dog, when the customer has one already) → size → coat: the dog is
    saved, the days are offered."""
    sizes = await _tap(db, engine, await _start(db, engine, user), contains="Full groom", user=user)
    if any("Another dog" in q["title"] for q in sizes.quick_replies):
        sizes = await _tap(db, engine, sizes, contains="Another dog", user=user)
    coats = await _tap(db, engine, sizes, contains=size, user=user)
    days = await _tap(db, engine, coats, contains="Curly", user=user)
    assert "Which day" in days.text
    return days


async def test_save_pet_fills_in_the_dog_booked_by_buttons(
    catalog_db: Database,
    make_engine: Callable[..., ConversationEngine],
    booking: DefaultBookingService,
) -> None:
    db = catalog_db
    model = ScriptedChatModel(
        [
            Say(calls=(("save_pet", {"name": "Biscuit", "breed": "cavapoo", "temperament": "shy"}),)),
            Say("Lovely, Biscuit is saved."),
        ]
    )
    engine = make_engine(model)
    days = await _placeholder_to_days(db, engine, "Medium")
    asked = await replies(db, days.conversation_id)
    assert any("What's your dog's name? Type it any time." in m.text for m in asked)
    assert not any("Dog 1" in m.text for m in asked)

    said = await send(db, "His name is Biscuit, he's a shy cavapoo")
    assert (await engine.process(said.message_id, said.conversation_id)).status == "llm"
    assert (await replies(db, said.conversation_id))[-1].text == "Lovely, Biscuit is saved."
    times = await _tap(db, engine, days, index=1)
    contact = await _tap(db, engine, times, index=0)  # named already: only the contact step is left
    assert "e-mail" in contact.text and [q["title"] for q in contact.quick_replies] == ["Skip"]
    done = await _tap(db, engine, contact, contains="Skip")
    assert done.text.startswith("Request sent!") and "Biscuit" in done.text

    # The model was told the dog has no real name yet, and the tool said which record it filled in.
    assert "name not given yet" in model.requests[0].system.context
    [result] = [json.loads(v) for v in last_tool_results(model.requests[1]).values()]
    assert result["name"] == "Biscuit" and 'saved as "Dog 1"' in result["note"]
    [pet] = await _pets(db)
    assert (pet.name, pet.breed, pet.size_class, pet.coat_type) == ("Biscuit", "cavapoo", "medium", "curly")
    assert (pet.temperament, pet.placeholder) == ("shy", False)
    async with db.transaction() as session:
        [appt] = (await session.execute(select(Appointment))).scalars().all()
        booked = await booking.get_booking(session, appt.id)
    assert booked.pet_ids == (pet.id,) and booked.pet_names == ("Biscuit",)


async def test_with_two_placeholders_the_model_gets_their_ids_and_names_the_right_one(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    db = catalog_db
    seen: dict[str, str] = {}

    def choose(request: ChatRequest) -> Say:
        [(_, content)] = last_tool_results(request).items()
        seen["error"] = content
        large = next(p for p in content.split("; ") if "large" in p)
        pet_id = int(large.split("pet_id ")[1].split()[0])
        return Say(calls=(("save_pet", {"pet_id": pet_id, "name": "Bruno", "breed": "labradoodle"}),))

    model = ScriptedChatModel([Say(calls=(("save_pet", {"name": "Bruno"}),)), choose, Say("Bruno is saved.")])
    engine = make_engine(model)
    await _placeholder_to_days(db, engine, "Small")
    await _placeholder_to_days(db, engine, "Large")
    said = await send(db, "The big one is Bruno, a labradoodle")
    await engine.process(said.message_id, said.conversation_id)

    small, large = await _pets(db)
    assert "2 dogs the booking buttons saved without a name" in seen["error"]
    assert f"pet_id {small.id}" in seen["error"] and f"pet_id {large.id}" in seen["error"]
    assert (small.name, small.placeholder) == ("Dog 1", True)
    assert (large.name, large.breed, large.size_class, large.placeholder) == (
        "Bruno",
        "labradoodle",
        "large",
        False,
    )


async def test_another_clients_pet_id_is_refused_and_nothing_changes(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    db = catalog_db
    model = ScriptedChatModel()
    engine = make_engine(model)
    await _placeholder_to_days(db, engine, "Small", user="psid-other")
    [theirs] = await _pets(db)
    model.add(
        Say(calls=(("save_pet", {"pet_id": theirs.id, "name": "Mine now", "breed": "husky"}),)),
        Say("Sorry, I couldn't save that."),
    )
    said = await send(db, "Save my dog", user="psid-1")
    await engine.process(said.message_id, said.conversation_id)

    result = next(iter(model.requests[-1].messages[-1].tool_results))
    assert result.is_error and "No such pet for this customer" in result.content
    [after] = await _pets(db)
    assert (after.client_id, after.name, after.breed, after.placeholder) == (
        theirs.client_id,
        "Dog 1",
        None,
        True,
    )


async def test_a_different_dog_is_a_new_record_and_the_placeholder_stays(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    db = catalog_db
    model = ScriptedChatModel(
        [
            # Another size than the dog booked by buttons: not that dog.
            Say(calls=(("save_pet", {"name": "Rex", "size_class": "giant"}),)),
            # Said to be another dog outright.
            Say(calls=(("save_pet", {"name": "Pip", "new_dog": True}),)),
            Say("Saved both."),
        ]
    )
    engine = make_engine(model)
    await _placeholder_to_days(db, engine, "Medium")
    said = await send(db, "I also have Rex, a giant, and Pip")
    await engine.process(said.message_id, said.conversation_id)
    assert [(p.name, p.placeholder) for p in await _pets(db)] == [
        ("Dog 1", True),
        ("Rex", False),
        ("Pip", False),
    ]


async def test_offline_the_customer_types_the_name_after_the_buttons_ask(
    catalog_db: Database, make_engine: Callable[..., ConversationEngine]
) -> None:
    db = catalog_db
    engine = make_engine(None)  # no LLM at all
    await _placeholder_to_days(db, engine, "Medium")
    unsure = await send(db, "not sure")
    await engine.process(unsure.message_id, unsure.conversation_id)
    assert [p.name for p in await _pets(db)] == ["Dog 1"]

    named = await send(db, "Her name is luna!")
    assert (await engine.process(named.message_id, named.conversation_id)).status == "offline"
    assert (await replies(db, named.conversation_id))[-1].text == "Thanks! Luna it is."
    [pet] = await _pets(db)
    assert (pet.name, pet.placeholder, pet.size_class) == ("Luna", False, "medium")

    # Asked once: a later short message is not taken for a name.
    later = await send(db, "Biscuit")
    await engine.process(later.message_id, later.conversation_id)
    assert [p.name for p in await _pets(db)] == ["Luna"]
