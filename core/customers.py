"""Clients, their channel identities and their pets.

One client may write from several channels; each account is a `ChannelIdentity`. A shared phone number
(Telegram contact) or an e-mail links a new identity to an existing client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import func, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import events, types
from core.db.models import Appointment, ChannelIdentity, Client, Conversation, Pet, utcnow

_NON_DIGITS = re.compile(r"\D+")


def client_facts(client: Client) -> dict[str, object]:
    """A client as plain data for an event body (what a CRM keeps: who and how to reach them)."""
    return {"id": client.id, "name": client.name, "email": client.email, "phone": client.phone}


async def client_created(session: AsyncSession, client_id: int, *, name: str | None, channel: str) -> None:
    """First contact made a client: the `client.created` event, in the caller's transaction."""
    await events.emit(
        session,
        events.CLIENT_CREATED,
        subject=f"client:{client_id}",
        data={"client": {"id": client_id, "name": name, "email": None, "phone": None}, "channel": channel},
    )


async def client_updated(session: AsyncSession, client: Client, changed: Sequence[str]) -> None:
    """The client's name, phone or e-mail changed: the `client.updated` event (only when it did)."""
    if changed:
        await events.emit(
            session,
            events.CLIENT_UPDATED,
            subject=f"client:{client.id}",
            data={"client": client_facts(client), "changed": sorted(set(changed))},
        )


def normalize_phone(phone: str) -> str:
    """Digits only, with a leading + when given: how phones are stored and compared."""
    digits = _NON_DIGITS.sub("", phone)
    return f"+{digits}" if phone.strip().startswith("+") else digits


def to_customer(client: Client) -> types.Customer:
    return types.Customer(
        id=client.id,
        name=client.name,
        phone=client.phone,
        email=client.email,
        notes=client.notes,
        reachable_channels=_reachable_channels(client),
    )


def _reachable_channels(client: Client) -> tuple[str, ...]:
    # Only what the SELECT already brought: reading an unloaded attribute would be a hidden query
    # (and fails under asyncio), e.g. for a client created or updated in this session.
    loaded = inspect(client).attrs.reachable_channels.loaded_value
    if not isinstance(loaded, str) or not loaded:
        return ()
    return tuple(sorted(set(loaded.split(","))))


def to_pet(pet: Pet) -> types.Pet:
    return types.Pet(
        id=pet.id,
        client_id=pet.client_id,
        name=pet.name,
        breed=pet.breed,
        size_class=types.SizeClass(pet.size_class) if pet.size_class else None,
        coat_type=types.CoatType(pet.coat_type) if pet.coat_type else None,
        weight_kg=pet.weight_kg,
        temperament=pet.temperament,
        health_notes=pet.health_notes,
        vaccination_expires_on=pet.vaccination_expires_on,
        photos=tuple(str(p.get("url") or p.get("key")) for p in pet.photos or []),
        placeholder=bool(pet.placeholder),
    )


async def find_identity(session: AsyncSession, channel: str, external_id: str) -> ChannelIdentity | None:
    return (
        await session.execute(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
            )
        )
    ).scalar_one_or_none()


async def get_or_create_identity(
    session: AsyncSession, channel: str, external_id: str, *, display_name: str | None = None
) -> ChannelIdentity:
    """The identity for this channel account, creating it (and a new client) on first contact."""
    identity = await find_identity(session, channel, external_id)
    if identity is not None:
        if display_name and not identity.display_name:
            identity.display_name = display_name
        return identity
    try:
        # A savepoint: two first messages racing on PostgreSQL must not fail the whole unit of work.
        async with session.begin_nested():
            client = Client(name=display_name)
            session.add(client)
            await session.flush()
            identity = ChannelIdentity(
                client_id=client.id, channel=channel, external_id=external_id, display_name=display_name
            )
            session.add(identity)
            await session.flush()
    except IntegrityError:
        identity = await find_identity(session, channel, external_id)
        if identity is None:
            raise
        return identity
    await client_created(session, client.id, name=display_name, channel=channel)
    return identity


async def get_or_create_conversation(session: AsyncSession, identity: ChannelIdentity) -> Conversation:
    query = select(Conversation).where(Conversation.identity_id == identity.id)
    conversation = (await session.execute(query)).scalar_one_or_none()
    if conversation is not None:
        return conversation
    try:
        async with session.begin_nested():
            conversation = Conversation(
                client_id=identity.client_id, identity_id=identity.id, channel=identity.channel, state={}
            )
            session.add(conversation)
            await session.flush()
    except IntegrityError:
        conversation = (await session.execute(query)).scalar_one()
    return conversation


