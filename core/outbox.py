"""The outbox: every reply to a customer is a `message` row plus a `deliver_message` job, written in
the same transaction as whatever caused it. The job (core/delivery.py) sends it through the channel
adapter, at least once and never twice once the platform accepted it.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Message, utcnow
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import NewJob, enqueue_many
from core.types import Author, DeliveryStatus, Direction, OutboundMessage, UtilityTemplate

DELIVER_JOB = "deliver_message"
# `message.purpose` of a booking reminder: core/booking/reach_jobs.py watches whether it arrived.
REMINDER_PURPOSE = "reminder"


@job_payload(DELIVER_JOB)
class DeliverPayload(JobPayload):
    """The outbound message to send (core/delivery.py reads the rest from its row)."""

    message_id: int


_message = cast(Table, Message.__table__)
# Built once: each call only binds values (SQLAlchemy reuses the compiled form, asyncpg its prepared
# statement). Replies are written on every turn, so this is on the engine's hot path.
_INSERT_OUTBOUND = _message.insert().returning(_message.c.id)
_NO_USAGE: dict[str, Any] = {
    "llm_provider": None,
    "llm_model": None,
    "input_tokens": None,
    "output_tokens": None,
    "cache_read_input_tokens": None,
    "cache_creation_input_tokens": None,
}


def template_json(template: UtilityTemplate | None) -> dict[str, Any] | None:
    if template is None:
        return None
    return {
        "name": template.name,
        "language": template.language,
        "parameters": list(template.parameters),
        "buttons": list(template.button_payloads),
    }


def template_of(stored: dict[str, Any] | None) -> UtilityTemplate | None:
    if not stored:
        return None
    return UtilityTemplate(
        name=str(stored["name"]),
        language=str(stored.get("language") or "en_US"),
        parameters=tuple(str(p) for p in stored.get("parameters") or ()),
        button_payloads=tuple(str(b) for b in stored.get("buttons") or ()),
    )


def image_entries(message: OutboundMessage) -> list[Any]:
    """The row's `image_urls` JSON: a URL, or {"url", "key"} when the image has a storage key (no
    schema change: older rows hold plain strings, and `image_refs` reads both)."""
    if len(message.image_keys) != len(message.image_urls):
        return list(message.image_urls)
    return [{"url": url, "key": key} for url, key in zip(message.image_urls, message.image_keys, strict=True)]


def image_refs(entries: list[Any] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`image_entries` read back: (urls, keys); keys empty unless every image has one."""
    urls: list[str] = []
    keys: list[str] = []
    for entry in entries or []:
        if isinstance(entry, dict):
            urls.append(str(entry.get("url") or ""))
            if entry.get("key"):
                keys.append(str(entry["key"]))
        else:
            urls.append(str(entry))
    return tuple(urls), (tuple(keys) if len(keys) == len(urls) else ())


async def queue_outbound(
    session: AsyncSession,
    *,
    conversation_id: int,
    channel: str,
    message: OutboundMessage,
    author: Author = Author.ASSISTANT,
    llm_usage: dict[str, object] | None = None,
    purpose: str | None = None,
) -> int:
    """Store an outbound message and queue its delivery in the caller's transaction; its id."""
    row = {
        "conversation_id": conversation_id,
        "channel": channel,
        "direction": Direction.OUTBOUND.value,
        "author": author.value,
        "platform_message_id": None,
        "text": message.text,
        "payload": None,
        "attachments": [],
        "quick_replies": [
            {"title": q.title, "payload": q.payload, **({"url": q.url} if q.url else {})}
            for q in message.quick_replies
        ],
        "image_urls": image_entries(message),
        "delivery_status": DeliveryStatus.PENDING.value,
        "purpose": purpose,
        "template": template_json(message.template),
        "created_at": utcnow(),
        **_NO_USAGE,
        **(llm_usage or {}),
    }
    message_id = int((await session.execute(_INSERT_OUTBOUND, row)).scalar_one())
    await enqueue_many(
        session,
        [
            NewJob(
                DELIVER_JOB,
                DeliverPayload(message_id=message_id).dump(),
                idempotency_key=f"deliver:{message_id}",
                # One conversation's replies leave in the order they were written.
                queue_key=f"deliver:conversation:{conversation_id}",
            )
        ],
    )
    return message_id
