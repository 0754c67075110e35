"""Kimmie's side: the approval card and its buttons, deciding, stale cards, forged presses, agenda."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select

from bot.callbacks import ApptAction
from core.db.models import Appointment, AppointmentPet, Client, Message, Service
from core.types import Channel, CoatType
from tests.bot.conftest import CUSTOMER, KIMMIE, STAFF, Harness


async def _card(h: Harness, *, channel: Channel = Channel.INSTAGRAM) -> tuple[int, int]:
    """A booking request whose card reached Kimmie. Returns (appointment_id, card message id)."""
    client_id, pet_id, _ = await h.customer_with_pet(
        channel=channel,
        external_id="ig-1",
        coat_type=CoatType.CURLY,
        temperament="shy with strangers",
    )
    booking = await h.request(client_id, pet_id, channel=channel)
    await h.run_jobs()
    card = h.fake.last("sendMessage")
    assert card.chat_id == KIMMIE
    # The fake numbers sent messages from 1 in order; the card is the last one sent.
    return booking.id, len([c for c in h.fake.calls if c.method in {"sendMessage", "sendPhoto"}])


async def _appointment(h: Harness, appointment_id: int) -> Appointment:
    async with h.db.transaction() as session:
        return await session.get_one(Appointment, appointment_id)


async def test_booking_request_card_shows_the_request_and_its_buttons(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    card = h.fake.last("sendMessage")
    assert card.chat_id == KIMMIE
    assert card.data["parse_mode"] == "HTML"
    text = card.text
    for expected in (
        f"Booking request #{appointment_id}",
        "Ann Lee",
        "via Instagram",
        "Bella",
        "Poodle",
        "small",
        "curly coat",
        "shy with strangers",
        "Full Groom",
        "$",
        "Nervous with dryers",
        "waiting for your decision",
    ):
        assert expected.lower() in text.lower(), expected
    assert "vaccination" not in text and "(no name)" not in text  # unknown: not shown at all
    appt = await _appointment(h, appointment_id)
    local = appt.start_at.astimezone(h.settings.tz)
    assert f"{local:%H:%M}" in text  # the slot in the business time zone, not UTC
    titles = [t for t, _ in card.buttons()]
    assert any("Approve" in t for t in titles) and any("Decline" in t for t in titles)
    assert any("Offer another time" in t for t in titles) and any("Open chat" in t for t in titles)
    for _, data in card.buttons():
        assert len(data.encode()) <= 64
    assert card.button_data("Approve") == ApptAction(action="approve", appointment_id=appointment_id).pack()
    assert (appt.admin_card_chat_id, appt.admin_card_message_id) == (KIMMIE, message_id)


async def test_unverified_calendar_is_marked_on_the_card(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    booking = await h.request(client_id, pet_id)
    async with h.db.transaction() as session:
        (await session.get_one(Appointment, booking.id)).availability_verified = False
    await h.run_jobs()
    assert "calendar not checked" in h.fake.last("sendMessage").text


async def test_approve_confirms_edits_the_card_and_queues_the_customer_confirmation(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    h.fake.clear()
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="approve", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )

    assert (await _appointment(h, appointment_id)).status == "confirmed"
    edit = h.fake.last("editMessageText")
    assert int(edit.data["message_id"]) == message_id and edit.chat_id == KIMMIE
    assert "confirmed" in edit.text and "Approved" in edit.text
    assert not any("Approve" in t for t, _ in edit.buttons())  # decided: no decision buttons left
    assert h.fake.last("answerCallbackQuery").data.get("show_alert") in (None, "false", False)
    async with h.db.transaction() as session:
        outbound = list(
            (
                await session.execute(
                    select(Message).where(Message.direction == "out", Message.channel == "instagram")
                )
            ).scalars()
        )
    assert outbound and outbound[-1].delivery_status == "pending"
    assert "deliver_message" in {j.kind for j in await h.jobs()}


async def test_staff_admin_may_approve_too(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    await h.feed(
        h.callback(
            STAFF, ApptAction(action="approve", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    assert (await _appointment(h, appointment_id)).status == "confirmed"


async def test_a_customer_pressing_approve_is_refused_and_nothing_changes(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    h.fake.clear()
    forged = ApptAction(action="approve", appointment_id=appointment_id).pack()
    await h.feed(h.callback(CUSTOMER, forged, message_id=message_id))

    answer = h.fake.last("answerCallbackQuery")
    assert answer.data["show_alert"] in ("true", True) and "staff" in answer.data["text"]
    assert (await _appointment(h, appointment_id)).status == "requested"
    assert not h.fake.calls_to("editMessageText")
    async with h.db.transaction() as session:
        inbound = (await session.execute(select(Message).where(Message.payload == forged))).scalars().all()
    assert inbound == []  # not passed on to the conversation either


async def test_a_stale_card_says_so_instead_of_acting_twice(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    data = ApptAction(action="approve", appointment_id=appointment_id).pack()
    await h.feed(h.callback(KIMMIE, data, message_id=message_id))
    async with h.db.transaction() as session:
        confirmations = len(
            (await session.execute(select(Message).where(Message.direction == "out"))).scalars().all()
        )
    h.fake.clear()

    # The same card pressed again (a second tap, or an old copy): Decline must not undo the approval.
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="decline", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )

    assert (await _appointment(h, appointment_id)).status == "confirmed"
    answer = h.fake.last("answerCallbackQuery")
    assert answer.data["show_alert"] in ("true", True) and "Already decided" in answer.data["text"]
    assert "Already decided" in h.fake.last("editMessageText").text
    async with h.db.transaction() as session:
        after = len(
            (await session.execute(select(Message).where(Message.direction == "out"))).scalars().all()
        )
    assert after == confirmations  # no second message to the customer


async def test_offer_another_time_declines_with_the_chosen_alternative(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    h.fake.clear()
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="offer", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    picker = h.fake.last("editMessageText")
    alternatives = [(t, d) for t, d in picker.buttons() if d.startswith("k.ap:alt:")]
    assert alternatives, picker.buttons()
    title, data = alternatives[0]
    await h.feed(h.callback(KIMMIE, data, message_id=message_id))

    appt = await _appointment(h, appointment_id)
    assert appt.status == "declined"
    assert (
        "Declined" in h.fake.last("editMessageText").text
        and title.split(",")[0] in h.fake.last("editMessageText").text
    )
    async with h.db.transaction() as session:
        told = (await session.execute(select(Message).where(Message.direction == "out"))).scalars().all()
    assert told, "the customer is told, with the alternative"


async def _confirmed_at(
    h: Harness, client_id: int, pet_id: int, local_start: datetime, *, notes: str | None = None
) -> int:
    async with h.db.transaction() as session:
        service = (await session.execute(select(Service).where(Service.code == "full_groom"))).scalar_one()
        start = local_start.astimezone(UTC)
        appt = Appointment(
            client_id=client_id,
            service_id=service.id,
            start_at=start,
            end_at=start + timedelta(minutes=90),
            status="confirmed",
            source_channel="telegram",
            notes=notes,
        )
        session.add(appt)
        await session.flush()
        session.add(AppointmentPet(appointment_id=appt.id, pet_id=pet_id))
        return appt.id


async def test_today_lists_the_appointments_of_the_local_day(harness: Harness) -> None:
    h = harness
    tz = h.settings.tz
    client_id, pet_id, _ = await h.customer_with_pet(temperament="calm")
    today = datetime.now(tz).date()
    # 22:30 New York time is already tomorrow in UTC: it still belongs to today's agenda.
    await _confirmed_at(h, client_id, pet_id, datetime.combine(today, time(22, 30), tz), notes="late pickup")
    await _confirmed_at(h, client_id, pet_id, datetime.combine(today, time(0, 15), tz), notes="early bird")
    await _confirmed_at(
        h, client_id, pet_id, datetime.combine(today + timedelta(days=1), time(0, 15), tz), notes="TOMORROW"
    )
    await _confirmed_at(
        h, client_id, pet_id, datetime.combine(today - timedelta(days=1), time(20, 0), tz), notes="YESTERDAY"
    )

    await h.feed(h.message(KIMMIE, "/today"))

    text = h.fake.last("sendMessage").text
    assert h.fake.last("sendMessage").chat_id == KIMMIE
    assert "22:30" in text and "late pickup" in text and "00:15" in text and "early bird" in text
    assert "Bella" in text and "Poodle" in text and "calm" in text and "Ann Lee" in text
    assert "TOMORROW" not in text and "YESTERDAY" not in text
    assert text.index("00:15") < text.index("22:30")

    await h.feed(h.message(KIMMIE, "/tomorrow"))
    tomorrow = h.fake.last("sendMessage").text
    assert "TOMORROW" in tomorrow and "late pickup" not in tomorrow

    await h.feed(h.message(KIMMIE, "/week"))
    week = h.fake.last("sendMessage").text
    assert "TOMORROW" in week and "late pickup" in week and "YESTERDAY" not in week


async def test_admin_commands_from_a_customer_do_not_show_the_agenda(harness: Harness) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet()
    await _confirmed_at(h, client_id, pet_id, datetime.now(h.settings.tz).replace(hour=12), notes="SECRET")
    h.fake.clear()
    await h.feed(h.message(CUSTOMER, "/today"))
    assert not any("SECRET" in c.text for c in h.fake.calls)


async def test_pending_lists_undecided_requests_with_their_buttons(harness: Harness) -> None:
    h = harness
    appointment_id, _ = await _card(h)
    h.fake.clear()
    await h.feed(h.message(KIMMIE, "/pending"))
    cards = [c for c in h.fake.calls_to("sendMessage") if f"#{appointment_id}" in c.text]
    assert cards and any("Approve" in t for t, _ in cards[0].buttons())


async def test_client_lookup_by_name_and_phone_shows_pets_and_history(harness: Harness) -> None:
    h = harness
    appointment_id, _ = await _card(h)
    async with h.db.transaction() as session:
        appt = await session.get_one(Appointment, appointment_id)
        client = await session.get_one(Client, appt.client_id)
        client.phone = "+15551234567"
    for query in ("ann", "555-123-4567"):
        h.fake.clear()
        await h.feed(h.message(KIMMIE, f"/client {query}"))
        text = h.fake.last("sendMessage").text
        assert "Ann Lee" in text and "+15551234567" in text and "Bella" in text and "Poodle" in text
        assert f"#{appointment_id}" in text and "requested" in text
    h.fake.clear()
    await h.feed(h.message(KIMMIE, "/client nobody-like-this"))
    assert "No client matches" in h.fake.last("sendMessage").text


async def test_command_menus_per_scope(harness: Harness) -> None:
    from bot.setup import set_commands

    h = harness
    await set_commands(h.bot, h.settings)
    calls = h.fake.calls_to("setMyCommands")
    scopes = {(c.data["scope"]["type"], c.data["scope"].get("chat_id")): c for c in calls}
    assert ("default", None) in scopes
    assert ("chat", KIMMIE) in scopes and ("chat", STAFF) in scopes
    admin_commands = {c["command"] for c in scopes[("chat", KIMMIE)].data["commands"]}
    customer_commands = {c["command"] for c in scopes[("default", None)].data["commands"]}
    assert {"today", "tomorrow", "week", "pending", "client", "done"} <= admin_commands
    assert "today" not in customer_commands and "mybookings" in customer_commands


async def test_approving_when_the_slot_was_taken_says_so_and_keeps_the_request(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    appt = await _appointment(h, appointment_id)
    other_client, other_pet, _ = await h.customer_with_pet(
        external_id="walk-in", name="Walk In", pet_name="Rex"
    )
    # Kimmie booked someone else into that time by phone meanwhile.
    await _confirmed_at(h, other_client, other_pet, appt.start_at.astimezone(h.settings.tz))
    h.fake.clear()
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="approve", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )

    assert (await _appointment(h, appointment_id)).status == "requested"
    answer = h.fake.last("answerCallbackQuery")
    assert answer.data["show_alert"] in ("true", True) and "no longer free" in answer.data["text"]
    edit = h.fake.last("editMessageText")
    assert "no longer free" in edit.text and any("Decline" in t for t, _ in edit.buttons())


async def test_a_deleted_card_is_sent_again_instead_of_failing(harness: Harness) -> None:
    h = harness
    appointment_id, message_id = await _card(h)
    h.fake.fail_next("editMessageText", status=400, description="Bad Request: message to edit not found")
    await h.feed(
        h.callback(
            KIMMIE, ApptAction(action="approve", appointment_id=appointment_id).pack(), message_id=message_id
        )
    )
    assert (await _appointment(h, appointment_id)).status == "confirmed"
    assert "confirmed" in h.fake.last("sendMessage").text
    assert h.fake.last("answerCallbackQuery")


async def test_kimmies_stray_messages_never_become_a_customer_conversation(harness: Harness) -> None:
    from core.db.models import Conversation

    h = harness
    for update in (
        h.message(KIMMIE, "/start"),
        h.message(KIMMIE, "/nonsense"),
        h.message(
            KIMMIE,
            None,
            sticker={
                "file_id": "s",
                "file_unique_id": "s",
                "type": "regular",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
            },
        ),
        h.callback(KIMMIE, "BOOK"),
    ):
        await h.feed(update)
    async with h.db.transaction() as session:
        assert (await session.execute(select(Conversation))).first() is None
    assert "/today" in h.fake.calls_to("sendMessage")[0].text  # /start shows Kimmie her help


async def test_calendar_command_sends_a_signed_connect_link_only_when_configured(harness: Harness) -> None:
    from pydantic import SecretStr

    from core.calendar.oauth import valid_start

    h = harness
    await h.feed(h.message(KIMMIE, "/calendar"))
    assert "not configured" in h.fake.last("sendMessage").text

    h.settings.google_client_id = "client-id"
    h.settings.google_client_secret = SecretStr("client-secret")
    h.fake.clear()
    await h.feed(h.message(KIMMIE, "/calendar"))
    text = h.fake.last("sendMessage").text
    link = text.split()[-1]
    assert "/oauth/start?t=" in link
    assert valid_start(h.settings, link.split("t=", 1)[1])

    h.fake.clear()
    await h.feed(h.message(CUSTOMER, "/calendar"))
    assert not any("/oauth/start" in c.text for c in h.fake.calls)
