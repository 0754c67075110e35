"""The website chat's `ChannelSender`: the browser polls for replies, so "delivering" one only marks it
sent. It cannot push, so core/delivery.py never picks it as a fallback route for another channel."""

from __future__ import annotations

from core.ports import SendResult
from core.types import OutboundMessage, Recipient


class WebSender:
    push_capable = False

    async def send(self, recipient: Recipient, message: OutboundMessage) -> SendResult:
        del recipient, message  # stored already; the widget fetches it from /api/chat/.../messages
        return SendResult(platform_message_id=None)
