"""Inbound messages enter core here, from every channel.

`ingest_many()` runs inside the adapter's unit of work: it stores each message once (the platform's
id is a unique key, so a redelivery is a no-op) and queues its processing in the same transaction.
The adapter commits and answers the platform at once; the engine runs later in a worker. Processing
jobs of one conversation share a queue key, so one customer's messages are handled strictly in order.

The work is a fixed handful of set-based statements per call, however many messages it carries:
look up the senders' identities and conversations, create the missing ones (first contact), touch
their last-inbound times, insert the messages, insert their jobs. `GroupCommit` lets concurrent
webhook requests share one such call and one commit, so a burst costs a few round trips per batch
rather than per message; each request still gets its answer only after its messages are durable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core import customers
from core.db.database import ENQUEUED_FLAG, SUBSCRIBERS_KEY, Database, dialect_name, insert_for
from core.db.group_commit import BatchedWrites
from core.db.models import ChannelIdentity, Client, Conversation, Message, UtcDateTime, utcnow
from core.events import CLIENT_CREATED, DISPATCH_JOB, FollowUps
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import DEFAULT_MAX_ATTEMPTS, NewJob, enqueue_many
from core.types import Author, DeliveryStatus, Direction, InboundMessage

log = logging.getLogger(__name__)

PROCESS_JOB = "process_message"


@job_payload(PROCESS_JOB)
class ProcessMessagePayload(JobPayload):
    """One stored inbound message for the engine (core/conversation/engine.py). PostgreSQL's one-statement
    path builds the same object in SQL (`jsonb_build_object` below)."""

    message_id: int
    conversation_id: int


_identity = cast(Table, ChannelIdentity.__table__)
_conversation = cast(Table, Conversation.__table__)
_client = cast(Table, Client.__table__)
_message = cast(Table, Message.__table__)

_SenderKey = tuple[str, str]  # (channel, external user id)


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: bool  # False: a redelivery of a message already stored
    message_id: int | None
    conversation_id: int
    client_id: int
    identity_id: int


@dataclass(frozen=True, slots=True)
class _Sender:
    identity_id: int
    client_id: int
    conversation_id: int | None


def conversation_queue_key(conversation_id: int) -> str:
    return f"conversation:{conversation_id}"


async def ingest(session: AsyncSession, inbound: InboundMessage) -> IngestResult:
    return (await ingest_many(session, [inbound]))[0]


async def ingest_many(session: AsyncSession, inbounds: Sequence[InboundMessage]) -> list[IngestResult]:
    """Store `inbounds` (in order) and queue their processing, in the caller's transaction.

    Results are in input order. A message already stored, or repeated earlier in the same call, comes
    back with `stored=False` and no message id.
    """
    if not inbounds:
        return []
    for inbound in inbounds:
        if inbound.phone:  # a shared Telegram contact: rare, and may merge two clients
            await _link_phone(session, inbound)
    unique, slots = _dedupe(inbounds)
    if dialect_name(session) == "postgresql":
        stored = await _store_postgresql(session, unique)
    else:
        stored = await _store_portable(session, unique)
    return _expand(stored, slots)


async def already_stored(db: Database, inbounds: Sequence[InboundMessage]) -> set[tuple[str, str]]:
    """(channel, platform message id) of those `inbounds` stored before: redeliveries. One indexed
    read; the webhooks ask only when a sender seems over its flood quota, so that redeliveries are
    never what pushes a new message over it."""
    keys = list({(inbound.channel.value, inbound.platform_message_id) for inbound in inbounds})
    if not keys:
        return set()
    query = select(_message.c.channel, _message.c.platform_message_id).where(
        tuple_(_message.c.channel, _message.c.platform_message_id).in_(keys)
    )
    async with db.transaction() as session:
        return {(row[0], row[1]) for row in await session.execute(query)}


def _dedupe(inbounds: Sequence[InboundMessage]) -> tuple[list[InboundMessage], list[tuple[int, bool]]]:
    """The distinct messages (by channel and platform id), and for each input: the index of its
    distinct message and whether it is that message's first occurrence."""
    index_of: dict[tuple[str, str], int] = {}
    unique: list[InboundMessage] = []
    slots: list[tuple[int, bool]] = []
    for inbound in inbounds:
        mid = (inbound.channel.value, inbound.platform_message_id)
        if mid in index_of:
            slots.append((index_of[mid], False))
        else:
            index_of[mid] = len(unique)
            unique.append(inbound)
            slots.append((index_of[mid], True))
    return unique, slots


