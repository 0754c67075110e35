"""Quick-reply payloads the booking service puts on its customer messages (ASCII, <= 64 bytes).

The offline responder / conversation engine (ENG-B) parses them with `parse()`:
- "APPT_OK:<id>"      the customer confirms they are coming (reminder)
- "APPT_CANCEL:<id>"  the customer wants to cancel (reminder); call cancel(client_id=theirs)
- "APPT_MOVE:<id>"    the customer wants another time (reminder)
- "ALT:<id>:<UTC yyyymmddHHMM>"  an alternative Kimmie offered when declining request <id>:
                      call request_alternative(client_id=theirs, appointment_id=<id>, start=...)
- "BOOK"              entry payload: start a booking (rebooking nudge, expired hold)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

CONFIRM = "APPT_OK"
CANCEL = "APPT_CANCEL"
MOVE = "APPT_MOVE"
ALTERNATIVE = "ALT"
BOOK = "BOOK"


@dataclass(frozen=True, slots=True)
class BookingPayload:
    action: str
    appointment_id: int
    start: datetime | None = None


def appointment_action(action: str, appointment_id: int) -> str:
    return f"{action}:{appointment_id}"


def alternative(appointment_id: int, start: datetime) -> str:
    return f"{ALTERNATIVE}:{appointment_id}:{start.astimezone(UTC):%Y%m%d%H%M}"


def parse(payload: str | None) -> BookingPayload | None:
    """The booking payload in a quick reply, or None when it is not one of ours (or malformed)."""
    if not payload:
        return None
    parts = payload.strip().split(":")
    try:
        if parts[0] in (CONFIRM, CANCEL, MOVE) and len(parts) == 2:
            return BookingPayload(parts[0], int(parts[1]))
        if parts[0] == ALTERNATIVE and len(parts) == 3:
            start = datetime.strptime(parts[2], "%Y%m%d%H%M").replace(tzinfo=UTC)
            return BookingPayload(ALTERNATIVE, int(parts[1]), start)
    except ValueError:
        return None
    return None
