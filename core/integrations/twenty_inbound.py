"""Twenty's webhook, read back: a Person's name, e-mail or phone edited in the CRM updates the client.

Kept apart from core/integrations/twenty.py (the outbound adapter, httpx): the route needs only the
secret and these functions. Twenty signs each post with `X-Twenty-Webhook-Signature` = hex
HMAC-SHA256(secret, "{X-Twenty-Webhook-Timestamp}:{raw body}") and does not retry a failed post, so
the answer is about the request, not the work: a bad signature is 401, a malformed body 400, a Person
we do not know (or an event about something else) 200 and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.customers import ContactConflictError, client_updated, save_contact
from core.db.database import insert_for
from core.db.models import Client, ProcessedEvent

# Twenty's timestamp is Date.now() (milliseconds); a value this small is seconds.
_MS_THRESHOLD = 10**11
TOLERANCE_S = 300.0


class BadSignatureError(Exception):
    """Missing, stale or wrong signature: 401."""


class MalformedError(Exception):
    """Not a Twenty webhook body: 400."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def verify(
    secret: str, timestamp: str | None, given: str | None, body: bytes, *, now: float | None = None
) -> None:
    if not timestamp or not given:
        raise BadSignatureError("missing X-Twenty-Webhook-Signature or -Timestamp")
    try:
        stamp = float(timestamp)
    except ValueError:
        raise BadSignatureError("timestamp is not a number") from None
    seconds = stamp / 1000 if stamp > _MS_THRESHOLD else stamp
    if abs((now if now is not None else time.time()) - seconds) > TOLERANCE_S:
        raise BadSignatureError("timestamp outside 5 minutes")
    if not hmac.compare_digest(signature(secret, timestamp, body), given.strip().lower()):
        raise BadSignatureError("signature does not match")


@dataclass(frozen=True, slots=True)
class PersonChange:
    event: str
    person_id: str
    name: str | None
    email: str | None
    phone: str | None


def parse(body: bytes) -> PersonChange | None:
    """The Person change in a webhook body; None for events about anything else."""
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedError("body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("eventName"), str):
        raise MalformedError("no eventName")
    event = data["eventName"]
    if event not in ("person.updated", "person.created"):
        return None
    record = data.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise MalformedError("no record id")
    return PersonChange(event, record["id"], _name(record), _email(record), _phone(record))


def _name(record: Mapping[str, Any]) -> str | None:
    name = record.get("name")
    if not isinstance(name, dict):
        return None
    full = " ".join(str(name.get(k) or "").strip() for k in ("firstName", "lastName")).strip()
    return full or None


def _email(record: Mapping[str, Any]) -> str | None:
    emails = record.get("emails")
    value = emails.get("primaryEmail") if isinstance(emails, dict) else None
    return str(value).strip() or None if value else None


def _phone(record: Mapping[str, Any]) -> str | None:
    phones = record.get("phones")
    if not isinstance(phones, dict) or not phones.get("primaryPhoneNumber"):
        return None
    code = str(phones.get("primaryPhoneCallingCode") or "").strip()
    return f"{code}{phones['primaryPhoneNumber']}" if code else str(phones["primaryPhoneNumber"])


async def seen_before(session: AsyncSession, nonce: str | None) -> bool:
    """Twenty's nonce, kept once: the same post twice changes nothing the second time."""
    if not nonce:
        return False
    insert = insert_for(session)
    stored = await session.execute(
        insert(ProcessedEvent)
        .values(source="twenty", event_id=nonce[:255])
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(ProcessedEvent.id)
    )
    return stored.scalar_one_or_none() is None


async def apply(session: AsyncSession, change: PersonChange) -> str:
    """Update the client this Person is; returns what happened ("updated", "unchanged", "unknown",
    "conflict")."""
    client = (
        await session.execute(select(Client).where(Client.twenty_person_id == change.person_id))
    ).scalar_one_or_none()
    if client is None:
        return "unknown"
    before = (client.name, client.email, client.phone)
    try:
        await save_contact(session, client_id=client.id, phone=change.phone, email=change.email)
    except ContactConflictError:
        return "conflict"  # that address or number is another client's: Kimmie decides, not the CRM
    if change.name and change.name != client.name:
        client.name = change.name
        await session.flush()
        await client_updated(session, client, ["name"])
    return "unchanged" if before == (client.name, client.email, client.phone) else "updated"