def _expand(stored: list[IngestResult], slots: list[tuple[int, bool]]) -> list[IngestResult]:
    """Results in input order; a repeat within one call is a redelivery of its first occurrence."""
    return [
        stored[index] if first else replace(stored[index], stored=False, message_id=None)
        for index, first in slots
    ]


async def _store_portable(session: AsyncSession, inbounds: list[InboundMessage]) -> list[IngestResult]:
    """A few set-based statements through SQLAlchemy: SQLite, and PostgreSQL's first contacts."""
    senders = await _resolve_senders(session, inbounds)
    await _touch_inbound(session, inbounds, senders)
    message_ids = await _insert_messages(session, inbounds, senders)
    await enqueue_many(
        session,
        [
            NewJob(
                PROCESS_JOB,
                ProcessMessagePayload(message_id=message_id, conversation_id=conversation_id).dump(),
                idempotency_key=f"process:{message_id}",
                queue_key=conversation_queue_key(conversation_id),
            )
            for inbound, (message_id, conversation_id) in zip(inbounds, message_ids, strict=True)
            if message_id is not None and inbound.answer
        ],
    )
    results = []
    for inbound, (message_id, conversation_id) in zip(inbounds, message_ids, strict=True):
        sender = senders[_key(inbound)]
        results.append(
            IngestResult(
                stored=message_id is not None,
                message_id=message_id,
                conversation_id=conversation_id,
                client_id=sender.client_id,
                identity_id=sender.identity_id,
            )
        )
    return results


def _key(inbound: InboundMessage) -> _SenderKey:
    return (inbound.channel.value, inbound.external_user_id)


async def _link_phone(session: AsyncSession, inbound: InboundMessage) -> None:
    assert inbound.phone is not None
    identity = await customers.get_or_create_identity(
        session, inbound.channel.value, inbound.external_user_id, display_name=inbound.display_name
    )
    await customers.link_phone(session, identity, inbound.phone)
    await session.flush()  # the set-based statements below read what the ORM just changed


# --- Senders: identity, client and conversation -------------------------------------------------------


async def _resolve_senders(
    session: AsyncSession, inbounds: Sequence[InboundMessage]
) -> dict[_SenderKey, _Sender]:
    keys = list(dict.fromkeys(_key(inbound) for inbound in inbounds))
    senders = await _load_senders(session, keys)
    incomplete = [key for key in keys if key not in senders or senders[key].conversation_id is None]
    if incomplete:
        missing = set(incomplete)
        await _create_senders(session, [i for i in inbounds if _key(i) in missing])
        senders.update(await _load_senders(session, incomplete))
    return senders


async def _create_senders(session: AsyncSession, inbounds: Sequence[InboundMessage]) -> None:
    """First contact: a client, an identity and a conversation for each sender that lacks them."""
    names: dict[_SenderKey, str | None] = {}
    for inbound in inbounds:
        if not names.get(_key(inbound)):
            names[_key(inbound)] = inbound.display_name
    await _create_identities(session, names)
    identities = await _load_senders(session, list(names))  # ours, or a concurrent writer's
    await _create_conversations(session, list(identities.items()))


async def _load_senders(session: AsyncSession, keys: list[_SenderKey]) -> dict[_SenderKey, _Sender]:
    query = (
        select(
            _identity.c.channel,
            _identity.c.external_id,
            _identity.c.id,
            _identity.c.client_id,
            _conversation.c.id,
        )
        .select_from(_identity)
        .outerjoin(_conversation, _conversation.c.identity_id == _identity.c.id)
        .where(tuple_(_identity.c.channel, _identity.c.external_id).in_(keys))
    )
    rows = await session.execute(query)
    return {(row[0], row[1]): _Sender(row[2], row[3], row[4]) for row in rows}


