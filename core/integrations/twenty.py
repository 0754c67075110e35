"""Twenty CRM: clients as People, each appointment as a Note and a Task on its Person (or, where the
workspace has the `pets` and `appointments` custom objects, as records of those), kept current as the
booking changes. The only module importing httpx for Twenty; imported only when TWENTY_BASE_URL and
TWENTY_API_KEY are set.

Why it is built this way:
- Twenty has no idempotency key, so nothing is created blind: a Person is looked up by e-mail or phone
  before one is created, and every id Twenty gives back is stored at once (`client.twenty_person_id`,
  `twenty_record`), each in its own small transaction, so a retried job patches instead of creating.
- Twenty allows about 100 calls a minute. A 429 becomes `RetryLater(Retry-After)`; and changes are
  coalesced: each event queues a `twenty_sync` job for its record (a client, or an appointment), all
  of one client's jobs share a queue key (they run one at a time, in order), and a job that sees a later
  queued job for the same record skips: that one reads the current state when it runs and writes it
  once. Three edits while a sync waits cost one write, not three.
- The job reads current state when it runs, never the event's copy: a late retry cannot write an
  older status over a newer one.

`python -m core.integrations.twenty setup` creates the custom objects through the metadata API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.alerts import raise_alert, resolve_alert
from core.db.database import Database, insert_for
from core.db.models import Appointment, Client, Job, Pet, Service, TwentyRecord, utcnow
from core.events import Event, FollowUp, FollowUps
from core.integrations import OnCall
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater, enqueue
from core.jobs.worker import JobRegistry
from core.settings import Settings, SettingsError

log = logging.getLogger(__name__)

TWENTY = "twenty"
SYNC_JOB = "twenty_sync"
SYNC_MAX_ATTEMPTS = 200
SLOW_RETRY_S = 600.0
DEFAULT_RATE_WAIT_S = 60.0  # a 429 without Retry-After: Twenty's window is a minute
REFUSED_FAULT = "twenty:refused"
METADATA_TTL_S = 300.0
CUSTOM_OBJECTS = ("pets", "appointments")
# Which Twenty task status an appointment's status leaves its Task in.
OPEN_STATUSES = frozenset({"requested", "confirmed"})


@job_payload(SYNC_JOB)
class SyncPayload(JobPayload):
    client_id: int
    appointment_id: int | None = None


# --- The subscriber -------------------------------------------------------------------------------


def _ids(event: Event) -> tuple[int | None, int | None]:
    """(client id, appointment id) an event is about, whatever its type (payment events included)."""
    data = event.data
    booking = _mapping(data.get("booking"))
    client = _mapping(data.get("client"))
    appointment_id = booking.get("id") or data.get("appointment_id")
    client_id = booking.get("client_id") or client.get("id") or data.get("client_id")
    return _int(client_id), _int(appointment_id)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def follow_up() -> FollowUp:
    async def start(session: AsyncSession, event: Event) -> None:
        client_id, appointment_id = _ids(event)
        if client_id is None and appointment_id is not None:
            appt = await session.get(Appointment, appointment_id)
            client_id = appt.client_id if appt is not None else None
        if client_id is None:
            return
        await enqueue(
            session,
            SYNC_JOB,
            SyncPayload(client_id=client_id, appointment_id=appointment_id).dump(),
            queue_key=f"{SYNC_JOB}:client:{client_id}",
            max_attempts=SYNC_MAX_ATTEMPTS,
        )

    return FollowUp(SYNC_JOB, start, "Twenty CRM sync")


def subscribe(subscribers: FollowUps) -> None:
    row = follow_up()
    for prefix in ("booking.*", "client.*", "payment.*"):
        subscribers.subscribe(prefix, row)


# --- The wire -------------------------------------------------------------------------------------


class RateLimitedError(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"Twenty 429, retry in {wait_s:.0f}s")
        self.wait_s = wait_s


class TwentyError(Exception):
    def __init__(self, status: int, method: str, path: str, detail: str) -> None:
        super().__init__(f"Twenty {method} {path} answered {status}: {detail[:200]}")
        self.status = status


def _singular(plural: str) -> str:
    known = {"people": "person", "companies": "company", "opportunities": "opportunity"}
    return known.get(plural, plural[:-1] if plural.endswith("s") else plural)


def _record(body: Any) -> dict[str, Any]:
    """The record of a create/update answer: `{"data": {"createPerson": {...}}}` (any wrapper name)."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        if isinstance(data.get("id"), str):
            return data
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                return value
    raise TwentyError(200, "?", "?", "no record id in the answer")


