"""Kimmie's cards say who and how (issue 14, section 2), and her one daily list of reminders that did
not arrive, with a "Mark confirmed" button per visit (section 1), through the fake Bot API."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, update

from bot.callbacks import ReminderAction
from core.alerts import notify_admin
from core.db.models import Appointment, AppointmentPet, ChannelIdentity, Client, Service
from core.types import Channel
from tests.bot.conftest import CUSTOMER, KIMMIE, Harness


async def _appointment(
    h: Harness, client_id: int, pet_id: int, start: datetime, status: str = "confirmed"
) -> int:
    async with h.db.transaction() as session:
        service = (await session.execute(select(Service).where(Service.code == "full_groom"))).scalar_one()
        appt = Appointment(
            client_id=client_id,
            service_id=service.id,
            start_at=start,
            end_at=start + timedelta(minutes=90),
            status=status,
            source_channel="instagram",
        )
        session.add(appt)
        await session.flush()
        session.add(AppointmentPet(appointment_id=appt.id, pet_id=pet_id))
        return appt.id


async def test_the_card_names_the_customer_their_handle_contacts_history_and_the_dogs_vaccination(
    harness: Harness,
) -> None:
    h = harness
    client_id, pet_id, _ = await h.customer_with_pet(
        channel=Channel.INSTAGRAM,
        external_id="ig-7",
        name="Ann Lee",
        pet_name="Bella",
        vaccination_expires_on=date(2031, 5, 1),
    )
    past = datetime(2026, 1, 10, 15, 0, tzinfo=UTC)
    for n, status in enumerate(("completed", "completed", "no_show")):
        await _appointment(h, client_id, pet_id, past + timedelta(days=7 * n), status=status)
    async with h.db.transaction() as session:
        await session.execute(
            update(ChannelIdentity).where(ChannelIdentity.client_id == client_id).values(handle="ann.grooms")
        )
        await session.execute(
            update(Client).where(Client.id == client_id).values(phone="+15550102030", email="ann@example.org")
        )
    await h.request(client_id, pet_id, channel=Channel.INSTAGRAM)
    await h.run_jobs()

    text = h.fake.last("sendMessage").text
    for expected in (
        "Ann Lee",
        "Instagram @ann.grooms",
        "+15550102030",
        "ann@example.org",
        "2 past visits, 1 no-show",
        "Bella",
        "vaccinated until 1 May 2031",
    ):
        assert expected in text, expected
    assert "(no name)" not in text and "Dog 1" not in text and "vaccination: unknown" not in text


async def test_telegram_username_is_kept_and_a_nameless_customer_is_never_client_n(harness: Harness) -> None:
    h = harness
    sender: dict[str, Any] = {
        "from": {"id": CUSTOMER, "is_bot": False, "first_name": "Ann", "username": "ann_tg"}
    }
    update_ = h.message(CUSTOMER, "hello", **sender)
    await h.feed(update_)
    async with h.db.transaction() as session:
        identity = (
            await session.execute(select(ChannelIdentity).where(ChannelIdentity.external_id == str(CUSTOMER)))
        ).scalar_one()
        assert identity.handle == "ann_tg"

    # A website visitor who gave no name: the agenda shows what is known, never "client #N".
    client_id, pet_id, _ = await h.customer_with_pet(
        channel=Channel.WEB, external_id="web-session-1", name=""
    )
    async with h.db.transaction() as session:
        await session.execute(
            update(Client).where(Client.id == client_id).values(name=None, email="zoe@x.org")
        )
    today = datetime.now(h.settings.tz).date()
    await _appointment(h, client_id, pet_id, datetime.combine(today, time(23, 0), h.settings.tz))
    await h.feed(h.message(KIMMIE, "/today"))
    agenda = h.fake.last("sendMessage").text
    assert "zoe@x.org" in agenda and "client #" not in agenda
    await h.feed(h.message(KIMMIE, "/week"))
    assert "client #" not in h.fake.last("sendMessage").text


async def test_the_daily_list_is_one_message_with_contacts_and_a_mark_confirmed_button_each(
    harness: Harness,
) -> None:
    h = harness
    ids = []
    for n, external in enumerate(("ig-a", "ig-b")):
        client_id, pet_id, _ = await h.customer_with_pet(
            channel=Channel.INSTAGRAM, external_id=external, name=f"Customer {n}", pet_name=f"Rex{n}"
        )
        async with h.db.transaction() as session:
            await session.execute(update(Client).where(Client.id == client_id).values(phone=f"+1555000{n}"))
        start = datetime.now(UTC) + timedelta(hours=30 + 3 * n)  # no overlap (PostgreSQL refuses it)
        ids.append(await _appointment(h, client_id, pet_id, start))
    before = len(h.fake.calls_to("sendMessage"))
    async with h.db.transaction() as session:
        await notify_admin(session, "reminder_digest", appointment_ids=ids)
    await h.run_jobs()

    sent = h.fake.calls_to("sendMessage")[before:]
    assert len(sent) == 1, "one list, not one alert per reminder"
    [digest] = sent
    assert digest.chat_id == KIMMIE
    for expected in ("could not reach", "Customer 0", "+15550000", "Rex0", "Customer 1", "+15550001", "Rex1"):
        assert expected in digest.text, expected
    data = ReminderAction(action="confirm", appointment_id=ids[1]).pack()
    assert digest.button_data(f"#{ids[1]}") == data

    markup = {"inline_keyboard": [[{"text": t, "callback_data": d}] for t, d in digest.buttons()]}
    await h.feed(h.callback(KIMMIE, data, markup=markup))
    async with h.db.transaction() as session:
        marked = await session.get_one(Appointment, ids[1])
        other = await session.get_one(Appointment, ids[0])
    assert marked.reminder_confirmed_at is not None and other.reminder_confirmed_at is None
    assert "marked confirmed" in h.fake.last("answerCallbackQuery").data["text"]
    edited = h.fake.last("editMessageReplyMarkup")
    assert f"#{ids[0]}" in str(edited.data) and f"#{ids[1]}" not in str(edited.data)  # the rest stay