async def _create_identities(session: AsyncSession, names: dict[_SenderKey, str | None]) -> None:
    """First contact: one new client per new identity. Another process may create the same identity
    at the same moment; its row wins, and the client made here for it is removed again."""
    keys = list(names)
    new_clients = await session.execute(
        _client.insert().returning(_client.c.id, sort_by_parameter_order=True),
        [{"name": names[key]} for key in keys],
    )
    client_ids = list(new_clients.scalars())
    insert = insert_for(session)
    created = await session.execute(
        insert(_identity)
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        .returning(_identity.c.channel, _identity.c.external_id),
        [
            {
                "client_id": client_id,
                "channel": channel,
                "external_id": external_id,
                "display_name": names[(channel, external_id)],
            }
            for (channel, external_id), client_id in zip(keys, client_ids, strict=True)
        ],
    )
    won = {(row[0], row[1]) for row in created}
    orphans = [client_id for key, client_id in zip(keys, client_ids, strict=True) if key not in won]
    if orphans:
        await session.execute(delete(_client).where(_client.c.id.in_(orphans)))
    for key, client_id in zip(keys, client_ids, strict=True):
        if key in won:
            await customers.client_created(session, client_id, name=names[key], channel=key[0])


async def _create_conversations(session: AsyncSession, senders: list[tuple[_SenderKey, _Sender]]) -> None:
    rows = [
        {"client_id": sender.client_id, "identity_id": sender.identity_id, "channel": channel, "state": {}}
        for (channel, _external_id), sender in senders
        if sender.conversation_id is None
    ]
    if rows:  # another process may have just created them all
        insert = insert_for(session)
        await session.execute(
            insert(_conversation).on_conflict_do_nothing(index_elements=["identity_id"]), rows
        )


# --- Last inbound time (Meta's 24-hour window is counted from it) -------------------------------------

_touch_identity = (
    update(_identity)
    .where(_identity.c.id == bindparam("p_id"))
    .values(
        last_inbound_at=case(
            (
                (_identity.c.last_inbound_at.is_(None))
                | (_identity.c.last_inbound_at < bindparam("p_at", type_=UtcDateTime)),
                bindparam("p_at", type_=UtcDateTime),
            ),
            else_=_identity.c.last_inbound_at,
        ),
        unreachable_at=None,  # they just wrote to us: reachable again
        # A name learnt later (a profile lookup, a Telegram name) fills a blank, never overwrites.
        display_name=case(
            (_identity.c.display_name.is_(None), bindparam("p_name")),
            else_=_identity.c.display_name,
        ),
    )
)
_touch_conversation = (
    update(_conversation)
    .where(_conversation.c.id == bindparam("p_id"))
    .values(
        last_inbound_at=case(
            (
                (_conversation.c.last_inbound_at.is_(None))
                | (_conversation.c.last_inbound_at < bindparam("p_at", type_=UtcDateTime)),
                bindparam("p_at", type_=UtcDateTime),
            ),
            else_=_conversation.c.last_inbound_at,
        )
    )
)


async def _touch_inbound(
    session: AsyncSession, inbounds: Sequence[InboundMessage], senders: dict[_SenderKey, _Sender]
) -> None:
    now = utcnow()
    latest: dict[_SenderKey, tuple[datetime, str | None]] = {}
    for inbound in inbounds:
        at = inbound.sent_at or now
        previous_at, previous_name = latest.get(_key(inbound), (at, None))
        latest[_key(inbound)] = (max(at, previous_at), previous_name or inbound.display_name)
    await session.execute(
        _touch_identity,
        [
            {"p_id": senders[key].identity_id, "p_at": at, "p_name": name}
            for key, (at, name) in latest.items()
        ],
    )
    await session.execute(
        _touch_conversation,
        [{"p_id": senders[key].conversation_id, "p_at": at} for key, (at, _name) in latest.items()],
    )


# --- Messages -------------------------------------------------------------------------------------------


async def _insert_messages(
    session: AsyncSession, inbounds: Sequence[InboundMessage], senders: dict[_SenderKey, _Sender]
) -> list[tuple[int | None, int]]:
    """(message id or None for a redelivery, conversation id) per inbound, in input order."""
    now = utcnow()
    rows = [_message_row(inbound, senders[_key(inbound)], now) for inbound in inbounds]
    insert = insert_for(session)
    stored = await session.execute(
        insert(_message)
        .on_conflict_do_nothing(index_elements=["channel", "platform_message_id"])
        .returning(_message.c.channel, _message.c.platform_message_id, _message.c.id),
        rows,
    )
    ids = {(row[0], row[1]): row[2] for row in stored}
    result = []
    for inbound in inbounds:
        conversation_id = senders[_key(inbound)].conversation_id
        assert conversation_id is not None
        result.append((ids.get((inbound.channel.value, inbound.platform_message_id)), conversation_id))
    return result


