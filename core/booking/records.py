"""Reading the booking domain's rows: appointments (with pets and service), services, add-ons, a
client's pets, the conversation to tell a customer in, and the `Booking` DTO that leaves the domain;
and writing a new appointment with its pets (`insert_appointment`, one round trip on PostgreSQL).

Kept apart from the rules so every part (search, guard, lifecycle, follow-ups) loads rows one way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import BigInteger, Select, Table, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core.booking import texts
from core.booking.api import NotFoundError
from core.booking.quotes import PriceSpec
from core.db.database import dialect_name
from core.db.models import Appointment, AppointmentPet, Conversation, Pet, Service
from core.types import AppointmentStatus, Booking, Channel

REQUESTED = AppointmentStatus.REQUESTED.value
CONFIRMED = AppointmentStatus.CONFIRMED.value
LIVE = (REQUESTED, CONFIRMED)


def appointment_query() -> Select[Appointment]:
    return select(Appointment).options(selectinload(Appointment.pets), selectinload(Appointment.service))


async def find_appointment(
    session: AsyncSession, appointment_id: int, *, for_update: bool = False
) -> Appointment | None:
    """The appointment with its pets and service, fresh from the database (a row lock on PostgreSQL
    with `for_update`: the caller is about to change it)."""
    query = appointment_query().where(Appointment.id == appointment_id)
    if for_update and dialect_name(session) == "postgresql":
        query = query.with_for_update(of=Appointment)
    query = query.execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def load_appointment(
    session: AsyncSession, appointment_id: int, *, for_update: bool = False
) -> Appointment:
    appt = await find_appointment(session, appointment_id, for_update=for_update)
    if appt is None:
        raise NotFoundError(texts.NO_APPOINTMENT)
    return appt


# The request path's reads, built once: constructing a statement costs more than running it.
_SERVICE_BY_CODE = select(Service).where(
    Service.code == bindparam("code"), Service.active.is_(True), Service.is_addon.is_(False)
)
_PETS_BY_ID = select(Pet).where(Pet.id.in_(bindparam("ids", expanding=True))).order_by(Pet.id)
_CLIENTS_PETS_BY_ID = (
    select(Pet)
    .where(Pet.id.in_(bindparam("ids", expanding=True)), Pet.client_id == bindparam("client_id"))
    .order_by(Pet.id)
)


async def load_service(session: AsyncSession, code: str) -> Service:
    row = (await session.execute(_SERVICE_BY_CODE, {"code": code})).scalar_one_or_none()
    if row is None:
        raise NotFoundError(texts.no_service(code))
    return row


async def load_addons(session: AsyncSession, codes: Sequence[str]) -> list[PriceSpec]:
    if not codes:
        return []
    rows = await session.execute(
        select(Service).where(
            Service.code.in_(list(codes)), Service.active.is_(True), Service.is_addon.is_(True)
        )
    )
    found = {s.code: PriceSpec.of(s) for s in rows.scalars()}
    missing = [c for c in codes if c not in found]
    if missing:
        raise NotFoundError(texts.no_addon(missing[0]))
    return [found[c] for c in dict.fromkeys(codes)]


async def load_pets(session: AsyncSession, pet_ids: Sequence[int], client_id: int | None) -> list[Pet]:
    """The pets by id; with a client id, only that client's (another client's pet is "not found")."""
    if not pet_ids:
        return []
    if client_id is None:
        found = await session.execute(_PETS_BY_ID, {"ids": list(pet_ids)})
    else:
        found = await session.execute(_CLIENTS_PETS_BY_ID, {"ids": list(pet_ids), "client_id": client_id})
    pets = list(found.scalars())
    if len(pets) != len(set(pet_ids)):
        raise NotFoundError(texts.NO_PET)
    return pets


_appointment = cast(Table, Appointment.__table__)
_appointment_pet = cast(Table, AppointmentPet.__table__)
# The columns a new appointment is written with (`insert_appointment`'s `values`).
_NEW_APPOINTMENT = {
    name: bindparam(name, type_=_appointment.c[name].type)
    for name in (
        "client_id",
        "service_id",
        "start_at",
        "end_at",
        "status",
        "hold_expires_at",
        "decided_at",
        "source_channel",
        "addon_codes",
        "price_min_cents",
        "price_max_cents",
        "availability_verified",
        "notes",
    )
}
_INSERT_APPOINTMENT = insert(_appointment).values(_NEW_APPOINTMENT).returning(_appointment.c.id)


@functools.cache
def _insert_with_pets() -> Any:
    """PostgreSQL: the appointment and its pets in one statement (the pets' INSERT reads the new id
    from the first, a data-modifying CTE), returning the id."""
    new = _INSERT_APPOINTMENT.cte("new_appointment")
    pets = insert(_appointment_pet).from_select(
        ["appointment_id", "pet_id"],
        select(new.c.id, func.unnest(bindparam("pet_ids", type_=ARRAY(BigInteger)))),
    )
    return select(new.c.id).add_cte(pets.cte("new_pets"))


async def insert_appointment(session: AsyncSession, values: dict[str, Any], pet_ids: Sequence[int]) -> int:
    """Write a new appointment (`values`: the columns of `_NEW_APPOINTMENT`) and its pets; its id.
    One round trip on PostgreSQL; SQLite, in process, takes two statements."""
    if dialect_name(session) == "postgresql" and pet_ids:
        return int(
            (await session.execute(_insert_with_pets(), {**values, "pet_ids": list(pet_ids)})).scalar_one()
        )
    appointment_id = int((await session.execute(_INSERT_APPOINTMENT, values)).scalar_one())
    if pet_ids:
        await session.execute(
            insert(_appointment_pet), [{"appointment_id": appointment_id, "pet_id": p} for p in pet_ids]
        )
    return appointment_id


def owned(appt: Appointment, client_id: int | None) -> None:
    """A customer sees only their own appointments (`client_id=None` is Kimmie: any)."""
    if client_id is not None and appt.client_id != client_id:
        raise NotFoundError(texts.NO_APPOINTMENT)


def to_booking(
    appt: Appointment, *, service: Service | None = None, pets: Sequence[Pet] | None = None
) -> Booking:
    """The DTO. `service`/`pets` given for a row just inserted (no relationship reload)."""
    pets = list(appt.pets) if pets is None else list(pets)
    service = service or appt.service
    return Booking(
        id=appt.id,
        client_id=appt.client_id,
        status=AppointmentStatus(appt.status),
        start=appt.start_at,
        end=appt.end_at,
        service_code=service.code,
        service_name=service.name,
        pet_ids=tuple(p.id for p in pets),
        pet_names=tuple(p.name for p in pets),
        source_channel=Channel(appt.source_channel) if appt.source_channel else None,
        availability_verified=appt.availability_verified,
        price_min_cents=appt.price_min_cents,
        price_max_cents=appt.price_max_cents,
        hold_expires_at=appt.hold_expires_at,
        notes=appt.notes,
    )


async def customer_conversation(
    session: AsyncSession, client_id: int, channel: str | None
) -> Conversation | None:
    """The client's conversation on the channel they booked from, else their most recent one."""
    order = (Conversation.last_inbound_at.desc().nulls_last(), Conversation.id.desc())
    if channel:
        found = (
            await session.execute(
                select(Conversation)
                .where(Conversation.client_id == client_id, Conversation.channel == channel)
                .order_by(*order)
                .limit(1)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    return (
        await session.execute(
            select(Conversation).where(Conversation.client_id == client_id).order_by(*order).limit(1)
        )
    ).scalar_one_or_none()