async def link_phone(session: AsyncSession, identity: ChannelIdentity, phone: str) -> Client:
    """Attach a phone to the identity's client; when another client already has it, move the
    identity (and its conversation) to that client so Kimmie sees one person, not two."""
    normalized = normalize_phone(phone)
    existing = (
        await session.execute(select(Client).where(Client.phone == normalized).order_by(Client.id).limit(1))
    ).scalar_one_or_none()
    if existing is None or existing.id == identity.client_id:
        client = await session.get_one(Client, identity.client_id)
        changed = client.phone != normalized
        client.phone = normalized
        await client_updated(session, client, ["phone"] if changed else [])
        return client
    previous_client_id = identity.client_id
    identity.client_id = existing.id
    conversation = (
        await session.execute(select(Conversation).where(Conversation.identity_id == identity.id))
    ).scalar_one_or_none()
    if conversation is not None:
        conversation.client_id = existing.id
    await session.flush()
    await _drop_if_empty(session, previous_client_id)
    return existing


class ContactConflictError(Exception):
    """The phone or e-mail is already another client's. A customer's claim never moves or merges it
    (anyone can type someone else's address); Kimmie sorts it out."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"that {kind} is already on another client's record")
        self.kind = kind


def normalize_email(email: str) -> str:
    """How e-mail addresses are stored and compared (and the e-mail identity's external id)."""
    return email.strip().lower()


async def save_contact(
    session: AsyncSession, *, client_id: int, phone: str | None = None, email: str | None = None
) -> Client:
    """Store a phone and/or e-mail on the client's own record. An e-mail also becomes an `email`
    channel identity of the client, so delivery can fall back to it outside Meta's window (an earlier
    address of the client's is replaced). Raises `ContactConflictError`, changing nothing, when either
    already belongs to another client."""
    client = await session.get_one(Client, client_id)
    number = normalize_phone(phone) if phone else None
    address = normalize_email(email) if email else None
    if number and await session.scalar(
        select(Client.id).where(Client.phone == number, Client.id != client_id).limit(1)
    ):
        raise ContactConflictError("phone number")
    owned: ChannelIdentity | None = None
    if address:
        owned = await find_identity(session, types.Channel.EMAIL.value, address)
        on_record = await session.scalar(
            select(Client.id).where(func.lower(Client.email) == address, Client.id != client_id).limit(1)
        )
        if (owned is not None and owned.client_id != client_id) or on_record:
            raise ContactConflictError("e-mail address")
    changed = [
        k
        for k, new, old in (("phone", number, client.phone), ("email", address, client.email))
        if new and new != old
    ]
    if number:
        client.phone = number
    if address:
        client.email = address
        await _set_email_identity(session, client, address, owned)
    await session.flush()
    await client_updated(session, client, changed)
    return client


async def _set_email_identity(
    session: AsyncSession, client: Client, address: str, owned: ChannelIdentity | None
) -> None:
    older = await session.execute(
        select(ChannelIdentity).where(
            ChannelIdentity.client_id == client.id,
            ChannelIdentity.channel == types.Channel.EMAIL.value,
            ChannelIdentity.external_id != address,
            ~select(Conversation.id).where(Conversation.identity_id == ChannelIdentity.id).exists(),
        )
    )
    for identity in older.scalars():
        await session.delete(identity)
    if owned is not None:
        owned.unreachable_at = None  # the customer confirms the address again: try it again
        return
    try:
        async with session.begin_nested():  # another client claiming it at the same moment
            session.add(
                ChannelIdentity(
                    client_id=client.id,
                    channel=types.Channel.EMAIL.value,
                    external_id=address,
                    display_name=client.name,
                )
            )
            await session.flush()
    except IntegrityError:
        raise ContactConflictError("e-mail address") from None


async def link_identity(
    session: AsyncSession, *, client_id: int, channel: str, external_id: str, display_name: str | None = None
) -> ChannelIdentity | None:
    """Attach this channel account to an existing client (a signed link proved they are the same
    person). A new account joins the client; an account already used alone (a first-contact stub) is
    moved with its conversation. Returns None, changing nothing, when the client is gone or the account
    already belongs to a client with pets, appointments or other accounts (not merged automatically)."""
    if await session.get(Client, client_id) is None:
        return None
    identity = await find_identity(session, channel, external_id)
    if identity is None:
        try:
            async with session.begin_nested():
                identity = ChannelIdentity(
                    client_id=client_id, channel=channel, external_id=external_id, display_name=display_name
                )
                session.add(identity)
                await session.flush()
            return identity
        except IntegrityError:
            identity = await find_identity(session, channel, external_id)
            if identity is None:
                raise
    if identity.client_id == client_id:
        return identity
    previous = identity.client_id
    if await _has_more_than(session, previous, identity.id):
        return None
    identity.client_id = client_id
    conversation = (
        await session.execute(select(Conversation).where(Conversation.identity_id == identity.id))
    ).scalar_one_or_none()
    if conversation is not None:
        conversation.client_id = client_id
    await session.flush()
    await _drop_if_empty(session, previous)
    return identity


async def _has_more_than(session: AsyncSession, client_id: int, identity_id: int) -> bool:
    """Whether the client holds anything besides this one identity."""
    others = await session.scalar(
        select(func.count())
        .select_from(ChannelIdentity)
        .where(ChannelIdentity.client_id == client_id, ChannelIdentity.id != identity_id)
    )
    if others:
        return True
    for model in (Pet, Appointment):
        if await session.scalar(select(func.count()).select_from(model).where(model.client_id == client_id)):
            return True
    return False


async def _drop_if_empty(session: AsyncSession, client_id: int) -> None:
    """Remove a client row left with no identities, pets or appointments (a first-contact stub)."""
    for model in (ChannelIdentity, Pet, Appointment):
        count = await session.scalar(
            select(func.count()).select_from(model).where(model.client_id == client_id)
        )
        if count:
            return
    client = await session.get(Client, client_id)
    if client is not None:
        await session.delete(client)


async def search_clients(session: AsyncSession, query: str, *, limit: int = 10) -> list[Client]:
    """Kimmie's `/client <name or phone>`: case-insensitive name match, or phone digits."""
    query = query.strip()
    if not query:
        return []
    conditions = [func.lower(Client.name).contains(query.lower())]
    digits = _NON_DIGITS.sub("", query)
    if len(digits) >= 4:
        conditions.append(Client.phone.contains(digits))
    rows = await session.execute(select(Client).where(or_(*conditions)).order_by(Client.name).limit(limit))
    return list(rows.scalars())


async def pets_of(session: AsyncSession, client_id: int) -> list[Pet]:
    rows = await session.execute(select(Pet).where(Pet.client_id == client_id).order_by(Pet.id))
    return list(rows.scalars())


async def own_pets(session: AsyncSession, client_id: int, pet_ids: Sequence[int]) -> list[Pet]:
    """The given pets, only if every one belongs to the client (customer-side scoping)."""
    if not pet_ids:
        return []
    rows = await session.execute(select(Pet).where(Pet.id.in_(pet_ids), Pet.client_id == client_id))
    pets = list(rows.scalars())
    return pets if len(pets) == len(set(pet_ids)) else []


async def save_pet(
    session: AsyncSession,
    *,
    client_id: int,
    name: str,
    breed: str | None = None,
    size_class: types.SizeClass | None = None,
    coat_type: types.CoatType | None = None,
    weight_kg: float | None = None,
    temperament: str | None = None,
    health_notes: str | None = None,
    vaccination_expires_on: date | None = None,
) -> Pet:
    """Create the client's pet, or update the one with the same name (case-insensitive)."""
    pet = (
        await session.execute(
            select(Pet).where(Pet.client_id == client_id, func.lower(Pet.name) == name.strip().lower())
        )
    ).scalar_one_or_none()
    if pet is None:
        pet = Pet(client_id=client_id, name=name.strip(), photos=[])
        session.add(pet)
    updates = {
        "breed": breed,
        "size_class": size_class.value if size_class else None,
        "coat_type": coat_type.value if coat_type else None,
        "weight_kg": weight_kg,
        "temperament": temperament,
        "health_notes": health_notes,
        "vaccination_expires_on": vaccination_expires_on,
    }
    for field, value in updates.items():
        if value is not None:
            setattr(pet, field, value)
    await session.flush()
    return pet


async def set_handle(session: AsyncSession, identity_id: int, handle: str) -> None:
    """Remember the person's username on that channel (only when it changed: no needless write)."""
    handle = handle.strip().lstrip("@")[:200]
    if handle:
        await session.execute(
            update(ChannelIdentity)
            .where(
                ChannelIdentity.id == identity_id,
                or_(ChannelIdentity.handle.is_(None), ChannelIdentity.handle != handle),
            )
            .values(handle=handle)
        )


def touch_inbound(identity: ChannelIdentity, conversation: Conversation, at: datetime | None) -> None:
    """Remember the customer's last message time: Meta's 24-hour window is counted from it.
    Ingest applies the same rule to whole batches in SQL (`_touch_inbound`, core/conversation/ingest.py).
    """
    when = at or utcnow()
    if identity.last_inbound_at is None or when > identity.last_inbound_at:
        identity.last_inbound_at = when
    if conversation.last_inbound_at is None or when > conversation.last_inbound_at:
        conversation.last_inbound_at = when
    identity.unreachable_at = None  # they just wrote to us: reachable again