def _attachments(inbound: InboundMessage) -> list[dict[str, str | None]]:
    return [
        {"kind": a.kind, "url": a.url, "file_id": a.file_id, "mime_type": a.mime_type}
        for a in inbound.attachments
    ]


def _message_row(inbound: InboundMessage, sender: _Sender, now: datetime) -> dict[str, Any]:
    return {
        "conversation_id": sender.conversation_id,
        "channel": inbound.channel.value,
        "direction": Direction.INBOUND.value,
        "author": Author.CUSTOMER.value,
        "platform_message_id": inbound.platform_message_id,
        "text": inbound.text,
        "payload": inbound.payload,
        "attachments": _attachments(inbound),
        "quick_replies": [],
        "image_urls": [],
        "delivery_status": DeliveryStatus.RECEIVED.value,
        "created_at": inbound.sent_at or now,
    }


# --- PostgreSQL: one statement ------------------------------------------------------------------------
# On PostgreSQL the whole of `_store_portable` is one statement: touch the known senders' identities
# and conversations, create first contacts (client, identity, conversation), insert the messages and
# queue their jobs. A webhook burst then costs one round trip per batch. The suite runs every ingest
# test through both. Inputs arrive as parallel arrays; `ord` keeps their order, so message and job ids
# follow it (one conversation's jobs run in id order).
#
# A first contact's client id is drawn from the sequence up front so the identity can name it; the
# client row is written only for identities actually inserted (ON CONFLICT: another process may create
# the same identity at the same moment), and foreign keys are checked at the end of the statement, when
# both rows exist. Two rare cases come back without a sender and go through the portable path: the
# loser of such a race, and an identity that has no conversation yet.

