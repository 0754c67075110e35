"""A logging AdminNotifier: how Kimmie "hears" about things when Telegram is off.

Every notification becomes one structured log line (ids and event names, never message bodies), so
an operator tailing the logs sees booking requests, hand-overs and alerts even without a bot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger("cheshire.admin")


class LoggingNotifier:
    """Implements core.ports.AdminNotifier by logging."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    async def booking_request(self, appointment_id: int) -> None:
        self._log.warning("booking request waiting for Kimmie", extra={"appointment_id": appointment_id})

    async def booking_changed(self, appointment_id: int, event: str) -> None:
        self._log.info("booking changed", extra={"appointment_id": appointment_id, "event": event})

    async def handover(self, conversation_id: int, reason: str) -> None:
        self._log.warning(
            "conversation needs Kimmie", extra={"conversation_id": conversation_id, "reason": reason}
        )

    async def reminder_digest(self, appointment_ids: Sequence[int]) -> None:
        self._log.warning("reminders that did not arrive", extra={"appointment_ids": list(appointment_ids)})

    async def alert(self, text: str) -> None:
        # Alert texts are written by us (fault descriptions), not customer content: safe to log.
        self._log.error("alert for Kimmie: %s", text)
