"""Customers' names from Meta: a new Messenger/Instagram identity gets one `fetch_profile` job, which asks
the fake Graph API for the person's profile and fills the names still empty; what Kimmie or the customer
gave is never overwritten, and an unknown person or a refused permission finishes the job quietly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.meta.sender import MetaSenders
from core.alerts import NOTIFY_ADMIN_JOB
from core.conversation.ingest import PROCESS_JOB, ingest
from core.db.database import Database
from core.db.models import AdminAlert, ChannelIdentity, Client, Conversation, Job
from core.jobs.queue import ClaimedJob, RetryLater
from core.jobs.worker import JobRegistry, Worker
from core.profiles import PROFILE_JOB, ProfileJobs, queue_profile_lookup
from core.profiles import register_jobs as register_profile_jobs
from core.types import Channel, InboundMessage
from tests.channels.conftest import ServiceT, fixture_bytes, make_settings
from tests.channels.test_end_to_end import post, settled
from tests.fakes.graph_api import FakeGraphAPI

IGSID = "1122334455667788"  # the sender of the instagram_text fixture


@pytest.fixture
async def meta(graph: FakeGraphAPI, database_url: str) -> AsyncIterator[MetaSenders]:
    base = await graph.start()
    senders = MetaSenders(make_settings(database_url, meta_graph_api_base=base))
    await senders.start()
    yield senders
    await senders.close()


@pytest.fixture
def registry(db: Database, meta: MetaSenders) -> JobRegistry:
    registry = JobRegistry()
    register_profile_jobs(registry, db=db, sources=meta.senders)

    async def engine_stand_in(job: ClaimedJob) -> None:
        del job  # the turn itself is not under test; `first_message` queued the lookup as it would

    registry.register(PROCESS_JOB, engine_stand_in)
    return registry


async def run_jobs(db: Database, registry: JobRegistry) -> None:
    """Run what is due until the queue is idle."""
    worker = Worker(db, registry)
    while await worker.run_once():
        pass


async def first_message(db: Database, channel: Channel, external_id: str) -> int:
    """A new customer writes; the engine's read step queues the lookup. Returns the identity id."""
    async with db.transaction() as session:
        result = await ingest(
            session,
            InboundMessage(
                channel=channel, external_user_id=external_id, platform_message_id=uuid.uuid4().hex, text="hi"
            ),
        )
        conversation = await session.get_one(Conversation, result.conversation_id)
        await lookup(session, conversation)
    return result.identity_id


async def lookup(session: AsyncSession, conversation: Conversation) -> None:
    """What the engine does on every turn: the identity's name comes from its own first query."""
    identity = await session.get_one(ChannelIdentity, conversation.identity_id)
    await queue_profile_lookup(session, conversation, identity.display_name)


async def names(db: Database, identity_id: int) -> tuple[str | None, str | None]:
    """(the identity's display name, its client's name): what Kimmie's cards show."""
    async with db.transaction() as session:
        identity = await session.get_one(ChannelIdentity, identity_id)
        client = await session.get_one(Client, identity.client_id)
        return identity.display_name, client.name


async def profile_jobs(db: Database) -> list[Job]:
    async with db.transaction() as session:
        return list((await session.execute(select(Job).where(Job.kind == PROFILE_JOB))).scalars())


def claimed(job: Job, *, attempts: int = 1) -> ClaimedJob:
    return ClaimedJob(job.id, job.kind, job.payload, attempts, job.max_attempts, job.idempotency_key)


async def test_new_instagram_customer_gets_their_name(
    service: ServiceT, db: Database, graph: FakeGraphAPI
) -> None:
    graph.profiles[IGSID] = {"name": "Alice Liddell", "username": "alice.l"}
    base, _rt, stand_in = service
    assert not stand_in  # the conversation engine's read step queues the lookup
    assert await post(base, "/webhook/instagram", fixture_bytes("instagram_text", fresh=True)) == 200
    await settled(db, graph)
    async with db.transaction() as session:
        identity = (
            await session.execute(select(ChannelIdentity).where(ChannelIdentity.external_id == IGSID))
        ).scalar_one()
    assert await names(db, identity.id) == ("Alice Liddell", "Alice Liddell")
    # Asked once, with the Instagram token in the Authorization header, never in the URL.
    assert [(q["user_id"], q["fields"], q["token"]) for q in graph.profile_lookups] == [
        (IGSID, ["name", "username"], "IG_TOKEN")
    ]
    assert graph.profile_lookups[0]["query"] == {"fields": "name,username"}
    assert [job.status for job in await profile_jobs(db)] == ["done"]


async def test_messenger_first_and_last_name(
    db: Database, registry: JobRegistry, graph: FakeGraphAPI
) -> None:
    graph.profiles["psid-7"] = {"first_name": "Mad", "last_name": "Hatter"}
    identity_id = await first_message(db, Channel.MESSENGER, "psid-7")
    await run_jobs(db, registry)
    assert await names(db, identity_id) == ("Mad Hatter", "Mad Hatter")
    assert [(q["fields"], q["token"]) for q in graph.profile_lookups] == [
        (["first_name", "last_name"], "PAGE_TOKEN")
    ]


