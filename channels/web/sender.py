"""The website chat's `ChannelSender`: the browser polls for replies, so "delivering" one only marks it
sent. It cannot push (`can_push=False`), so core/delivery.py never picks it as a fallback route for
another channel. Nothing goes to a platform, so there are no parts to report or to resume after."""

from __future__ import annotations

from core.ports import ChannelCapabilities, PartSent, SendResult
from core.types import OutboundMessage, Recipient


class WebSender:
    capabilities = ChannelCapabilities(can_push=False, parts=False)
    credentials_fault_key: str | None = None  # no token

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult:
        # Stored already; the widget fetches it from /api/chat/.../messages.
        del recipient, message, resume_from, on_part_sent
        return SendResult(platform_message_id=None)
