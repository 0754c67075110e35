"""Read models of what Kimmie's notifications show (a booking's card, a conversation needing her):
plain dataclasses built from the database inside a unit of work. Shared by the Telegram adapter (cards,
handlers) and the e-mail fallback, so renderers never touch ORM rows or SQL and neither imports the
other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.booking.api import BookingService
from core.booking.transitions import UNDO_WINDOW
from core.db.models import Appointment, ChannelIdentity, Client, Conversation, GroomingDesign, Pet
from core.payments.card import DepositView, deposit_view
from core.types import AppointmentStatus, Booking


@dataclass(frozen=True, slots=True)
class PetView:
    id: int
    name: str
    breed: str | None
    size_class: str | None
    coat_type: str | None
    temperament: str | None
    health_notes: str | None
    vaccination_expires_on: date | None
    photo_url: str | None
    photo_key: str | None = None

    @classmethod
    def of(cls, pet: Pet) -> PetView:
        photos = [p for p in (pet.photos or []) if p.get("url")]
        preferred = [p for p in photos if p.get("kind") in (None, "photo")] or photos
        return cls(
            id=pet.id,
            name=pet.name,
            breed=pet.breed,
            size_class=pet.size_class,
            coat_type=pet.coat_type,
            temperament=pet.temperament,
            health_notes=pet.health_notes,
            vaccination_expires_on=pet.vaccination_expires_on,
            photo_url=str(preferred[-1]["url"]) if preferred else None,
            photo_key=str(preferred[-1]["key"]) if preferred and preferred[-1].get("key") else None,
        )


@dataclass(frozen=True, slots=True)
class ClientView:
    id: int
    name: str | None
    phone: str | None
    email: str | None
    notes: str | None
    channels: tuple[str, ...] = ()
    # (channel, username) pairs: the Instagram username, the Telegram @username.
    handles: tuple[tuple[str, str], ...] = ()
    visits: int = 0  # completed appointments
    no_shows: int = 0
    # Shown when no name is known: a channel's display name, else a handle (never "client #N").
    display_name: str | None = None

    @property
    def label(self) -> str:
        handle = f"@{self.handles[0][1]}" if self.handles else None
        return self.name or self.display_name or handle or self.email or self.phone or "a new customer"


@dataclass(frozen=True, slots=True)
class CardData:
    booking: Booking
    client: ClientView
    pets: tuple[PetView, ...]
    conversation_id: int | None
    card_chat_id: int | None
    card_message_id: int | None
    deposit: DepositView | None = None  # None: no deposit asked (core/payments/)
    # A decline Kimmie may still undo until then (core/booking/transitions.py UNDO_WINDOW).
    undo_until: datetime | None = None


async def client_view(session: AsyncSession, client_id: int) -> ClientView:
    client = await session.get_one(Client, client_id)
    rows = (
        await session.execute(
            select(ChannelIdentity.channel, ChannelIdentity.handle, ChannelIdentity.display_name)
            .where(ChannelIdentity.client_id == client_id)
            .order_by(ChannelIdentity.id)
        )
    ).all()
    counted = await session.execute(
        select(Appointment.status, func.count())
        .where(Appointment.client_id == client_id, Appointment.status.in_(("completed", "no_show")))
        .group_by(Appointment.status)
    )
    counts = {str(status): int(n) for status, n in counted.all()}
    return ClientView(
        id=client.id,
        name=client.name,
        phone=client.phone,
        email=client.email,
        notes=client.notes,
        channels=tuple(dict.fromkeys(channel for channel, _h, _d in rows)),
        handles=tuple(dict.fromkeys((channel, handle) for channel, handle, _d in rows if handle)),
        visits=counts.get("completed", 0),
        no_shows=counts.get("no_show", 0),
        display_name=next((d for _c, _h, d in rows if d), None),
    )


async def conversation_for_client(session: AsyncSession, client_id: int, channel: str | None) -> int | None:
    """The client's conversation on `channel` (else their most recently active one)."""
    query = select(Conversation.id).where(Conversation.client_id == client_id)
    if channel:
        found = (
            (
                await session.execute(
                    query.where(Conversation.channel == channel).order_by(Conversation.id.desc())
                )
            )
            .scalars()
            .first()
        )
        if found is not None:
            return found
    rows = await session.execute(
        query.order_by(Conversation.last_inbound_at.desc().nulls_last(), Conversation.id.desc())
    )
    return rows.scalars().first()


async def _with_chosen_preview(
    session: AsyncSession, appointment_id: int, pets: list[PetView]
) -> list[PetView]:
    """The Looking Glass preview the customer booked with ("Book this style") is the picture on
    Kimmie's card, in place of the pet's own photo: it shows what they asked for."""
    chosen = (
        await session.scalars(
            select(GroomingDesign)
            .where(GroomingDesign.appointment_id == appointment_id, GroomingDesign.status == "done")
            .order_by(GroomingDesign.id)
            .limit(1)
        )
    ).first()
    if chosen is None or not chosen.storage_keys:
        return pets
    key = str(chosen.storage_keys[0])
    return [
        replace(p, photo_key=key, photo_url=f"/media/{key}") if p.id == chosen.pet_id else p for p in pets
    ]


async def load_card(session: AsyncSession, booking_service: BookingService, appointment_id: int) -> CardData:
    booking = await booking_service.get_booking(session, appointment_id)
    appointment = await session.get_one(Appointment, appointment_id)
    pets = [
        PetView.of(p) for p in await customers.pets_of(session, booking.client_id) if p.id in booking.pet_ids
    ]
    pets = await _with_chosen_preview(session, appointment_id, pets)
    channel = booking.source_channel.value if booking.source_channel else None
    return CardData(
        booking=booking,
        client=await client_view(session, booking.client_id),
        pets=tuple(pets),
        conversation_id=await conversation_for_client(session, booking.client_id, channel),
        card_chat_id=appointment.admin_card_chat_id,
        card_message_id=appointment.admin_card_message_id,
        deposit=await deposit_view(session, appointment_id),
        undo_until=(
            appointment.decided_at + UNDO_WINDOW
            if booking.status == AppointmentStatus.DECLINED and appointment.decided_at is not None
            else None
        ),
    )


@dataclass(frozen=True, slots=True)
class ConversationView:
    id: int
    client: ClientView
    channel: str
    human_takeover: bool


async def conversation_view(session: AsyncSession, conversation_id: int) -> ConversationView | None:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    return ConversationView(
        id=conversation.id,
        client=await client_view(session, conversation.client_id),
        channel=conversation.channel,
        human_takeover=conversation.human_takeover,
    )