async def test_one_job_per_identity(db: Database, registry: JobRegistry, graph: FakeGraphAPI) -> None:
    identity_id = await first_message(db, Channel.INSTAGRAM, "igsid-quiet")
    for _ in range(3):  # more messages from the same person: no second job
        async with db.transaction() as session:
            conversation = (
                await session.execute(select(Conversation).where(Conversation.identity_id == identity_id))
            ).scalar_one()
            await lookup(session, conversation)
    assert [job.idempotency_key for job in await profile_jobs(db)] == [f"profile:{identity_id}"]


async def test_named_or_other_channels_are_not_looked_up(db: Database) -> None:
    await first_message(db, Channel.TELEGRAM, "4242")
    await first_message(db, Channel.WEB, "a" * 32)
    async with db.transaction() as session:
        result = await ingest(
            session,
            InboundMessage(
                channel=Channel.MESSENGER,
                external_user_id="psid-named",
                platform_message_id=uuid.uuid4().hex,
                text="hi",
                display_name="Known Already",
            ),
        )
        await lookup(session, await session.get_one(Conversation, result.conversation_id))
    assert await profile_jobs(db) == []


async def test_a_name_kimmie_gave_is_not_overwritten(
    db: Database, registry: JobRegistry, graph: FakeGraphAPI
) -> None:
    graph.profiles["igsid-named"] = {"name": "Alice Liddell", "username": "alice.l"}
    identity_id = await first_message(db, Channel.INSTAGRAM, "igsid-named")
    async with db.transaction() as session:  # Kimmie named the client before the job ran
        identity = await session.get_one(ChannelIdentity, identity_id)
        (await session.get_one(Client, identity.client_id)).name = "Alice from the bakery"
    await run_jobs(db, registry)
    assert await names(db, identity_id) == ("Alice Liddell", "Alice from the bakery")


async def test_only_a_username_names_the_identity_not_the_client(
    db: Database, registry: JobRegistry, graph: FakeGraphAPI
) -> None:
    graph.profiles["igsid-handle"] = {"username": "cheshire.fan"}
    identity_id = await first_message(db, Channel.INSTAGRAM, "igsid-handle")
    await run_jobs(db, registry)
    assert await names(db, identity_id) == ("@cheshire.fan", None)


@pytest.mark.parametrize(("code", "subcode"), [(100, 33), (230, None), (10, 2018218)])
async def test_unknown_person_or_no_permission_finishes_without_retry(
    db: Database, registry: JobRegistry, graph: FakeGraphAPI, code: int, subcode: int | None
) -> None:
    graph.fail_profile_next(code, subcode)
    identity_id = await first_message(db, Channel.INSTAGRAM, "igsid-private")
    await run_jobs(db, registry)
    assert [(job.status, job.attempts, job.last_error) for job in await profile_jobs(db)] == [
        ("done", 1, None)
    ]
    assert await names(db, identity_id) == (None, None)
    assert len(graph.profile_lookups) == 1
    async with db.transaction() as session:  # no alert for a name we cannot have
        assert (await session.execute(select(Job).where(Job.kind == NOTIFY_ADMIN_JOB))).first() is None


async def test_throttled_retries_later_and_the_last_attempt_finishes(
    db: Database, meta: MetaSenders, graph: FakeGraphAPI
) -> None:
    jobs = ProfileJobs(db=db, sources=meta.senders)
    identity_id = await first_message(db, Channel.MESSENGER, "psid-busy")
    (job,) = await profile_jobs(db)
    graph.fail_profile_next(4, status=429, times=2)
    with pytest.raises(RetryLater):
        await jobs.handle(claimed(job, attempts=1))
    await jobs.handle(claimed(job, attempts=job.max_attempts))  # no dead job for a name
    assert await names(db, identity_id) == (None, None)


async def test_refused_token_alerts_once_and_retries(
    db: Database, meta: MetaSenders, graph: FakeGraphAPI
) -> None:
    jobs = ProfileJobs(db=db, sources=meta.senders)
    await first_message(db, Channel.INSTAGRAM, "igsid-token")
    (job,) = await profile_jobs(db)
    graph.fail_profile_next(190, 460, times=2)
    for attempt in (1, 2):
        with pytest.raises(RetryLater):
            await jobs.handle(claimed(job, attempts=attempt))
    async with db.transaction() as session:
        alerts = list((await session.execute(select(AdminAlert))).scalars())
        notes = list((await session.execute(select(Job).where(Job.kind == NOTIFY_ADMIN_JOB))).scalars())
    assert [(a.fault_key, a.occurrences) for a in alerts] == [("meta:instagram_token", 2)]
    assert len(notes) == 1  # Kimmie hears of it once
