"""Read models for the bot: plain dataclasses built from the database inside a unit of work, so
handlers and renderers never touch ORM rows or SQL. Those Kimmie's e-mail shows too (a booking's card,
a conversation) live in core/notify/views.py and are re-exported here for the handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.booking.api import BookingService
from core.db.models import Appointment, Conversation, Pet
from core.notify.views import CardData as CardData
from core.notify.views import ClientView as ClientView
from core.notify.views import ConversationView as ConversationView
from core.notify.views import PetView as PetView
from core.notify.views import client_view as client_view
from core.notify.views import conversation_for_client as conversation_for_client
from core.notify.views import conversation_view as conversation_view
from core.notify.views import load_card as load_card
from core.types import Booking


@dataclass(frozen=True, slots=True)
class ClientCard:
    client: ClientView
    pets: tuple[PetView, ...]
    history: tuple[Booking, ...] = field(default=())


async def set_card_location(
    session: AsyncSession, appointment_id: int, chat_id: int, message_id: int
) -> None:
    await session.execute(
        update(Appointment)
        .where(Appointment.id == appointment_id)
        .values(admin_card_chat_id=chat_id, admin_card_message_id=message_id)
    )


async def client_card(session: AsyncSession, booking_service: BookingService, client_id: int) -> ClientCard:
    pets = tuple(PetView.of(p) for p in await customers.pets_of(session, client_id))
    history = await booking_service.my_appointments(session, client_id=client_id, include_past=True)
    return ClientCard(client=await client_view(session, client_id), pets=pets, history=tuple(history))


async def pet_views(session: AsyncSession, pet_ids: list[int]) -> dict[int, PetView]:
    if not pet_ids:
        return {}
    rows = await session.execute(select(Pet).where(Pet.id.in_(pet_ids)))
    return {p.id: PetView.of(p) for p in rows.scalars()}


async def taken_over(session: AsyncSession, conversation_id: int) -> bool:
    return bool(
        await session.scalar(select(Conversation.human_takeover).where(Conversation.id == conversation_id))
    )
