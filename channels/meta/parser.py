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

Every message returned fits the tables it is stored in, so one odd event cannot fail a whole batch's
INSERT on PostgreSQL (which refuses over-long values, NUL characters and unencodable text):
  - ids: a sender id over 200 characters (`channel_identity.external_id`) drops the event (a clipped
    PSID would reach someone else); a mid over 255 (`message.platform_message_id`), or one with NUL
    or lone surrogates, is replaced by a stable digest of itself (redeliveries still dedupe);
    a `reply_to` that is not a storable id is left out;
  - text: NUL removed, lone surrogates (legal in JSON's \\uXXXX escapes) become U+FFFD, clipped to
    MAX_TEXT_CHARS; a payload over 1,000 characters (`message.payload`) is left out of a quick reply
    (its title still arrives) and drops a postback (the payload is all it carries);
  - a timestamp outside 1970-2100 (or not an integer) gives no `sent_at` (ingest uses the arrival time).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.types import Attachment, Channel, InboundMessage

OBJECT_CHANNELS = {"page": Channel.MESSENGER, "instagram": Channel.INSTAGRAM}
KEPT_ATTACHMENT_KINDS = frozenset({"image", "video", "audio", "file"})
# Event kinds we recognise and deliberately ignore (everything else counts as "unsupported_event").
IGNORED_EVENTS = ("read", "delivery", "reaction", "optin", "referral", "account_linking", "message_edit")
# Column sizes in core/db/models.py: channel_identity.external_id, message.platform_message_id, .payload.
MAX_SENDER_ID_CHARS = 200
MAX_ID_CHARS = 255
MAX_PAYLOAD_CHARS = 1000
# No column limit; far beyond any chat message (Messenger's own cap is 2,000), it only bounds the prompt.
MAX_TEXT_CHARS = 20_000
MAX_URL_CHARS = 8192  # Meta's CDN URLs are a few hundred characters
# 1970 (exclusive) to 2100 in epoch milliseconds: anything else is not a real event time.
_MAX_TIMESTAMP_MS = 4_102_444_800_000
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
            timed.append((_timestamp_ms(event) or 0, len(timed), message))
    timed.sort(key=lambda item: (item[0], item[1]))
    result.messages = [message for _, _, message in timed]
    return result


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_id(value: Any) -> str | None:
    """A sender id as stored: a non-empty storable string of at most MAX_SENDER_ID_CHARS, else None."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_SENDER_ID_CHARS:
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_SENDER_ID_CHARS and _storable(value):
        return value
    return None


def _storable(value: str) -> bool:
    return "\x00" not in value and not _LONE_SURROGATE.search(value)


def _clean_text(value: Any, max_chars: int) -> str:
    """A string as PostgreSQL can store it: NUL dropped, lone surrogates replaced, clipped."""
    if not isinstance(value, str):
        return ""
    text: str = value
    if not _storable(text):
        text = _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", ""))
    return text[:max_chars]


def _mid(value: str) -> str:
    """The dedupe key: the mid itself, or a stable digest of one the column cannot hold."""
    if len(value) <= MAX_ID_CHARS and _storable(value):
        return value
    return "mid:sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _optional_id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _storable(value):
        return value
    return None


def _payload(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_PAYLOAD_CHARS:
        return None
    return _clean_text(value, MAX_PAYLOAD_CHARS) or None


def _timestamp_ms(event: dict[str, Any]) -> int | None:
    stamp = event.get("timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 < stamp < _MAX_TIMESTAMP_MS:
        return stamp
    return None


def _sent_at(event: dict[str, Any]) -> datetime | None:
    stamp = _timestamp_ms(event)
    return datetime.fromtimestamp(stamp / 1000, UTC) if stamp is not None else None


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
    text = _clean_text(message.get("text"), MAX_TEXT_CHARS)
    quick_reply = message.get("quick_reply")
    payload = _payload(quick_reply.get("payload")) if isinstance(quick_reply, dict) else None
    attachments = tuple(
        Attachment(kind=a["type"], url=_attachment_url(a))
        for a in _list(message.get("attachments"))
        if isinstance(a, dict) and isinstance(a.get("type"), str) and a["type"] in KEPT_ATTACHMENT_KINDS
    )
    reply_to = message.get("reply_to")
    reply_mid = reply_to.get("mid") if isinstance(reply_to, dict) else None
    if not text and not payload and not attachments:
        return None, "unsupported"  # stickers, shares, story mentions, ... with nothing we can read
    return (
        InboundMessage(
            channel=channel,
            external_user_id=sender,
            platform_message_id=_mid(mid),
            text=text,
            payload=payload,
            attachments=attachments,
            sent_at=_sent_at(event),
            reply_to=_optional_id(reply_mid),
        ),
        "",
    )


def _attachment_url(attachment: dict[str, Any]) -> str | None:
    payload = attachment.get("payload")
    url = payload.get("url") if isinstance(payload, dict) else None
    if isinstance(url, str) and 0 < len(url) <= MAX_URL_CHARS and _storable(url):
        return url
    return None  # a URL cut short or altered would point elsewhere


def _postback(
    channel: Channel, sender: str | None, event: dict[str, Any], postback: Any
) -> tuple[InboundMessage | None, str]:
    payload = _payload(postback.get("payload")) if isinstance(postback, dict) else None
    if not sender or not isinstance(postback, dict) or payload is None:
        return None, "malformed_event"
    mid = postback.get("mid")
    if isinstance(mid, str) and mid:
        mid = _mid(mid)
    else:
        # Older postbacks carry no mid: derive a stable key so a redelivery still dedupes.
        basis = f"{sender}:{event.get('timestamp')}:{payload}".encode("utf-8", "surrogatepass")
        mid = "postback:" + hashlib.sha256(basis).hexdigest()[:40]
    title = _clean_text(postback.get("title"), MAX_TEXT_CHARS)
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
