"""The tools the model may call: thin, validated calls into the booking service and customers.

Scope is structural, not a matter of the model's good behaviour:
- every tool acts for `ToolContext.client_id`, the conversation's own client; no argument names a client
  (extra arguments are refused), and pet / appointment ids are checked against that client;
- no tool confirms or approves anything: only Kimmie's approve does (in Telegram);
- arguments are validated by pydantic; any failure, and any `BookingError`, goes back to the model as a
  tool error it can explain. Nothing here raises to the customer.
- save_contact writes only to the own client: a phone or e-mail that is already another client's is
  refused (nothing changes, nothing of theirs is shown) and the chat is flagged for the groomer, so a
  customer cannot take over someone's record by claiming their address.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.booking.api import BookingError, BookingService
from core.conversation.takeover import handover_requested
from core.db.models import Client, Conversation, Pet
from core.llm.types import ToolCall, ToolResult, ToolSpec
from core.previews.service import Previews
from core.reach import ReachPolicy, has_lasting_route
from core.types import Booking, Channel, CoatType, Quote, SizeClass, Slot

log = logging.getLogger(__name__)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NoArgs(_Args):
    pass


class QuoteArgs(_Args):
    service_code: str = Field(description="Service code from list_services.")
    pet_id: int | None = Field(None, description="One of this customer's pets: uses its size and coat.")
    breed: str | None = None
    size_class: SizeClass | None = None
    coat_type: CoatType | None = None
    weight_kg: float | None = Field(None, gt=0, lt=150)
    matted: bool = False
    addon_codes: list[str] = Field(default_factory=list, max_length=5)


class FindSlotsArgs(_Args):
    service_code: str
    pet_ids: list[int] = Field(default_factory=list, max_length=4, description="This customer's pet ids.")
    date_from: date | None = Field(None, description="First day (YYYY-MM-DD, business time zone).")
    date_to: date | None = Field(None, description="Last day (YYYY-MM-DD).")
    time_of_day: Literal["morning", "afternoon", "any"] = "any"
    limit: int = Field(6, ge=1, le=10)


class RequestBookingArgs(_Args):
    service_code: str
    pet_ids: list[int] = Field(min_length=1, max_length=4)
    start: datetime = Field(description="Start time exactly as returned by find_slots (ISO 8601).")
    addon_codes: list[str] = Field(default_factory=list, max_length=5)
    notes: str | None = Field(None, max_length=500)
    contact_declined: bool = Field(
        False,
        description="True only after you asked for an e-mail address (or offered the Telegram link) "
        "and the customer would rather not give one.",
    )


class PreviewStyleArgs(_Args):
    style_code: str = Field(description="A style code from list_styles.")
    pet_id: int | None = Field(None, description="This customer's dog; default: the dog of the last photo.")
    full_preview: bool = Field(False, description="Three angles (front, side, back) instead of one.")


class MyAppointmentsArgs(_Args):
    include_past: bool = False


class CancelArgs(_Args):
    appointment_id: int
    reason: str | None = Field(None, max_length=300)


class RescheduleArgs(_Args):
    appointment_id: int
    new_start: datetime = Field(description="A start time returned by find_slots (ISO 8601).")


class SavePetArgs(_Args):
    pet_id: int | None = Field(
        None,
        description="Update this dog of the customer's (a pet_id from the context), e.g. to give a dog "
        "saved by the booking buttons its real name.",
    )
    name: str = Field(min_length=1, max_length=100)
    breed: str | None = Field(None, max_length=100)
    size_class: SizeClass | None = None
    coat_type: CoatType | None = None
    weight_kg: float | None = Field(None, gt=0, lt=150)
    temperament: str | None = Field(None, max_length=500)
    health_notes: str | None = Field(None, max_length=500)
    vaccination_expires_on: date | None = None
    new_dog: bool = Field(False, description="True only when this is another dog, not one already on file.")


# Syntax only (one @, no spaces, a dot in the domain): whether the mailbox exists, the SMTP server says.
_EMAIL = re.compile(r"^[^@\s<>(),;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


class SaveContactArgs(_Args):
    name: str | None = Field(None, min_length=1, max_length=200, description="The customer's own name.")
    phone: str | None = Field(None, max_length=40, description="The customer's own phone number.")
    email: str | None = Field(None, max_length=254, description="The customer's own e-mail address.")

    @field_validator("email")
    @classmethod
    def _email_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not a valid e-mail address")
        return value

    @field_validator("phone")
    @classmethod
    def _phone_digits(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalized = customers.normalize_phone(value)
        if not 7 <= len(normalized.lstrip("+")) <= 15:
            raise ValueError("a phone number has 7 to 15 digits")
        return normalized

    @model_validator(mode="after")
    def _something(self) -> SaveContactArgs:
        if not self.phone and not self.email and not self.name:
            raise ValueError("give name, phone and/or email")
        return self


class HandoverArgs(_Args):
    reason: str = Field(min_length=1, max_length=300, description="Why the groomer should answer personally.")


@dataclass
class ToolContext:
    conversation_id: int
    client_id: int
    channel: str
    # What the turn did, for the engine: slots offered (to attach as buttons), booking made, handover.
    offered: list[tuple[str, int, Slot]] = field(default_factory=list)
    booked: list[int] = field(default_factory=list)
    handed_over: bool = False


class ToolRefusedError(Exception):
    """A scope check failed: reported to the model as a tool error. With `flag_reason`, the chat is
    also flagged for the groomer (kept although the tool's own writes are rolled back)."""

    def __init__(self, message: str, *, flag_reason: str | None = None) -> None:
        super().__init__(message)
        self.flag_reason = flag_reason


# The client id → ways to reach the customer outside Meta's window that a tool may share, by name
# ({"telegram": "https://t.me/...?start=..."}); wired by the composition root when configured.
ContactLinks = Callable[[int], Mapping[str, str]]


Handler = Callable[[AsyncSession, ToolContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[_Args]
    handler: Handler

    def spec(self) -> ToolSpec:
        schema = self.args.model_json_schema()
        _drop_titles(schema)
        schema.setdefault("properties", {})
        return ToolSpec(self.name, self.description, schema)


def _drop_titles(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("title", None)
        for value in node.values():
            _drop_titles(value)
    elif isinstance(node, list):
        for value in node:
            _drop_titles(value)


class ToolBox:
    def __init__(
        self,
        booking: BookingService,
        tz: ZoneInfo,
        *,
        contact_links: ContactLinks | None = None,
        previews: Previews | None = None,
        reach: ReachPolicy | None = None,
    ) -> None:
        self.booking = booking
        self.previews = previews
        self.reach = reach or ReachPolicy()
        self.tz = tz
        # Given by the composition root when the Telegram bot (and its username) is configured.
        self.contact_links = contact_links
        self.tools = {
            t.name: t
            for t in (
                Tool(
                    "list_services",
                    "List the salon's services with codes, base prices and durations.",
                    NoArgs,
                    self._list_services,
                ),
                Tool(
                    "quote",
                    "Price range and duration of a service for a dog (by pet_id, or breed/size/coat).",
                    QuoteArgs,
                    self._quote,
                ),
                Tool(
                    "find_slots",
                    "Free start times for a service and the customer's dog(s).",
                    FindSlotsArgs,
                    self._find_slots,
                ),
                Tool(
                    "request_booking",
                    "File a booking request at a time from find_slots. The groomer approves it; "
                    "it is not confirmed until she does.",
                    RequestBookingArgs,
                    self._request_booking,
                ),
                Tool(
                    "my_appointments",
                    "The customer's own appointments and their status.",
                    MyAppointmentsArgs,
                    self._my_appointments,
                ),
                Tool(
                    "cancel_appointment",
                    "Cancel one of the customer's own appointments (policy applies).",
                    CancelArgs,
                    self._cancel,
                ),
                Tool(
                    "reschedule_appointment",
                    "Move one of the customer's own appointments to a time from find_slots (policy applies).",
                    RescheduleArgs,
                    self._reschedule,
                ),
                Tool(
                    "save_pet",
                    "Save or update the customer's dog (matched by name, or by pet_id). A dog the booking "
                    "buttons saved without a name is filled in, not saved twice.",
                    SavePetArgs,
                    self._save_pet,
                ),
                Tool(
                    "save_contact",
                    "Save the customer's own phone number and/or e-mail address, so reminders reach "
                    "them outside the chat app's 24-hour window.",
                    SaveContactArgs,
                    self._save_contact,
                ),
                Tool(
                    "contact_options",
                    "How this customer can be reached for reminders, and links they can open to add a "
                    "channel (e.g. a Telegram link).",
                    NoArgs,
                    self._contact_options,
                ),
                Tool(
                    "handover_to_kimmie",
                    "Ask the groomer to answer this customer personally.",
                    HandoverArgs,
                    self._handover,
                ),
            )
        }
        if previews is not None:  # FAL configured: the assistant may offer previews of the customer's photo
            self.tools["list_styles"] = Tool(
                "list_styles",
                "The grooming styles a preview can show (code, name, description).",
                NoArgs,
                self._list_styles,
            )
            self.tools["preview_style"] = Tool(
                "preview_style",
                "Make an AI preview of the customer's own dog photo in a grooming style; it is sent to them "
                "in about a minute. Needs a photo they sent in this chat.",
                PreviewStyleArgs,
                self._preview_style,
            )
        self.specs = tuple(t.spec() for t in self.tools.values())

    async def run(self, session: AsyncSession, ctx: ToolContext, call: ToolCall) -> ToolResult:
        tool = self.tools.get(call.name)
        if tool is None:
            return ToolResult(
                call.id, f"Unknown tool {call.name!r}. Available: {', '.join(self.tools)}.", True
            )
        if call.arguments_error:
            return ToolResult(call.id, f"Invalid arguments: {call.arguments_error}", True)
        try:
            args = tool.args.model_validate(call.arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return ToolResult(call.id, f"Invalid arguments: {problems}", True)
        try:
            async with session.begin_nested():  # a refused call leaves no partial write behind
                result = await tool.handler(session, ctx, args)
        except (BookingError, ToolRefusedError) as exc:
            if isinstance(exc, ToolRefusedError) and exc.flag_reason:
                await _flag_for_groomer(session, ctx, exc.flag_reason)
            return ToolResult(call.id, str(exc) or type(exc).__name__, True)
        except Exception:  # a bug in a service must not cost the customer the reply
            log.exception("tool failed", extra={"tool": call.name})
            return ToolResult(
                call.id, "The tool failed unexpectedly; apologise and offer the groomer's help.", True
            )
        return ToolResult(call.id, json.dumps(result, default=str, ensure_ascii=False))

    # --- helpers ----------------------------------------------------------------------------------
    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).isoformat(timespec="minutes")

    def _aware(self, moment: datetime) -> datetime:
        return moment.replace(tzinfo=self.tz) if moment.tzinfo is None else moment

    def _quote_dict(self, quote: Quote) -> dict[str, Any]:
        return {
            "service": quote.service_name,
            "price_min": quote.price_min_cents / 100,
            "price_max": quote.price_max_cents / 100,
            "currency": quote.currency,
            "duration_min": quote.duration_min,
            "notes": list(quote.notes),
        }

    def _booking(self, b: Booking) -> dict[str, Any]:
        return {
            "appointment_id": b.id,
            "status": b.status.value,
            "service": b.service_name,
            "pets": list(b.pet_names),
            "start": self._local(b.start),
            "end": self._local(b.end),
            "price_min": None if b.price_min_cents is None else b.price_min_cents / 100,
            "price_max": None if b.price_max_cents is None else b.price_max_cents / 100,
        }

    async def _own_pets(self, session: AsyncSession, ctx: ToolContext, pet_ids: list[int]) -> None:
        if pet_ids and not await customers.own_pets(session, ctx.client_id, pet_ids):
            raise ToolRefusedError(
                "Those pet ids are not this customer's pets. Use the ids listed in the context."
            )

    async def _own_booking(self, session: AsyncSession, ctx: ToolContext, appointment_id: int) -> Booking:
        try:
            booking = await self.booking.get_booking(session, appointment_id)
        except BookingError:
            booking = None
        if booking is None or booking.client_id != ctx.client_id:
            raise ToolRefusedError("No such appointment for this customer.")
        return booking

    # --- handlers ---------------------------------------------------------------------------------
    async def _list_services(self, session: AsyncSession, ctx: ToolContext, args: NoArgs) -> Any:
        return [
            {
                "code": s.code,
                "name": s.name,
                "description": s.description,
                "addon": s.is_addon,
                "base_price": s.base_price_cents / 100,
                "base_minutes": s.base_duration_min,
            }
            for s in await self.booking.list_services(session)
        ]

    async def _quote(self, session: AsyncSession, ctx: ToolContext, args: QuoteArgs) -> Any:
        breed, size, coat, weight = args.breed, args.size_class, args.coat_type, args.weight_kg
        if args.pet_id is not None:
            await self._own_pets(session, ctx, [args.pet_id])
            [pet] = await customers.own_pets(session, ctx.client_id, [args.pet_id])
            breed = breed or pet.breed
            size = size or (SizeClass(pet.size_class) if pet.size_class else None)
            coat = coat or (CoatType(pet.coat_type) if pet.coat_type else None)
            weight = weight or pet.weight_kg
        quote = await self.booking.quote(
            session,
            service_code=args.service_code,
            breed=breed,
            size_class=size,
            coat_type=coat,
            weight_kg=weight,
            matted=args.matted,
            addon_codes=args.addon_codes,
        )
        return self._quote_dict(quote)

    async def _find_slots(self, session: AsyncSession, ctx: ToolContext, args: FindSlotsArgs) -> Any:
        await self._own_pets(session, ctx, args.pet_ids)
        slots = await self.booking.find_slots(
            session,
            service_code=args.service_code,
            pet_ids=args.pet_ids,
            client_id=ctx.client_id,
            date_from=args.date_from,
            date_to=args.date_to,
            time_of_day=args.time_of_day,
            limit=args.limit,
        )
        if len(args.pet_ids) == 1:
            ctx.offered = [(args.service_code, args.pet_ids[0], s) for s in slots]
        return {
            "slots": [
                {
                    "start": self._local(s.start),
                    "end": self._local(s.end),
                    "label": f"{s.start.astimezone(self.tz):%a %b %d %I:%M %p}",
                    "calendar_checked": s.verified,
                }
                for s in slots
            ],
            "note": "Offer only these times." if slots else "No free times in that range; try other days.",
        }

    async def _request_booking(
        self, session: AsyncSession, ctx: ToolContext, args: RequestBookingArgs
    ) -> Any:
        await self._own_pets(session, ctx, args.pet_ids)
        await self._ready_to_file(session, ctx, args)
        start = self._aware(args.start)
        # The same request again (the model repeating itself, or the job re-running after a crash)
        # returns the request already filed instead of colliding with its own held slot.
        for existing in await self.booking.my_appointments(session, client_id=ctx.client_id):
            same_pets = set(existing.pet_ids) == set(args.pet_ids)
            if existing.start == start and existing.service_code == args.service_code and same_pets:
                ctx.booked.append(existing.id)
                return self._booking(existing) | {"next": "Already requested: nothing new was filed."}
        booking = await self.booking.request_booking(
            session,
            client_id=ctx.client_id,
            service_code=args.service_code,
            pet_ids=args.pet_ids,
            start=start,
            source_channel=_channel(ctx.channel),
            addon_codes=args.addon_codes,
            notes=args.notes,
        )
        ctx.booked.append(booking.id)
        return self._booking(booking) | {
            "next": "Requested, not confirmed: the groomer approves it, then the customer is told."
        }

    async def _ready_to_file(self, session: AsyncSession, ctx: ToolContext, args: RequestBookingArgs) -> None:
        """What the groomer's card and the reminder need, checked here rather than trusted to the
        prompt: the dogs' names, the customer's name, and (where reminders cannot reach them later)
        that a contact was asked for once."""
        pets = await customers.own_pets(session, ctx.client_id, args.pet_ids)
        unnamed = [p.id for p in pets if p.placeholder]
        if unnamed:
            raise ToolRefusedError(
                f"Not filed yet: pet_id {unnamed[0]} has no name. Ask the dog's name, save it with save_pet "
                "(pet_id and name), then call request_booking again."
            )
        client = await session.get_one(Client, ctx.client_id)
        if not (client.name or "").strip():
            raise ToolRefusedError(
                "Not filed yet: we don't know the customer's name. Ask it, save it with save_contact "
                "(name), then call request_booking again."
            )
        conversation = await session.get_one(Conversation, ctx.conversation_id)
        state = dict(conversation.state or {})
        if args.contact_declined:
            conversation.state = {**state, "contact_asked": True}
            return
        if state.get("contact_asked") or self.reach.lasting(ctx.channel):
            return
        if await has_lasting_route(session, ctx.client_id, self.reach):
            return
        raise ToolRefusedError(
            "Not filed yet: a reminder could not reach this customer later (messages here only reach "
            "them for a while after they write). Ask once, in one short message, for an e-mail address "
            "(save it with save_contact) or offer the link from contact_options; then call "
            "request_booking again, with contact_declined=true if they would rather not."
        )

    async def _my_appointments(
        self, session: AsyncSession, ctx: ToolContext, args: MyAppointmentsArgs
    ) -> Any:
        bookings = await self.booking.my_appointments(
            session, client_id=ctx.client_id, include_past=args.include_past
        )
        return [self._booking(b) for b in bookings]

    async def _cancel(self, session: AsyncSession, ctx: ToolContext, args: CancelArgs) -> Any:
        await self._own_booking(session, ctx, args.appointment_id)
        booking = await self.booking.cancel(
            session, appointment_id=args.appointment_id, client_id=ctx.client_id, reason=args.reason
        )
        return self._booking(booking)

    async def _reschedule(self, session: AsyncSession, ctx: ToolContext, args: RescheduleArgs) -> Any:
        await self._own_booking(session, ctx, args.appointment_id)
        booking = await self.booking.reschedule(
            session,
            appointment_id=args.appointment_id,
            new_start=self._aware(args.new_start),
            client_id=ctx.client_id,
        )
        return self._booking(booking)

    async def _save_pet(self, session: AsyncSession, ctx: ToolContext, args: SavePetArgs) -> Any:
        pets = await customers.pets_of(session, ctx.client_id)
        target = await self._pet_to_fill(pets, args)
        if target is not None:
            return await _fill_pet(session, target, pets, args)
        pet = await customers.save_pet(
            session,
            client_id=ctx.client_id,
            name=args.name,
            breed=args.breed,
            size_class=args.size_class,
            coat_type=args.coat_type,
            weight_kg=args.weight_kg,
            temperament=args.temperament,
            health_notes=args.health_notes,
            vaccination_expires_on=args.vaccination_expires_on,
        )
        return {"pet_id": pet.id, "name": pet.name, "saved": True}

    async def _pet_to_fill(self, pets: list[Pet], args: SavePetArgs) -> Pet | None:
        """The existing record save_pet updates: the pet_id given (own pets only), else a dog already
        of that name (customers.save_pet finds it: None here), else the one placeholder the button flow
        saved, when it fits what the customer said. None: a new dog."""
        if args.pet_id is not None:
            own = next((p for p in pets if p.id == args.pet_id), None)
            if own is None:
                raise ToolRefusedError(
                    "No such pet for this customer: nothing was saved. Use the pet ids listed in the context."
                )
            return own
        if args.new_dog or any(p.name.lower() == args.name.lower() for p in pets):
            return None
        placeholders = [p for p in pets if p.placeholder]
        if len(placeholders) > 1:
            listed = "; ".join(
                f'pet_id {p.id} "{p.name}" ({_traits(p) or "details unknown"})' for p in placeholders
            )
            raise ToolRefusedError(
                f"Nothing saved yet: this customer has {len(placeholders)} dogs the booking buttons saved "
                f"without a name: {listed}. Ask which one {args.name} is if unclear, then call save_pet "
                f"again with that pet_id, or with new_dog=true if {args.name} is another dog."
            )
        if placeholders and _fits(placeholders[0], args):
            return placeholders[0]
        return None

    async def _save_contact(self, session: AsyncSession, ctx: ToolContext, args: SaveContactArgs) -> Any:
        if args.name:
            named = await session.get_one(Client, ctx.client_id)
            if named.name != args.name:
                named.name = args.name
                await customers.client_updated(session, named, ["name"])
            if not args.phone and not args.email:
                return {"saved": True, "name": named.name}
        try:
            client = await customers.save_contact(
                session, client_id=ctx.client_id, phone=args.phone, email=args.email
            )
        except customers.ContactConflictError as exc:
            raise ToolRefusedError(
                f"Could not save it: nothing was changed. Tell the customer the {exc.kind} could not be "
                "saved here and that the groomer will check it; do not guess why.",
                flag_reason=f"a customer gave a {exc.kind} that is already on another client's record",
            ) from None
        return {
            "saved": True,
            "phone": client.phone,
            "email": client.email,
            "note": "Reminders can now also reach the customer by e-mail." if args.email else "",
        }

    async def _contact_options(self, session: AsyncSession, ctx: ToolContext, args: NoArgs) -> Any:
        client = await session.get_one(Client, ctx.client_id)
        links = dict(self.contact_links(ctx.client_id)) if self.contact_links else {}
        return {
            "reachable_on": sorted(customers.to_customer(client).reachable_channels),
            "email_on_file": client.email,
            "links": links,
            "how": "Ask for their e-mail address and save it with save_contact"
            + (
                "; or share a link: opening it connects that app, so reminders reach them there."
                if links
                else "."
            ),
        }

    async def _list_styles(self, session: AsyncSession, ctx: ToolContext, args: NoArgs) -> Any:
        assert self.previews is not None
        return [
            {"code": s.code, "name": s.name, "description": s.description}
            for s in self.previews.styles.values()
        ]

    async def _preview_style(self, session: AsyncSession, ctx: ToolContext, args: PreviewStyleArgs) -> Any:
        assert self.previews is not None
        if args.pet_id is not None:
            await self._own_pets(session, ctx, [args.pet_id])
        conversation = await session.get_one(Conversation, ctx.conversation_id)
        answer = await self.previews.request(
            session,
            conversation,
            style_code=args.style_code,
            angles=3 if args.full_preview else 1,
            pet_id=args.pet_id,
        )
        return {"tell_customer": answer.text}

    async def _handover(self, session: AsyncSession, ctx: ToolContext, args: HandoverArgs) -> Any:
        await _flag_for_groomer(session, ctx, args.reason)
        ctx.handed_over = True
        return {
            "handed_over": True,
            "tell_customer": "The groomer will answer personally as soon as possible.",
        }


def _traits(pet: Pet) -> str:
    coat = f"{pet.coat_type} coat" if pet.coat_type else None
    return ", ".join(x for x in (pet.breed, pet.size_class, coat) if x)


def _fits(placeholder: Pet, args: SavePetArgs) -> bool:
    """A placeholder is this dog unless the customer described another size or coat."""
    size = args.size_class.value if args.size_class else None
    coat = args.coat_type.value if args.coat_type else None
    return (size is None or placeholder.size_class in (None, size)) and (
        coat is None or placeholder.coat_type in (None, coat)
    )


async def _fill_pet(session: AsyncSession, pet: Pet, pets: list[Pet], args: SavePetArgs) -> Any:
    """Update an existing own record in place (its appointments follow): name, details, and the
    placeholder mark cleared, since the dog now has its real name."""
    namesake = next((p for p in pets if p.id != pet.id and p.name.lower() == args.name.lower()), None)
    if namesake is not None:
        raise ToolRefusedError(
            f"Nothing saved: another of this customer's dogs is already called {namesake.name} "
            f"(pet_id {namesake.id}). Ask the customer which dog they mean."
        )
    was, was_placeholder = pet.name, pet.placeholder
    pet.name = args.name
    pet.placeholder = False
    updates = {
        "breed": args.breed,
        "size_class": args.size_class.value if args.size_class else None,
        "coat_type": args.coat_type.value if args.coat_type else None,
        "weight_kg": args.weight_kg,
        "temperament": args.temperament,
        "health_notes": args.health_notes,
        "vaccination_expires_on": args.vaccination_expires_on,
    }
    for name, value in updates.items():
        if value is not None:
            setattr(pet, name, value)
    await session.flush()
    result: dict[str, Any] = {"pet_id": pet.id, "name": pet.name, "saved": True}
    if was_placeholder:
        result["note"] = (
            f'This is the dog the booking buttons saved as "{was}": the same record, so its '
            f"appointments now show {pet.name}."
        )
    return result


async def _flag_for_groomer(session: AsyncSession, ctx: ToolContext, reason: str) -> None:
    """Mark the chat for the groomer and tell her once (not again while it is still flagged)."""
    conversation = await session.get_one(Conversation, ctx.conversation_id)
    if not conversation.needs_attention:
        conversation.needs_attention = True
        await handover_requested(session, ctx.conversation_id, reason)


def _channel(value: str) -> Channel | None:
    try:
        return Channel(value)
    except ValueError:
        return None
