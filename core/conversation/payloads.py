"""The quick-reply payload grammar of the button flow (offline responder; Telegram reuses it).

Every payload is ASCII and at most 64 bytes (Telegram's callback_data limit); titles are at most 20
characters and a message carries at most 13 (Meta's limits). Payloads are channel-agnostic: a channel
puts whatever the customer tapped into `InboundMessage.payload` and core does the rest.

Payloads come from the customer's device, so nothing in them is trusted: every id is checked against
the conversation's own client and every time against the booking rules when it is used.

Entry payloads (any channel may send them):
    BOOK  PRICES  HOURS  MY_BOOKINGS  HUMAN  MENU
Booking flow, one step per tap (svc = service code, p<id> = the customer's pet, UTC times):
    BK:<svc>                           choose a pet
    BK:<svc>:new                       new pet: choose its size
    BK:<svc>:new:<size>                new pet: choose its coat
    BK:<svc>:new:<size>:<coat>         creates the pet, then: choose a day
    BK:<svc>:p<id>                     choose a day
    BK:<svc>:p<id>:d<YYYYMMDD>         choose a time that day (local date)
    BK:<svc>:p<id>:t<YYYYMMDDHHMM>     file the booking request (UTC start)
Own appointments:
    CX:<id>          ask to confirm cancelling        CX:<id>:y   cancel
    MV:<id>          choose a new day                 MV:<id>:d<YYYYMMDD>   choose a time
    MV:<id>:t<YYYYMMDDHHMM>   move the appointment there
Same again (the dog, service, add-ons and notes of appointment <id>, the customer's last visit):
    AG:<id>          choose a day      AG:<id>:d<YYYYMMDD>   choose a time
    AG:<id>:t<YYYYMMDDHHMM>   file the request (after the questions below, if any)
Before filing, the flow may ask for a way to reach the customer later:
    RQ:skip          file without one      RQ:done    file (they opened the Telegram link)
Looking Glass previews (core/previews/service.py):
    PV:s:<style>  preview of the last photo     PV:f:<style>  the same from three angles
    PV:b:<id>     book with that preview        PV:m          the style buttons again
The booking service's own payloads (core/booking/payloads.py: APPT_OK, APPT_CANCEL, APPT_MOVE, ALT)
are understood too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

MAX_PAYLOAD_BYTES = 64
MAX_TITLE_CHARS = 20
MAX_QUICK_REPLIES = 13

BOOK = "BOOK"
PRICES = "PRICES"
HOURS = "HOURS"
MY_BOOKINGS = "MY_BOOKINGS"
HUMAN = "HUMAN"
MENU = "MENU"
ENTRY = frozenset({BOOK, PRICES, HOURS, MY_BOOKINGS, HUMAN, MENU})
CONTACT_SKIP = "RQ:skip"
CONTACT_DONE = "RQ:done"


@dataclass(frozen=True, slots=True)
class BookStep:
    service: str
    pet_id: int | None = None
    new_pet: bool = False
    size: str | None = None
    coat: str | None = None
    day: date | None = None
    start: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppointmentStep:
    action: str  # "cancel" | "move"
    appointment_id: int
    confirmed: bool = False
    day: date | None = None
    start: datetime | None = None


@dataclass(frozen=True, slots=True)
class AgainStep:
    appointment_id: int
    day: date | None = None
    start: datetime | None = None


def again(appointment_id: int, *, day: date | None = None, start: datetime | None = None) -> str:
    if start is not None:
        return f"AG:{appointment_id}:{_ts(start)}"
    if day is not None:
        return f"AG:{appointment_id}:{_day(day)}"
    return f"AG:{appointment_id}"


def parse_again(payload: str) -> AgainStep | None:
    parts = payload.split(":")
    if parts[0] != "AG" or len(parts) not in (2, 3):
        return None
    try:
        appointment_id = int(parts[1])
        if len(parts) == 2:
            return AgainStep(appointment_id)
        if parts[2].startswith("d"):
            return AgainStep(appointment_id, day=_parse_day(parts[2]))
        if parts[2].startswith("t"):
            return AgainStep(appointment_id, start=parse_ts(parts[2]))
    except ValueError:
        return None
    return None


def fits(payload: str) -> bool:
    return payload.isascii() and len(payload.encode()) <= MAX_PAYLOAD_BYTES


def title(text: str) -> str:
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


def _ts(start: datetime) -> str:
    return f"t{start.astimezone(UTC):%Y%m%d%H%M}"


def _day(day: date) -> str:
    return f"d{day:%Y%m%d}"


def book(
    service: str,
    *,
    pet_id: int | None = None,
    new_pet: bool = False,
    size: str | None = None,
    coat: str | None = None,
    day: date | None = None,
    start: datetime | None = None,
) -> str:
    parts = ["BK", service]
    if pet_id is not None:
        parts.append(f"p{pet_id}")
        if start is not None:
            parts.append(_ts(start))
        elif day is not None:
            parts.append(_day(day))
    elif new_pet:
        parts.append("new")
        if size:
            parts.append(size)
            if coat:
                parts.append(coat)
    return ":".join(parts)


def cancel(appointment_id: int, *, confirmed: bool = False) -> str:
    return f"CX:{appointment_id}:y" if confirmed else f"CX:{appointment_id}"


def move(appointment_id: int, *, day: date | None = None, start: datetime | None = None) -> str:
    if start is not None:
        return f"MV:{appointment_id}:{_ts(start)}"
    if day is not None:
        return f"MV:{appointment_id}:{_day(day)}"
    return f"MV:{appointment_id}"


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text[1:], "%Y%m%d%H%M").replace(tzinfo=UTC)


def _parse_day(text: str) -> date:
    return datetime.strptime(text[1:], "%Y%m%d").date()


def parse_book(payload: str) -> BookStep | None:
    parts = payload.split(":")
    if parts[0] != "BK" or len(parts) < 2 or not parts[1]:
        return None
    service = parts[1]
    try:
        if len(parts) == 2:
            return BookStep(service)
        if parts[2] == "new":
            size = parts[3] if len(parts) > 3 else None
            coat = parts[4] if len(parts) > 4 else None
            return BookStep(service, new_pet=True, size=size, coat=coat) if len(parts) <= 5 else None
        if not parts[2].startswith("p"):
            return None
        pet_id = int(parts[2][1:])
        if len(parts) == 3:
            return BookStep(service, pet_id=pet_id)
        if len(parts) == 4 and parts[3].startswith("d"):
            return BookStep(service, pet_id=pet_id, day=_parse_day(parts[3]))
        if len(parts) == 4 and parts[3].startswith("t"):
            return BookStep(service, pet_id=pet_id, start=parse_ts(parts[3]))
    except ValueError:
        return None
    return None


def parse_appointment(payload: str) -> AppointmentStep | None:
    parts = payload.split(":")
    if parts[0] not in ("CX", "MV") or len(parts) not in (2, 3):
        return None
    try:
        appointment_id = int(parts[1])
        if parts[0] == "CX":
            if len(parts) == 3 and parts[2] != "y":
                return None
            return AppointmentStep("cancel", appointment_id, confirmed=len(parts) == 3)
        if len(parts) == 2:
            return AppointmentStep("move", appointment_id)
        if parts[2].startswith("d"):
            return AppointmentStep("move", appointment_id, day=_parse_day(parts[2]))
        if parts[2].startswith("t"):
            return AppointmentStep("move", appointment_id, start=parse_ts(parts[2]))
    except ValueError:
        return None
    return None


def is_ours(payload: str | None) -> bool:
    """True when the button flow (not the LLM) should answer this payload."""
    if not payload:
        return False
    if payload in ENTRY or payload in (CONTACT_SKIP, CONTACT_DONE):
        return True
    head = payload.split(":", 1)[0]
    return head in {"BK", "CX", "MV", "AG", "PV", "APPT_OK", "APPT_CANCEL", "APPT_MOVE", "ALT"}
