"""Twenty CRM: clients become People (found before created), appointments a Note and a Task on them
(or pets/appointments records where those objects exist), kept current; 429s wait; changes coalesce;
Twenty's own webhook updates a client, signed.

Against tests/fakes/twenty.py (Twenty's REST + metadata wire format), through `wire_integrations`, the
real queue and worker, on both databases.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from core.customers import save_contact
from core.db.models import AdminAlert, Client, TwentyRecord, utcnow
from core.integrations import twenty as twenty_module
from core.types import Channel
from tests.booking.conftest import make_customer
from tests.fakes.n8n import FakeN8n
from tests.fakes.twenty import FakeTwenty
from tests.integrations.conftest import (
    TWENTY_WEBHOOK_SECRET,
    Process,
    ProcessFactory,
    book_by_buttons,
    twenty_settings,
)
from tests.integrations.test_n8n import n8n_settings, verifies

SYNC = twenty_module.SYNC_JOB
START = datetime(2027, 3, 10, 9, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)


async def person_id_of(process: Process, client_id: int) -> str | None:
    async with process.db.transaction() as session:
        return (await session.get_one(Client, client_id)).twenty_person_id


async def request(process: Process, client_id: int, pet_ids: list[int]) -> int:
    async with process.db.transaction() as session:
        booking = await process.booking().request_booking(
            session,
            client_id=client_id,
            service_code="full_groom",
            pet_ids=pet_ids,
            start=START,
            source_channel=Channel.TELEGRAM,
        )
    return booking.id


async def test_a_booking_made_by_buttons_reaches_n8n_and_twenty(
    make_process: ProcessFactory, n8n: FakeN8n, twenty: FakeTwenty
) -> None:
    process = await make_process(**n8n_settings(n8n), **twenty_settings(twenty))
    assert process.wiring.enabled == ("n8n", "twenty")
    appointment_id = await book_by_buttons(process)
    await process.drain()

    # n8n: the request, signed.
    requested = [r for r in n8n.received if r.json()["type"] == "booking.requested"]
    assert len(requested) == 1 and verifies(requested[0].headers, requested[0].body)
    # Twenty: one Person, the appointment's Note and Task linked to it.
    [person] = twenty.records["people"].values()
    assert person["name"] == {"firstName": "Alice", "lastName": "Liddell"}
    [note] = twenty.records["notes"].values()
    [task] = twenty.records["tasks"].values()
    assert note["title"].startswith("Full groom for Biscuit, Wed 03 Mar") and note["title"].endswith(
        "(requested)"
    )
    assert f"Cheshire booking #{appointment_id}" in note["bodyV2"]["markdown"]
    assert task["status"] == "TODO" and task["dueAt"].startswith("2027-03-03T")
    assert [t["personId"] for t in twenty.records["noteTargets"].values()] == [person["id"]]
    assert [(t["taskId"], t["personId"]) for t in twenty.records["taskTargets"].values()] == [
        (task["id"], person["id"])
    ]
    client_id = (await process.jobs(SYNC))[0].payload["client_id"]
    assert await person_id_of(process, client_id) == person["id"]

    # Kept current: confirmed, then cancelled; the same Note and Task, patched.
    service = process.booking()
    async with process.db.transaction() as session:
        await service.approve(session, appointment_id=appointment_id)
    await process.drain()
    assert twenty.records["notes"][note["id"]]["title"].endswith("(confirmed)")
    async with process.db.transaction() as session:
        await service.cancel(session, appointment_id=appointment_id, client_id=None)
    await process.drain()
    assert len(twenty.records["notes"]) == 1 and len(twenty.records["tasks"]) == 1
    assert twenty.records["tasks"][task["id"]]["status"] == "DONE"
    assert twenty.records["notes"][note["id"]]["title"].endswith("(cancelled)")
    assert len(twenty.records["people"]) == 1
    assert [r.json()["type"] for r in n8n.received][-2:] == ["booking.confirmed", "booking.cancelled"]


async def test_a_person_is_found_by_email_or_phone_before_one_is_created(
    make_process: ProcessFactory, twenty: FakeTwenty
) -> None:
    twenty.records["people"]["p-ann"] = {
        "id": "p-ann",
        "name": {"firstName": "Ann", "lastName": "Old"},
        "emails": {"primaryEmail": "ann@example.com"},
        "phones": {"primaryPhoneNumber": "", "primaryPhoneCallingCode": ""},
    }
    twenty.records["people"]["p-bob"] = {
        "id": "p-bob",
        "name": {"firstName": "Bob", "lastName": ""},
        "emails": {"primaryEmail": ""},
        "phones": {"primaryPhoneNumber": "5551234567", "primaryPhoneCallingCode": "+1"},
    }
    process = await make_process(**twenty_settings(twenty))
    ann = await make_customer(process.db, "ann")
    bob = await make_customer(process.db, "bob")
    cat = await make_customer(process.db, "cat")
    async with process.db.transaction() as session:
        await save_contact(session, client_id=ann.client_id, email="ANN@example.com")
        await save_contact(session, client_id=bob.client_id, phone="+1 (555) 123-4567")
        await save_contact(session, client_id=cat.client_id, email="cat@example.com")
    await process.drain()

    assert await person_id_of(process, ann.client_id) == "p-ann"
    assert await person_id_of(process, bob.client_id) == "p-bob"
    cat_id = await person_id_of(process, cat.client_id)
    assert cat_id not in (None, "p-ann", "p-bob")
    assert len(twenty.records["people"]) == 3  # one created, for Cat only
    assert twenty.records["people"]["p-ann"]["name"]["lastName"] == ""  # patched to our record
    assert twenty.records["people"]["p-ann"]["emails"]["primaryEmail"] == "ann@example.com"
    creates = [c for c in twenty.calls if c == ("POST", "/rest/people")]
    assert len(creates) == 1


async def test_a_429_is_retried_after_its_wait_and_creates_nothing_twice(
    make_process: ProcessFactory, twenty: FakeTwenty
) -> None:
    process = await make_process(**twenty_settings(twenty))
    ann = await make_customer(process.db, "ann")
    await process.drain()  # the Person
    await request(process, ann.client_id, ann.pet_ids)
    twenty.rate_limit_next(retry_after="7", times=1)
    await process.drain()
    waiting = [j for j in await process.jobs(SYNC) if j.status == "queued"]
    assert len(waiting) == 1 and "429" in (waiting[0].last_error or "")
    assert utcnow() + timedelta(seconds=5) < waiting[0].run_at < utcnow() + timedelta(seconds=8)
    assert ("twenty", "rate_limited") in process.calls

    twenty.rate_limit_next(retry_after=None)  # no Retry-After: a minute (Twenty's window)
    await process.due_now()
    await process.drain()
    [waiting] = [j for j in await process.jobs(SYNC) if j.status == "queued"]
    assert waiting.run_at > utcnow() + timedelta(seconds=50)

    await process.due_now()
    await process.drain()
    assert all(j.status == "done" for j in await process.jobs(SYNC))
    assert len(twenty.records["people"]) == 1
    assert len(twenty.records["notes"]) == 1 and len(twenty.records["tasks"]) == 1


async def test_several_changes_while_a_sync_is_pending_are_one_write(
    make_process: ProcessFactory, twenty: FakeTwenty
) -> None:
    process = await make_process(**twenty_settings(twenty))
    ann = await make_customer(process.db, "ann")
    async with process.db.transaction() as session:
        await save_contact(session, client_id=ann.client_id, email="ann@example.com")
    async with process.db.transaction() as session:
        await save_contact(session, client_id=ann.client_id, phone="+15550001111")
    async with process.db.transaction() as session:
        await save_contact(session, client_id=ann.client_id, email="ann.l@example.com")
    assert len(await process.jobs(SYNC)) >= 3  # one per change (client.created among them on SQLite)
    await process.drain()

    assert twenty.writes("people") == [("POST", "/rest/people")]  # one write, the current state
    [person] = twenty.records["people"].values()
    assert person["emails"]["primaryEmail"] == "ann.l@example.com"
    assert person["phones"] == {"primaryPhoneNumber": "5550001111", "primaryPhoneCallingCode": "+1"}
    assert process.calls.count(("twenty", "coalesced")) == len(await process.jobs(SYNC)) - 1


async def test_the_custom_objects_are_used_where_the_workspace_has_them(
    make_process: ProcessFactory, twenty: FakeTwenty
) -> None:
    twenty.install_custom_objects()
    process = await make_process(**twenty_settings(twenty))
    ann = await make_customer(process.db, "ann")
    appointment_id = await request(process, ann.client_id, ann.pet_ids)
    await process.drain()
    assert twenty.records["notes"] == {} and twenty.records["tasks"] == {}
    [person] = twenty.records["people"].values()
    [pet] = twenty.records["pets"].values()
    [visit] = twenty.records["appointments"].values()
    assert (pet["name"], pet["ownerId"]) == ("Biscuit", person["id"])
    assert visit["clientId"] == person["id"] and visit["petId"] == pet["id"]
    assert visit["status"] == "requested" and visit["startsAt"] == START.isoformat()
    assert visit["price"]["currencyCode"] == "USD" and visit["price"]["amountMicros"] > 0

    async with process.db.transaction() as session:
        await process.booking().approve(session, appointment_id=appointment_id)
    await process.drain()
    assert [v["status"] for v in twenty.records["appointments"].values()] == ["confirmed"]
    assert len(twenty.records["pets"]) == 1
    async with process.db.transaction() as session:
        stored = (await session.execute(select(TwentyRecord.twenty_object))).scalars().all()
    assert sorted(stored) == ["appointments", "pets"]


async def test_setup_creates_the_custom_objects_once(
    twenty: FakeTwenty, make_process: ProcessFactory
) -> None:
    process = await make_process(**twenty_settings(twenty))
    client = twenty_module.TwentyClient(process.settings)
    try:
        done = await twenty_module.setup(client)
        assert "object pets" in done and "object appointments" in done
        assert "relation appointments.client -> people" in done
        fields = {f["name"] for f in twenty.objects["appointments"]["fields"]}
        assert {"startsAt", "endsAt", "status", "service", "price", "client", "pet"} <= fields
        assert {"breed", "species", "owner"} <= {f["name"] for f in twenty.objects["pets"]["fields"]}
        assert await twenty_module.setup(client) == []  # run again: nothing to do
    finally:
        await client.close()


async def test_a_refused_api_key_alerts_once_and_waits(
    make_process: ProcessFactory, twenty: FakeTwenty
) -> None:
    twenty.api_key = "rotated"
    process = await make_process(**twenty_settings(twenty))
    await make_customer(process.db, "ann")
    await make_customer(process.db, "bob")
    await process.drain()
    jobs = await process.jobs(SYNC)
    assert jobs and all(j.status == "queued" and j.run_at > utcnow() + timedelta(minutes=5) for j in jobs)
    async with process.db.transaction() as session:
        [alert] = (await session.execute(select(AdminAlert))).scalars().all()
    assert alert.fault_key == twenty_module.REFUSED_FAULT and "TWENTY_API_KEY" in alert.message
    assert len(await process.jobs("notify_admin")) == 1


# --- The two-way webhook --------------------------------------------------------------------------


def signed(body: bytes, *, secret: str = TWENTY_WEBHOOK_SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int((at if at is not None else time.time()) * 1000))  # Date.now(): milliseconds
    digest = hmac.new(secret.encode(), f"{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Twenty-Webhook-Timestamp": stamp,
        "X-Twenty-Webhook-Signature": digest,
        "X-Twenty-Webhook-Nonce": hashlib.sha1(body + stamp.encode()).hexdigest(),
    }


def person_updated(person_id: str, **record: Any) -> bytes:
    body = {
        "targetUrl": "https://salon.example/webhook/twenty",
        "eventName": "person.updated",
        "objectMetadata": {"id": "obj-1", "nameSingular": "person"},
        "workspaceId": "ws-1",
        "webhookId": "wh-1",
        "eventDate": "2027-03-01T14:00:00.000Z",
        "record": {"id": person_id, **record},
        "updatedFields": sorted(record),
    }
    return json.dumps(body).encode()


async def test_twenty_webhook_updates_the_client_when_signed(make_process: ProcessFactory) -> None:
    process = await make_process(twenty_webhook_secret=SecretStr(TWENTY_WEBHOOK_SECRET))
    ann = await make_customer(process.db, "ann")
    async with process.db.transaction() as session:
        (await session.get_one(Client, ann.client_id)).twenty_person_id = "p-1"
    body = person_updated(
        "p-1",
        name={"firstName": "Ann", "lastName": "Liddell"},
        emails={"primaryEmail": "ann@liddell.example"},
        phones={"primaryPhoneNumber": "5559876543", "primaryPhoneCallingCode": "+1"},
    )
    async with TestClient(TestServer(process.app)) as http:
        good = signed(body)
        response = await http.post("/webhook/twenty", data=body, headers=good)
        assert response.status == 200 and (await response.json())["status"] == "updated"
        again = await http.post("/webhook/twenty", data=body, headers=good)  # the same post twice
        assert (await again.json())["status"] == "duplicate"

        cases = {
            "wrong secret": signed(body, secret="not-it"),
            "stale": signed(body, at=time.time() - 301),
            "no signature": {k: v for k, v in good.items() if k != "X-Twenty-Webhook-Signature"},
            "no timestamp": {k: v for k, v in good.items() if k != "X-Twenty-Webhook-Timestamp"},
            "bad timestamp": {**good, "X-Twenty-Webhook-Timestamp": "soon"},
        }
        for case, headers in cases.items():
            refused = await http.post("/webhook/twenty", data=body, headers=headers)
            assert refused.status == 401, case
        tampered = body.replace(b"5559876543", b"5550000000")
        assert (await http.post("/webhook/twenty", data=tampered, headers=good)).status == 401

        seconds = signed(body, at=time.time())
        seconds["X-Twenty-Webhook-Timestamp"] = str(int(time.time()))  # a timestamp in seconds, re-signed
        seconds["X-Twenty-Webhook-Signature"] = hmac.new(
            TWENTY_WEBHOOK_SECRET.encode(),
            f"{seconds['X-Twenty-Webhook-Timestamp']}:".encode() + body,
            hashlib.sha256,
        ).hexdigest()
        seconds["X-Twenty-Webhook-Nonce"] = "other"
        assert (await http.post("/webhook/twenty", data=body, headers=seconds)).status == 200

        for bad in (b"{not json", b"[]", json.dumps({"eventName": "person.updated", "record": {}}).encode()):
            malformed = await http.post("/webhook/twenty", data=bad, headers=signed(bad))
            assert malformed.status == 400, bad
        huge = b"{" + b" " * (process.settings.max_body_bytes + 1) + b"}"
        assert (await http.post("/webhook/twenty", data=huge, headers=signed(huge))).status == 413
        other = person_updated("p-unknown", name={"firstName": "Zed", "lastName": ""})
        unknown = await http.post("/webhook/twenty", data=other, headers=signed(other))
        assert (unknown.status, (await unknown.json())["status"]) == (200, "unknown")

    async with process.db.transaction() as session:
        client = await session.get_one(Client, ann.client_id)
        assert (client.name, client.email, client.phone) == (
            "Ann Liddell",
            "ann@liddell.example",
            "+15559876543",
        )
