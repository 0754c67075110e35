"""The button payload grammar: round trips, Telegram's 64-byte limit, and junk in, None out."""

from datetime import UTC, date, datetime

import pytest

from core.conversation import payloads as pl

START = datetime(2027, 3, 2, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "step"),
    [
        (pl.book("full_groom"), pl.BookStep("full_groom")),
        (pl.book("full_groom", new_pet=True), pl.BookStep("full_groom", new_pet=True)),
        (
            pl.book("full_groom", new_pet=True, size="large"),
            pl.BookStep("full_groom", new_pet=True, size="large"),
        ),
        (
            pl.book("full_groom", new_pet=True, size="large", coat="wire"),
            pl.BookStep("full_groom", new_pet=True, size="large", coat="wire"),
        ),
        (pl.book("full_groom", pet_id=7), pl.BookStep("full_groom", pet_id=7)),
        (
            pl.book("full_groom", pet_id=7, day=date(2027, 3, 2)),
            pl.BookStep("full_groom", pet_id=7, day=date(2027, 3, 2)),
        ),
        (pl.book("full_groom", pet_id=7, start=START), pl.BookStep("full_groom", pet_id=7, start=START)),
    ],
)
def test_booking_steps_round_trip(payload: str, step: pl.BookStep) -> None:
    assert pl.parse_book(payload) == step
    assert pl.is_ours(payload) and pl.fits(payload)


def test_appointment_steps_round_trip() -> None:
    assert pl.parse_appointment(pl.cancel(12)) == pl.AppointmentStep("cancel", 12)
    assert pl.parse_appointment(pl.cancel(12, confirmed=True)) == pl.AppointmentStep(
        "cancel", 12, confirmed=True
    )
    assert pl.parse_appointment(pl.move(12)) == pl.AppointmentStep("move", 12)
    assert pl.parse_appointment(pl.move(12, day=date(2027, 3, 2))) == pl.AppointmentStep(
        "move", 12, day=date(2027, 3, 2)
    )
    assert pl.parse_appointment(pl.move(12, start=START)) == pl.AppointmentStep("move", 12, start=START)


def test_the_longest_payloads_fit_telegrams_limit() -> None:
    # A 20-character service code and ten-digit ids still fit in 64 bytes.
    longest = pl.book("x" * 20, pet_id=9_999_999_999, start=START)
    assert len(longest.encode()) <= 64 and pl.fits(longest)
    assert pl.fits(pl.move(9_999_999_999, start=START))
    assert not pl.fits("BK:" + "x" * 62) and not pl.fits("BK:é")


@pytest.mark.parametrize(
    "junk",
    [
        "BK",
        "BK:",
        "BK:svc:q1",
        "BK:svc:pX",
        "BK:svc:p1:t2027",
        "BK:svc:p1:d20271399",
        "BK:svc:p1:x1",
        "BK:svc:new:a:b:c",
    ],
)
def test_malformed_booking_payloads_parse_to_none(junk: str) -> None:
    assert pl.parse_book(junk) is None


@pytest.mark.parametrize("junk", ["CX", "CX:abc", "CX:1:n", "MV:1:zz", "MV:1:t99", "XX:1"])
def test_malformed_appointment_payloads_parse_to_none(junk: str) -> None:
    assert pl.parse_appointment(junk) is None


def test_which_payloads_the_button_flow_answers() -> None:
    for ours in (
        "BOOK",
        "PRICES",
        "HOURS",
        "MY_BOOKINGS",
        "HUMAN",
        "MENU",
        "BK:x",
        "CX:1",
        "APPT_OK:3",
        "ALT:1:x",
    ):
        assert pl.is_ours(ours)
    for other in (None, "", "GET_STARTED", "book", "hello"):
        assert not pl.is_ours(other)


def test_titles_are_cut_to_twenty_characters() -> None:
    assert pl.title("Short") == "Short"
    assert len(pl.title("A very long service name indeed")) == 20