_STORE_MESSAGES = text(
    f"""
WITH input AS (
    SELECT * FROM unnest(
        CAST(:channels AS text[]), CAST(:external_ids AS text[]), CAST(:names AS text[]),
        CAST(:mids AS text[]), CAST(:texts AS text[]), CAST(:payloads AS text[]),
        CAST(:attachments AS text[]), CAST(:sent_at AS timestamptz[]), CAST(:answer AS boolean[])
    ) WITH ORDINALITY AS i(channel, external_id, name, mid, body, payload, attachments, sent_at, answer,
                           ord)
),
latest AS (
    SELECT channel, external_id, max(COALESCE(sent_at, :now)) AS at, max(name) AS name
    FROM input GROUP BY channel, external_id
),
known AS (
    UPDATE channel_identity AS ci
    SET last_inbound_at = GREATEST(ci.last_inbound_at, latest.at),
        unreachable_at = NULL,
        display_name = COALESCE(ci.display_name, latest.name),
        updated_at = :now
    FROM latest
    WHERE ci.channel = latest.channel AND ci.external_id = latest.external_id
    RETURNING ci.id, ci.client_id, ci.channel, ci.external_id, latest.at
),
known_chat AS (
    UPDATE conversation AS c
    SET last_inbound_at = GREATEST(c.last_inbound_at, known.at), updated_at = :now
    FROM known
    WHERE c.identity_id = known.id
    RETURNING c.id, c.identity_id
),
fresh AS MATERIALIZED (
    SELECT latest.*, nextval(pg_get_serial_sequence('client', 'id')) AS client_id
    FROM latest
    WHERE NOT EXISTS (
        SELECT 1 FROM channel_identity AS ci
        WHERE ci.channel = latest.channel AND ci.external_id = latest.external_id
    )
),
fresh_identity AS (
    INSERT INTO channel_identity (client_id, channel, external_id, display_name, last_inbound_at,
                                  created_at, updated_at)
    SELECT client_id, channel, external_id, name, at, :now, :now FROM fresh
    ON CONFLICT (channel, external_id) DO NOTHING
    RETURNING id, client_id, channel, external_id, display_name, last_inbound_at
),
fresh_client AS (
    INSERT INTO client (id, name, created_at, updated_at)
    SELECT client_id, display_name, :now, :now FROM fresh_identity
),
fresh_event AS (
    INSERT INTO domain_event (id, type, subject, occurred_at, data)
    SELECT CAST(gen_random_uuid() AS text), '{CLIENT_CREATED}', 'client:' || client_id, :now,
           jsonb_build_object('client', jsonb_build_object('id', client_id, 'name', display_name,
                                                           'email', NULL, 'phone', NULL),
                              'channel', channel)
    FROM fresh_identity
    RETURNING id
),
fresh_event_dispatch AS (
    INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, idempotency_key, created_at)
    SELECT '{DISPATCH_JOB}', jsonb_build_object('event_id', fresh_event.id), 'queued', :now, 0,
           {DEFAULT_MAX_ATTEMPTS}, '{DISPATCH_JOB}:' || fresh_event.id, :now
    FROM fresh_event
    WHERE CAST(:dispatch_client_created AS boolean)
),
fresh_chat AS (
    INSERT INTO conversation (client_id, identity_id, channel, state, last_inbound_at, created_at,
                              updated_at)
    SELECT client_id, id, channel, '{{}}', last_inbound_at, :now, :now FROM fresh_identity
    RETURNING id, identity_id
),
sender AS (
    SELECT known.id, known.client_id, known.channel, known.external_id, known_chat.id AS chat_id
    FROM known JOIN known_chat ON known_chat.identity_id = known.id
    UNION ALL
    SELECT fresh_identity.id, fresh_identity.client_id, fresh_identity.channel,
           fresh_identity.external_id, fresh_chat.id
    FROM fresh_identity JOIN fresh_chat ON fresh_chat.identity_id = fresh_identity.id
),
stored AS (
    INSERT INTO message (conversation_id, channel, direction, author, platform_message_id, text,
                         payload, attachments, quick_replies, image_urls, delivery_status, created_at)
    SELECT sender.chat_id, input.channel, '{Direction.INBOUND.value}', '{Author.CUSTOMER.value}',
           input.mid, input.body, input.payload, CAST(input.attachments AS jsonb), '[]', '[]',
           '{DeliveryStatus.RECEIVED.value}', COALESCE(input.sent_at, :now)
    FROM input
    JOIN sender ON sender.channel = input.channel AND sender.external_id = input.external_id
    ORDER BY input.ord
    ON CONFLICT (channel, platform_message_id) DO NOTHING
    RETURNING id, conversation_id, channel, platform_message_id
),
queued AS (
    INSERT INTO job (kind, payload, status, run_at, attempts, max_attempts, idempotency_key,
                     queue_key, created_at)
    SELECT '{PROCESS_JOB}',
           jsonb_build_object('message_id', stored.id, 'conversation_id', stored.conversation_id),
           'queued', :now, 0, {DEFAULT_MAX_ATTEMPTS}, 'process:' || stored.id,
           'conversation:' || stored.conversation_id, :now
    FROM stored
    JOIN input ON input.channel = stored.channel AND input.mid = stored.platform_message_id
    WHERE input.answer
    ORDER BY stored.id
    ON CONFLICT (idempotency_key) DO NOTHING
)
SELECT sender.id, sender.client_id, sender.chat_id, stored.id
FROM input
LEFT JOIN sender ON sender.channel = input.channel AND sender.external_id = input.external_id
LEFT JOIN stored ON stored.channel = input.channel AND stored.platform_message_id = input.mid
ORDER BY input.ord
"""
)


async def _store_postgresql(session: AsyncSession, inbounds: list[InboundMessage]) -> list[IngestResult]:
    results = await _store_in_one_statement(session, inbounds)
    unresolved = [index for index, result in enumerate(results) if result is None]
    if unresolved:
        resolved = await _store_unresolved(session, [inbounds[index] for index in unresolved])
        for index, result in zip(unresolved, resolved, strict=True):
            results[index] = result
    return cast(list[IngestResult], results)


async def _store_unresolved(session: AsyncSession, inbounds: list[InboundMessage]) -> list[IngestResult]:
    """The rare messages the one statement could not place (see above): complete their senders the
    portable way, then store them with the same statement."""
    await _create_senders(session, inbounds)
    results = await _store_in_one_statement(session, inbounds)
    if any(result is None for result in results):
        raise RuntimeError("ingest: a sender is still unknown after creating it")
    return cast(list[IngestResult], results)