def _records(body: Any, plural: str) -> list[dict[str, Any]]:
    data = body.get("data") if isinstance(body, dict) else None
    rows = data.get(plural) if isinstance(data, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def quoted(value: str) -> str:
    return json.dumps(value)  # Twenty's filter strings are double-quoted, with JSON escapes


class TwentyClient:
    """httpx against one Twenty workspace (Authorization: Bearer TWENTY_API_KEY)."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if settings.twenty_base_url is None or settings.twenty_api_key is None:
            raise SettingsError("TWENTY_BASE_URL and TWENTY_API_KEY are needed for Twenty CRM")
        self.rest = f"{settings.twenty_base_url}{settings.twenty_rest_prefix}"
        self.metadata = f"{settings.twenty_base_url}/rest/metadata"
        self._http = httpx.AsyncClient(
            timeout=settings.twenty_timeout_s,
            transport=transport,
            headers={
                "Authorization": f"Bearer {settings.twenty_api_key.get_secret_value()}",
                "Accept": "application/json",
            },
        )
        self._objects: tuple[float, dict[str, dict[str, Any]]] | None = None

    async def call(
        self,
        method: str,
        url: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        response = await self._http.request(method, url, json=body, params=params)
        if response.status_code == 429:
            raise RateLimitedError(_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 400:
            raise TwentyError(response.status_code, method, url.rsplit("/", 2)[-1], response.text)
        return response.json() if response.content else {}

    async def find(self, plural: str, filter_: str) -> list[dict[str, Any]]:
        body = await self.call("GET", f"{self.rest}/{plural}", params={"filter": filter_, "limit": 5})
        return _records(body, plural)

    async def create(self, plural: str, values: Mapping[str, Any]) -> str:
        return str(_record(await self.call("POST", f"{self.rest}/{plural}", body=values))["id"])

    async def update(self, plural: str, record_id: str, values: Mapping[str, Any]) -> None:
        await self.call("PATCH", f"{self.rest}/{plural}/{record_id}", body=values)

    async def objects(self, *, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """The workspace's objects by plural name (cached a few minutes: the data model rarely moves)."""
        if not fresh and self._objects is not None and time.monotonic() - self._objects[0] < METADATA_TTL_S:
            return self._objects[1]
        body = await self.call("GET", f"{self.metadata}/objects", params={"limit": 1000})
        found = {str(o.get("namePlural")): o for o in _records(body, "objects")}
        self._objects = (time.monotonic(), found)
        return found

    async def close(self) -> None:
        await self._http.aclose()


def _retry_after(value: str | None) -> float:
    try:
        return max(1.0, float(value)) if value else DEFAULT_RATE_WAIT_S
    except ValueError:
        return DEFAULT_RATE_WAIT_S


# --- What is written ------------------------------------------------------------------------------


def person_values(client: Client) -> dict[str, Any]:
    first, _, last = (client.name or "").strip().partition(" ")
    values: dict[str, Any] = {"name": {"firstName": first, "lastName": last.strip()}}
    if client.email:
        values["emails"] = {"primaryEmail": client.email}
    if client.phone:
        code, number = split_phone(client.phone)
        values["phones"] = {"primaryPhoneNumber": number, "primaryPhoneCallingCode": code}
    return values


def split_phone(phone: str) -> tuple[str, str]:
    """("+1", "5551234567") for a stored "+15551234567"; ("", digits) when the country is unknown."""
    if phone.startswith("+1") and len(phone) == 12:
        return "+1", phone[2:]
    return "", phone.lstrip("+")


def person_filter(client: Client) -> str | None:
    clauses = []
    if client.email:
        clauses.append(f"emails.primaryEmail[eq]:{quoted(client.email)}")
    if client.phone:
        clauses.append(f"phones.primaryPhoneNumber[eq]:{quoted(split_phone(client.phone)[1])}")
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else f"or({','.join(clauses)})"


@dataclass(frozen=True, slots=True)
class Visit:
    """An appointment as the CRM shows it, read when the job runs."""

    id: int
    status: str
    service: str
    start: datetime
    end: datetime
    pets: tuple[Pet, ...]
    price_min_cents: int | None
    price_max_cents: int | None
    tz: Any

    @property
    def pet_names(self) -> str:
        return ", ".join(p.name for p in self.pets) or "a pet"

    @property
    def title(self) -> str:
        local = self.start.astimezone(self.tz)
        return f"{self.service} for {self.pet_names}, {local:%a %d %b %H:%M} ({self.status})"

    def markdown(self) -> str:
        local = self.start.astimezone(self.tz)
        price = _price(self.price_min_cents, self.price_max_cents)
        return (
            f"**{self.service}** for {self.pet_names}\n\n"
            f"- When: {local:%A %d %B %Y, %H:%M} ({self.tz})\n"
            f"- Status: {self.status}\n"
            f"- Price: {price}\n"
            f"- Cheshire booking #{self.id}\n"
        )


def _price(low: int | None, high: int | None) -> str:
    if low is None:
        return "to be quoted"
    return f"${low / 100:.2f}" if high in (None, low) else f"${low / 100:.2f}-${(high or 0) / 100:.2f}"


# --- The sync job ---------------------------------------------------------------------------------


class TwentySync:
    def __init__(self, *, db: Database, client: TwentyClient, settings: Settings, on_call: OnCall) -> None:
        self.db = db
        self.twenty = client
        self.tz = settings.tz
        self.on_call = on_call

    async def handle(self, job: ClaimedJob) -> None:
        payload = SyncPayload.load(job.payload)
        async with self.db.transaction() as session:
            if await self._superseded(session, job, payload):
                self.on_call(TWENTY, "coalesced")
                return
        try:
            person_id = await self.person(payload.client_id, patch=payload.appointment_id is None)
            if person_id is not None and payload.appointment_id is not None:
                await self.appointment(payload.appointment_id, person_id)
        except RateLimitedError as exc:
            self.on_call(TWENTY, "rate_limited")
            raise RetryLater(exc.wait_s, str(exc)) from None
        except httpx.TransportError as exc:
            self.on_call(TWENTY, "retry")
            raise RuntimeError(f"Twenty unreachable: {type(exc).__name__}") from None
        except TwentyError as exc:
            await self._failed(exc)
        async with self.db.transaction() as session:
            await resolve_alert(session, REFUSED_FAULT)
        self.on_call(TWENTY, "delivered")

    async def _failed(self, exc: TwentyError) -> NoReturn:
        if exc.status in (401, 403):
            self.on_call(TWENTY, "refused")
            async with self.db.transaction() as session:
                await raise_alert(
                    session,
                    REFUSED_FAULT,
                    f"Twenty CRM refused Cheshire's API key ({exc.status}). CRM updates wait and are "
                    "retried every 10 min: renew TWENTY_API_KEY and restart Cheshire.",
                )
            raise RetryLater(SLOW_RETRY_S, str(exc)) from None
        if exc.status >= 500:
            self.on_call(TWENTY, "retry")
            raise RuntimeError(str(exc)) from None
        self.on_call(TWENTY, "rejected")
        raise PermanentJobError(str(exc)) from None

    async def _superseded(self, session: AsyncSession, job: ClaimedJob, payload: SyncPayload) -> bool:
        """A later queued job for the same record will write its current state: this one need not."""
        later = await session.execute(
            select(Job.payload).where(
                Job.queue_key == f"{SYNC_JOB}:client:{payload.client_id}",
                Job.status == "queued",
                Job.id > job.id,
            )
        )
        return any(p.get("appointment_id") == payload.appointment_id for p in later.scalars())

    # --- People ---
    async def person(self, client_id: int, *, patch: bool) -> str | None:
        async with self.db.transaction() as session:
            client = await session.get(Client, client_id)
            if client is None:
                return None
            values, known, lookup = person_values(client), client.twenty_person_id, person_filter(client)
        if known is not None:
            if not patch:
                return known
            try:
                await self.twenty.update("people", known, values)
                return known
            except TwentyError as exc:
                if exc.status != 404:
                    raise
                # Deleted in Twenty: found again or made anew below.
        person_id = None
        if lookup is not None:
            found = await self.twenty.find("people", lookup)
            person_id = _best_match(found, values)
        if person_id is not None:
            await self.twenty.update("people", person_id, values)
        else:
            person_id = await self.twenty.create("people", values)
        async with self.db.transaction() as session:
            stored = await session.get_one(Client, client_id)
            stored.twenty_person_id = person_id
        return person_id

    # --- Appointments ---
    async def appointment(self, appointment_id: int, person_id: str) -> None:
        async with self.db.transaction() as session:
            visit = await self._visit(session, appointment_id)
            if visit is None:
                return
            stored = await _stored(session, "appointment", appointment_id)
            pets_stored = {p.id: await _stored(session, "pet", p.id) for p in visit.pets}
        objects = await self.twenty.objects()
        if all(name in objects for name in CUSTOM_OBJECTS):
            await self._custom(visit, person_id, stored, pets_stored)
        else:
            await self._note_and_task(visit, person_id, stored)

    async def _note_and_task(self, visit: Visit, person_id: str, stored: dict[str, str]) -> None:
        body = {"markdown": visit.markdown()}  # Twenty renders its rich text from the markdown
        note = {"title": visit.title, "bodyV2": body}
        task = {
            "title": visit.title,
            "bodyV2": body,
            "dueAt": visit.start.isoformat(),
            "status": "TODO" if visit.status in OPEN_STATUSES else "DONE",
        }
        await self._upsert(
            "appointment", visit.id, "notes", stored, note, ("noteTargets", "noteId", person_id)
        )
        await self._upsert(
            "appointment", visit.id, "tasks", stored, task, ("taskTargets", "taskId", person_id)
        )

    async def _custom(
        self, visit: Visit, person_id: str, stored: dict[str, str], pets: dict[int, dict[str, str]]
    ) -> None:
        pet_ids: list[str] = []
        for pet in visit.pets:
            pet_values = {
                "name": pet.name,
                "breed": pet.breed or "",
                "species": pet.species,
                "ownerId": person_id,
            }
            pet_ids.append(await self._upsert("pet", pet.id, "pets", pets[pet.id], pet_values, None))
        values: dict[str, Any] = {
            "name": visit.title,
            "startsAt": visit.start.isoformat(),
            "endsAt": visit.end.isoformat(),
            "status": visit.status,
            "service": visit.service,
            "clientId": person_id,
            "petId": pet_ids[0] if pet_ids else None,
        }
        if visit.price_min_cents is not None:
            values["price"] = {"amountMicros": visit.price_min_cents * 10_000, "currencyCode": "USD"}
        await self._upsert("appointment", visit.id, "appointments", stored, values, None)

    async def _upsert(
        self,
        kind: str,
        local_id: int,
        plural: str,
        stored: Mapping[str, str],
        values: Mapping[str, Any],
        target: tuple[str, str, str] | None,
    ) -> str:
        """Patch the record we made before, or make it (and link it to the Person), storing its id at once."""
        known = stored.get(plural)
        if known is not None:
            try:
                await self.twenty.update(plural, known, values)
                return known
            except TwentyError as exc:
                if exc.status != 404:
                    raise
        record_id = await self.twenty.create(plural, values)
        async with self.db.transaction() as session:
            await _store(session, kind, local_id, plural, record_id)
        if target is not None:
            link_plural, field, person_id = target
            await self.twenty.create(link_plural, {field: record_id, "personId": person_id})
        return record_id

    async def _visit(self, session: AsyncSession, appointment_id: int) -> Visit | None:
        row = (
            await session.execute(
                select(Appointment, Service.name)
                .join(Service, Service.id == Appointment.service_id)
                .where(Appointment.id == appointment_id)
            )
        ).one_or_none()
        if row is None:
            return None
        appt, service = row
        pets = (
            await session.execute(
                select(Pet).where(Pet.id.in_(_appointment_pets(appointment_id))).order_by(Pet.id)
            )
        ).scalars()
        return Visit(
            appt.id,
            appt.status,
            service,
            appt.start_at,
            appt.end_at,
            tuple(pets),
            appt.price_min_cents,
            appt.price_max_cents,
            self.tz,
        )


def _appointment_pets(appointment_id: int) -> Any:
    from core.db.models import AppointmentPet

    return select(AppointmentPet.pet_id).where(AppointmentPet.appointment_id == appointment_id)


def _best_match(found: Sequence[dict[str, Any]], values: Mapping[str, Any]) -> str | None:
    """The Person with our e-mail, else the first with our phone."""
    email = (values.get("emails") or {}).get("primaryEmail")
    for person in found:
        if email and str((person.get("emails") or {}).get("primaryEmail", "")).lower() == email.lower():
            return str(person["id"])
    return str(found[0]["id"]) if found else None


async def _stored(session: AsyncSession, kind: str, local_id: int) -> dict[str, str]:
    rows = await session.execute(
        select(TwentyRecord.twenty_object, TwentyRecord.twenty_id).where(
            TwentyRecord.local_kind == kind, TwentyRecord.local_id == local_id
        )
    )
    return {obj: rid for obj, rid in rows.all()}


async def _store(session: AsyncSession, kind: str, local_id: int, plural: str, record_id: str) -> None:
    insert = insert_for(session)
    statement = insert(TwentyRecord).values(
        local_kind=kind, local_id=local_id, twenty_object=plural, twenty_id=record_id, updated_at=utcnow()
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["local_kind", "local_id", "twenty_object"],
            set_={"twenty_id": record_id, "updated_at": utcnow()},
        )
    )


