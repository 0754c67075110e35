"""Customers' names from the platforms whose webhooks carry only an id (Messenger PSID, Instagram IGSID).

Ingest creates such an identity nameless (in one statement, on the webhook's hot path), so Kimmie's
cards and booking notifications would show "client #12". The `fetch_profile` job asks the platform once
per identity and fills what is still empty:

- `queue_profile_lookup(session, conversation, display_name)` is called by the engine in the read
  transaction it opens for every turn anyway, with the identity's name from the query it makes anyway
  (no statement for a named identity): for an identity on a nameless channel without a name it queues
  the job under the idempotency key `profile:<identity id>`, so the job exists once per identity however
  many messages arrive (and a lookup that found nothing is not repeated).
- The job reads the identity, asks the channel's `ProfileSource` outside any transaction, then in a
  new one sets `channel_identity.display_name` and `client.name` only where they are still empty: a
  name Kimmie or the customer gave is never overwritten (conditional UPDATEs, so a name saved while
  the lookup ran wins too).

A missing name is not worth a dead job, nor an alert of its own: throttling and transient failures
retry later, an invalid token raises the channel's once-per-token alert (the one delivery raises) and
retries; an unknown person, a permission error or the last attempt finish the job quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.alerts import credentials_refused
from core.customers import client_updated
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Conversation
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, RetryLater, backoff_delay, enqueue
from core.jobs.worker import JobRegistry
from core.ports import (
    ChannelCredentialsError,
    DeliveryError,
    Profile,
    ProfileSource,
    RetryableDeliveryError,
)
from core.types import Channel, Recipient

log = logging.getLogger(__name__)

PROFILE_JOB = "fetch_profile"
# Platform facts kept as data: these webhooks identify a person by an opaque id only, and the platform
# tells the name on request.
NAMELESS_CHANNELS = frozenset({Channel.MESSENGER.value, Channel.INSTAGRAM.value})
PROFILE_MAX_ATTEMPTS = 5
CREDENTIALS_RETRY_S = 300.0


@job_payload(PROFILE_JOB)
class FetchProfilePayload(JobPayload):
    identity_id: int


def profile_job_key(identity_id: int) -> str:
    return f"profile:{identity_id}"


async def queue_profile_lookup(
    session: AsyncSession, conversation: Conversation, display_name: str | None
) -> None:
    """Queue the one `fetch_profile` job of this conversation's identity while it has no name
    (`display_name` is the identity's, read by the engine in the query it makes anyway)."""
    if conversation.channel not in NAMELESS_CHANNELS or display_name:
        return  # no statement at all for Telegram, the website chat, e-mail, or a known name
    await enqueue(
        session,
        PROFILE_JOB,
        FetchProfilePayload(identity_id=conversation.identity_id).dump(),
        idempotency_key=profile_job_key(conversation.identity_id),
        max_attempts=PROFILE_MAX_ATTEMPTS,
    )


@dataclass(frozen=True, slots=True)
class _Wanted:
    recipient: Recipient
    channel: str


class ProfileJobs:
    def __init__(self, *, db: Database, sources: Mapping[str, ProfileSource]) -> None:
        self.db = db
        self.sources = sources

    async def handle(self, job: ClaimedJob) -> None:
        identity_id = FetchProfilePayload.load(job.payload).identity_id
        wanted = await self._wanted(identity_id)
        if wanted is None:
            return
        source = self.sources.get(wanted.channel)
        if source is None:
            log.info("no profile source for %s: the name stays empty", wanted.channel)
            return
        final = job.attempts >= job.max_attempts
        try:
            profile = await source.profile(wanted.recipient)
        except RetryableDeliveryError as exc:
            if final:
                log.info("profile lookup gave up: %s", exc)
                return
            delay = exc.retry_after_s if exc.retry_after_s is not None else backoff_delay(job.attempts)
            raise RetryLater(delay, f"{wanted.channel}: {exc}") from None
        except ChannelCredentialsError as exc:
            await self._credentials_fault(source, wanted.channel, str(exc))
            if final:
                return
            raise RetryLater(CREDENTIALS_RETRY_S, f"{wanted.channel}: credentials invalid") from None
        except DeliveryError as exc:
            # Unknown person, no permission (codes 100, 230, ...): the name is simply not to be had.
            log.info("no profile for this %s identity: %s", wanted.channel, exc)
            return
        if profile is not None:
            await self._fill(identity_id, profile)

    async def _wanted(self, identity_id: int) -> _Wanted | None:
        """The identity to look up, or None when it is gone or already has a name and so has its client."""
        async with self.db.transaction() as session:
            found = (
                await session.execute(
                    select(ChannelIdentity, Client.name)
                    .join(Client, Client.id == ChannelIdentity.client_id)
                    .where(ChannelIdentity.id == identity_id)
                )
            ).one_or_none()
        if found is None:
            return None
        identity, client_name = found
        if identity.display_name and client_name:
            return None  # a re-run after the names were filled (or given): nothing to ask for
        try:
            channel = Channel(identity.channel)
        except ValueError:
            return None
        recipient = Recipient(channel=channel, external_id=identity.external_id, identity_id=identity.id)
        return _Wanted(recipient, identity.channel)

    async def _fill(self, identity_id: int, profile: Profile) -> None:
        shown = profile.name or (f"@{profile.handle}" if profile.handle else None)
        async with self.db.transaction() as session:
            if shown:
                await session.execute(
                    update(ChannelIdentity)
                    .where(ChannelIdentity.id == identity_id, _empty(ChannelIdentity.display_name))
                    .values(display_name=shown[:200])
                )
            # A handle is not a name to greet someone by: the client gets the person's name only.
            if profile.name:
                client_id = select(ChannelIdentity.client_id).where(ChannelIdentity.id == identity_id)
                named = await session.execute(
                    update(Client)
                    .where(Client.id == client_id.scalar_subquery(), _empty(Client.name))
                    .values(name=profile.name[:200])
                    .returning(Client.id)
                )
                named_id = named.scalar_one_or_none()
                if named_id is not None:  # integrations (CRM) learn the person's name
                    await client_updated(session, await session.get_one(Client, named_id), ["name"])

    async def _credentials_fault(self, source: ProfileSource, channel: str, error: str) -> None:
        # The same alert delivery raises: Kimmie hears of a refused token once, whoever met it.
        async with self.db.transaction() as session:
            await credentials_refused(session, channel, source.credentials_fault_key, error)


def _empty(column: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
    return or_(column.is_(None), column == "")


def register_jobs(
    registry: JobRegistry, *, db: Database, sources: Mapping[str, ProfileSource]
) -> ProfileJobs:
    """Register the `fetch_profile` handler; `sources` maps a channel value to its profile source."""
    jobs = ProfileJobs(db=db, sources=sources)
    registry.register(PROFILE_JOB, jobs.handle)
    return jobs
