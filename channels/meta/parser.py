"""Meta webhook payload → core `InboundMessage`s. A pure function: no I/O, no clock, no settings.

Handled (Messenger `object: page` and Instagram `object: instagram`, same `entry[].messaging[]` shape):
  - message with text                      → text
  - message with quick_reply               → text (the button title) + payload
  - postback                               → payload (+ its title as text)
  - message with image/video/audio/file    → attachments (kept for Kimmie and for style previews)
  - message.reply_to.mid (Instagram)       → reply_to
Skipped, counted by reason: echoes (our own sends), read, delivery, reaction, deleted and unsupported
messages, events of other kinds (optin, referral, standby, changes...), and unknown objects.
Events of one POST are returned sorted by timestamp: Meta does not deliver them in order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.types import Attachment, Channel, InboundMessage

OBJECT_CHANNELS = {"page": Channel.MESSENGER, "instagram": Channel.INSTAGRAM}
KEPT_ATTACHMENT_KINDS = frozenset({"image", "video", "audio", "file"})
# Event kinds we recognise and deliberately ignore (everything else counts as "unsupported_event").
IGNORED_EVENTS = ("read", "delivery", "reaction", "optin", "referral", "account_linking", "message_edit")


@dataclass
class ParseResult:
    channel: Channel | None
    messages: list[InboundMessage] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    unknown_object: str | None = None  # set when `object` is not one we handle


def parse_webhook(payload: Any) -> ParseResult:
    if not isinstance(payload, dict):
        return ParseResult(channel=None, unknown_object=type(payload).__name__)
    obj = payload.get("object")
    channel = OBJECT_CHANNELS.get(obj) if isinstance(obj, str) else None
    if channel is None:
        return ParseResult(channel=None, unknown_object=str(obj)[:40])
    result = ParseResult(channel=channel)
    timed: list[tuple[int, int, InboundMessage]] = []
    for entry in _list(payload.get("entry")):
        if not isinstance(entry, dict):
            result.skipped["malformed_entry"] += 1
            continue
        if entry.get("changes"):
            result.skipped["changes"] += len(_list(entry.get("changes")))
        if entry.get("standby"):
            result.skipped["standby"] += len(_list(entry.get("standby")))
        for event in _list(entry.get("messaging")):
            message, reason = _parse_event(channel, event)
            if message is None:
                result.skipped[reason] += 1
                continue
            timestamp = event.get("timestamp") if isinstance(event.get("timestamp"), int) else 0
            timed.append((timestamp, len(timed), message))
    timed.sort(key=lambda item: (item[0], item[1]))
    result.messages = [message for _, _, message in timed]
    return result


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
        return str(value)
    return None


def _sent_at(event: dict[str, Any]) -> datetime | None:
    stamp = event.get("timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool) and stamp > 0:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    return None


def _parse_event(channel: Channel, event: Any) -> tuple[InboundMessage | None, str]:
    if not isinstance(event, dict):
        return None, "malformed_event"
    sender = _str_id(event.get("sender"))
    if "message" in event:
        message = event["message"]
        if not isinstance(message, dict):
            return None, "malformed_event"
        if message.get("is_echo"):
            return None, "echo"
        if message.get("is_deleted"):
            return None, "deleted"
        if message.get("is_unsupported"):
            return None, "unsupported"
        return _message(channel, sender, event, message)
    if "postback" in event:
        return _postback(channel, sender, event, event["postback"])
    for kind in IGNORED_EVENTS:
        if kind in event:
            return None, kind
    return None, "unsupported_event"


def _message(
    channel: Channel, sender: str | None, event: dict[str, Any], message: dict[str, Any]
) -> tuple[InboundMessage | None, str]:
    mid = message.get("mid")
    if not sender or not isinstance(mid, str) or not mid:
        return None, "malformed_event"
    raw_text = message.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    quick_reply = message.get("quick_reply")
    payload = quick_reply.get("payload") if isinstance(quick_reply, dict) else None
    attachments = tuple(
        Attachment(kind=a["type"], url=_attachment_url(a))
        for a in _list(message.get("attachments"))
        if isinstance(a, dict) and a.get("type") in KEPT_ATTACHMENT_KINDS
    )
    reply_to = message.get("reply_to")
    reply_mid = reply_to.get("mid") if isinstance(reply_to, dict) else None
    if not text and not payload and not attachments:
        return None, "unsupported"  # stickers, shares, story mentions, ... with nothing we can read
    return (
        InboundMessage(
            channel=channel,
            external_user_id=sender,
            platform_message_id=mid,
            text=text,
            payload=payload if isinstance(payload, str) else None,
            attachments=attachments,
            sent_at=_sent_at(event),
            reply_to=reply_mid if isinstance(reply_mid, str) else None,
        ),
        "",
    )


def _attachment_url(attachment: dict[str, Any]) -> str | None:
    payload = attachment.get("payload")
    url = payload.get("url") if isinstance(payload, dict) else None
    return url if isinstance(url, str) else None


def _postback(
    channel: Channel, sender: str | None, event: dict[str, Any], postback: Any
) -> tuple[InboundMessage | None, str]:
    if not sender or not isinstance(postback, dict) or not isinstance(postback.get("payload"), str):
        return None, "malformed_event"
    payload: str = postback["payload"]
    mid = postback.get("mid")
    if not isinstance(mid, str) or not mid:
        # Older postbacks carry no mid: derive a stable key so a redelivery still dedupes.
        basis = f"{sender}:{event.get('timestamp')}:{payload}".encode()
        mid = "postback:" + hashlib.sha256(basis).hexdigest()[:40]
    raw_title = postback.get("title")
    title = raw_title if isinstance(raw_title, str) else ""
    return (
        InboundMessage(
            channel=channel,
            external_user_id=sender,
            platform_message_id=mid,
            text=title,
            payload=payload,
            sent_at=_sent_at(event),
        ),
        "",
    )