def register_jobs(
    registry: JobRegistry, *, db: Database, client: TwentyClient, settings: Settings, on_call: OnCall
) -> None:
    registry.register(SYNC_JOB, TwentySync(db=db, client=client, settings=settings, on_call=on_call).handle)


# --- Setup: the custom objects -------------------------------------------------------------------

# (nameSingular, namePlural, label, icon, fields: (name, type, label)); relations are added after.
PET_FIELDS = (("breed", "TEXT", "Breed"), ("species", "TEXT", "Species"))
APPOINTMENT_FIELDS = (
    ("startsAt", "DATE_TIME", "Starts at"),
    ("endsAt", "DATE_TIME", "Ends at"),
    ("status", "TEXT", "Status"),
    ("service", "TEXT", "Service"),
    ("price", "CURRENCY", "Price"),
)
# (object plural, field name, label, target plural, the inverse field's label on the target)
RELATIONS = (
    ("pets", "owner", "Owner", "people", "Pets"),
    ("appointments", "client", "Client", "people", "Appointments"),
    ("appointments", "pet", "Pet", "pets", "Appointments"),
)


async def setup(client: TwentyClient) -> list[str]:
    """Create what is missing of the `pets` and `appointments` objects; returns what was done.
    Run twice, it creates nothing the second time."""
    done: list[str] = []
    objects = await client.objects(fresh=True)
    for singular, plural, label, icon, fields in (
        ("pet", "pets", "Pet", "IconDog", PET_FIELDS),
        ("appointment", "appointments", "Appointment", "IconCalendarEvent", APPOINTMENT_FIELDS),
    ):
        if plural not in objects:
            body = {
                "nameSingular": singular,
                "namePlural": plural,
                "labelSingular": label,
                "labelPlural": f"{label}s",
                "icon": icon,
            }
            await client.call("POST", f"{client.metadata}/objects", body=body)
            done.append(f"object {plural}")
        objects = await client.objects(fresh=True)
        have = _field_names(objects[plural])
        for name, kind, field_label in fields:
            if name not in have:
                await client.call(
                    "POST",
                    f"{client.metadata}/fields",
                    body={
                        "objectMetadataId": objects[plural]["id"],
                        "type": kind,
                        "name": name,
                        "label": field_label,
                    },
                )
                done.append(f"field {plural}.{name}")
    objects = await client.objects(fresh=True)
    for plural, name, label, target, inverse in RELATIONS:
        if name in _field_names(objects[plural]):
            continue
        await client.call(
            "POST",
            f"{client.metadata}/fields",
            body={
                "objectMetadataId": objects[plural]["id"],
                "type": "RELATION",
                "name": name,
                "label": label,
                "relationCreationPayload": {
                    "targetObjectMetadataId": objects[target]["id"],
                    "type": "MANY_TO_ONE",
                    "targetFieldLabel": inverse,
                    "targetFieldIcon": "IconLink",
                },
            },
        )
        done.append(f"relation {plural}.{name} -> {target}")
    return done


def _field_names(obj: Mapping[str, Any]) -> set[str]:
    fields = obj.get("fields")
    rows = fields.get("edges", []) if isinstance(fields, dict) else fields or []
    names = set()
    for row in rows:
        node = row.get("node", row) if isinstance(row, dict) else {}
        if isinstance(node, dict) and node.get("name"):
            names.add(str(node["name"]))
    return names


async def _run_setup(settings: Settings) -> int:
    client = TwentyClient(settings)
    try:
        done = await setup(client)
    except (TwentyError, RateLimitedError, httpx.TransportError) as exc:
        print(f"Twenty setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print("\n".join(done) if done else "pets and appointments already exist: nothing to do")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.integrations.twenty", description="Twenty CRM.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create the pets and appointments custom objects (idempotent)")
    parser.parse_args(argv)
    try:
        return asyncio.run(_run_setup(Settings.load()))
    except SettingsError as exc:
        print(f"cheshire: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