async def _store_in_one_statement(
    executor: AsyncSession | AsyncConnection,
    inbounds: list[InboundMessage],
    subscribers: object | None = None,
) -> list[IngestResult | None]:
    """One statement; None for a message it could not place (a lost first-contact race, or an
    identity without a conversation)."""
    if isinstance(executor, AsyncSession):
        subscribers = executor.info.get(SUBSCRIBERS_KEY)
    wants_client_created = isinstance(subscribers, FollowUps) and bool(subscribers.for_type(CLIENT_CREATED))
    rows = await executor.execute(
        _STORE_MESSAGES,
        {
            "channels": [m.channel.value for m in inbounds],
            "external_ids": [m.external_user_id for m in inbounds],
            "names": [m.display_name for m in inbounds],
            "mids": [m.platform_message_id for m in inbounds],
            "texts": [m.text for m in inbounds],
            "payloads": [m.payload for m in inbounds],
            "attachments": [json.dumps(_attachments(m)) for m in inbounds],
            "sent_at": [m.sent_at for m in inbounds],
            "answer": [m.answer for m in inbounds],
            "now": utcnow(),
            # The process's integrations hear of first contacts through a dispatch job (the event row
            # is written by the statement itself; subscribers are Python, so they run in that job).
            "dispatch_client_created": wants_client_created,
        },
    )
    results: list[IngestResult | None] = []
    for identity_id, client_id, conversation_id, message_id in rows:
        if conversation_id is None:
            results.append(None)
            continue
        results.append(
            IngestResult(
                stored=message_id is not None,
                message_id=message_id,
                conversation_id=conversation_id,
                client_id=client_id,
                identity_id=identity_id,
            )
        )
    if isinstance(executor, AsyncSession) and any(r is not None and r.stored for r in results):
        executor.info[ENQUEUED_FLAG] = True
    return results


# --- Group commit ---------------------------------------------------------------------------------------


class GroupCommit:
    """Concurrent callers' messages stored in one transaction, each caller answered after the commit
    (core/db/group_commit.py: no timer, up to `max_messages` per commit, a failed batch retried
    request by request)."""

    def __init__(self, db: Database, *, max_messages: int = 500) -> None:
        self._db = db
        self._batches: BatchedWrites[Sequence[InboundMessage], list[IngestResult]] = BatchedWrites(
            self._write, name="ingest-group-commit", max_size=max_messages, size=len
        )

    async def ingest(self, inbounds: Sequence[InboundMessage]) -> list[IngestResult]:
        if not inbounds:
            return []
        # A platform holds its connection open until this returns: the workers yield to it meanwhile.
        with self._db.foreground.running():
            return await self._batches.submit(inbounds)

    async def _write(self, batch: Sequence[Sequence[InboundMessage]]) -> list[list[IngestResult]]:
        inbounds = [inbound for request in batch for inbound in request]
        if self._db.dialect == "postgresql" and not any(inbound.phone for inbound in inbounds):
            results = await self._write_postgresql(inbounds)
        else:
            async with self._db.transaction() as session:
                results = await ingest_many(session, inbounds)
        per_request, offset = [], 0
        for request in batch:
            per_request.append(results[offset : offset + len(request)])
            offset += len(request)
        return per_request

    async def _write_postgresql(self, inbounds: list[InboundMessage]) -> list[IngestResult]:
        """One autocommit statement (atomic on its own: no BEGIN/COMMIT round trips); the rare
        messages it could not place then in an ordinary transaction. Should that second step fail, the
        batch is retried request by request and the messages already committed come back as
        redeliveries."""
        unique, slots = _dedupe(inbounds)
        async with self._db.bookkeeping() as connection:
            found = await _store_in_one_statement(connection, unique, self._db.subscribers)
        if any(result is not None and result.stored for result in found):
            self._db.jobs_committed()
        unresolved = [index for index, result in enumerate(found) if result is None]
        if unresolved:
            async with self._db.transaction() as session:
                resolved = await _store_unresolved(session, [unique[index] for index in unresolved])
            for index, result in zip(unresolved, resolved, strict=True):
                found[index] = result
        return _expand(cast(list[IngestResult], found), slots)
