"""Callback data stays within Telegram's 64 bytes at its largest values, keeps the packed form older
buttons carry, and a forged action unpacks to nothing (so no handler acts on it)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiogram.filters.callback_data import MAX_CALLBACK_LENGTH, CallbackData
from aiogram.types import CallbackQuery, User

from bot.callbacks import ApptAction, ChatAction, MyBooking, PhotoAction
from core.storage import PHOTO_KINDS

BIG_ID = 2**63 - 1  # BigInteger ids: the widest an id can get
LATE_TS = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    "data",
    [
        *(ApptAction(action=a, appointment_id=BIG_ID, ts=LATE_TS) for a in ("approve", "alt", "decline")),
        ChatAction(action="open", conversation_id=BIG_ID),
        *(PhotoAction(action="kind", target_id=BIG_ID, kind=k) for k in PHOTO_KINDS),
        MyBooking(action="cancel_yes", appointment_id=BIG_ID, ts=LATE_TS),
    ],
    ids=str,
)
def test_the_largest_packed_data_fits_telegrams_limit(data: CallbackData) -> None:
    packed = data.pack()
    assert len(packed.encode()) <= MAX_CALLBACK_LENGTH == 64
    assert type(data).unpack(packed) == data


def test_the_packed_form_is_the_one_old_buttons_carry() -> None:
    assert ApptAction(action="approve", appointment_id=5).pack() == "k.ap:approve:5:0"
    assert ChatAction(action="done", conversation_id=7).pack() == "k.ch:done:7"
    assert PhotoAction(action="cancel").pack() == "k.ph:cancel:0:"
    assert MyBooking(action="slot", appointment_id=3, ts=1700000000).pack() == "c.bk:slot:3:1700000000"


@pytest.mark.parametrize("forged", ["k.ap:delete:5:0", "k.ap:approve:x:0", "k.ch:open", "k.ph:pet:3:"])
async def test_a_forged_action_matches_no_handler(forged: str) -> None:
    query = CallbackQuery(
        id="1", from_user=User(id=1, is_bot=False, first_name="U"), chat_instance="c", data=forged
    )
    for factory in (ApptAction, ChatAction, PhotoAction):
        assert await factory.filter()(query) is False
