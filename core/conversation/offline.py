"""The offline responder: deterministic answers and the button booking flow, with no LLM at all.

It answers when no provider is configured or all are down, and it always answers the button payloads
(core/conversation/payloads.py), whatever the LLM is doing: a tap must behave the same every time.
It greets, gives prices and hours from the catalog, walks a booking through buttons alone
(service → pet → day → time → request), lists, cancels and moves the customer's own appointments, and
otherwise tells the customer Kimmie will answer personally, flags the chat and notifies her once.

Runs inside the engine's unit of work (no network: the booking service's calendar look-ups are its own
cached, bounded calls). Every id in a payload is checked against the conversation's own client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.booking.api import BookingError, BookingService
from core.conversation import payloads as pl
from core.conversation.takeover import handover_requested
from core.db.models import Client, Conversation, utcnow
from core.previews import texts as preview_texts
from core.previews.service import Previews, is_preview_payload
from core.settings import Settings
from core.types import (
    AppointmentStatus,
    Booking,
    Channel,
    CoatType,
    OutboundMessage,
    QuickReply,
    SizeClass,
    Slot,
)

log = logging.getLogger(__name__)

DAYS_AHEAD = 21
MAX_DAYS_OFFERED = 7
MAX_TIMES_OFFERED = 12

_GREETING = re.compile(r"^\s*(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening)|yo)\b", re.I)
_PRICES = re.compile(r"\b(price|prices|cost|costs|how much|rate|rates|quote)\b", re.I)
_HOURS = re.compile(r"\b(hours|open|opening|close|closing|closed|address|where are you)\b", re.I)
_MY_BOOKINGS = re.compile(r"\b(my (booking|bookings|appointment|appointments))\b", re.I)
_BOOK = re.compile(r"\b(book|booking|appointment|slot|available|availability|schedule)\b", re.I)
# Short thanks / ok / bye (up to 20 more characters): answered kindly, not flagged for the groomer.
_THANKS = re.compile(
    r"^\W*(thanks|thank you|thx|ty|ok|okay|great|perfect|cool|awesome|bye|goodbye)\b[\W\w]{0,20}$", re.I
)
_HUMAN = re.compile(r"\b(human|person|real (person|human)|agent|someone|groomer|owner)\b", re.I)
# The answer to "what's your dog's name?": "Biscuit", "her name is Biscuit", "he's called Mr Bean".
_NAME_LEAD = re.compile(
    r"^(?:(?:his|her|its|the dog's|my dog's)\s+name\s+is|(?:he|she|it)\s*(?:'s|is)\s+called|"
    r"(?:he|she|it)\s*(?:'s|is)|it's|name's|called)\s+",
    re.I,
)
_NAME = re.compile(r"[^\W\d_](?:[^\W\d_]|[' .-]){0,29}")
# Short replies that are not a name ("not sure", "no idea", "later").
_NOT_NAMES = frozenset(
    re.split(
        r"\s+",
        "no not yes yeah nope sure what why how when where idea later dont don't i it is the a an and or "
        "please wait maybe sorry help too very really unknown",
    )
)
# conversation.state key: the placeholder pet the button flow just saved and asked the name of.
NAMING_KEY = "naming_pet"

SIZE_TITLES = {
    SizeClass.TOY: "Toy (under 5 kg)",
    SizeClass.SMALL: "Small (5-10 kg)",
    SizeClass.MEDIUM: "Medium (10-23 kg)",
    SizeClass.LARGE: "Large (23-40 kg)",
    SizeClass.GIANT: "Giant (40+ kg)",
}
COAT_TITLES = {
    CoatType.SHORT: "Short",
    CoatType.DOUBLE: "Double (husky...)",
    CoatType.CURLY: "Curly (poodle...)",
    CoatType.LONG: "Long (silky)",
    CoatType.WIRE: "Wire (terrier...)",
}


@dataclass
class Outcome:
    messages: list[OutboundMessage] = field(default_factory=list)
    handed_over: bool = False

    def say(self, text: str, replies: Sequence[QuickReply] = ()) -> Outcome:
        self.messages.append(OutboundMessage(text=text, quick_replies=_limit(replies)))
        return self


def _limit(replies: Sequence[QuickReply]) -> tuple[QuickReply, ...]:
    kept = [QuickReply(pl.title(r.title), r.payload) for r in replies if pl.fits(r.payload)]
    return tuple(kept[: pl.MAX_QUICK_REPLIES])


def money(cents: int) -> str:
    return f"${cents / 100:,.0f}" if cents % 100 == 0 else f"${cents / 100:,.2f}"


class OfflineResponder:
    def __init__(
        self,
        booking: BookingService,
        settings: Settings,
        *,
        now: Callable[[], datetime] = utcnow,
        previews: Previews | None = None,
    ) -> None:
        self.booking = booking
        # Looking Glass previews (None without FAL: no style buttons, PV: payloads get the menu).
        self.previews = previews
        self.settings = settings
        self.now = now
        self.tz = settings.tz
        self.groomer = settings.groomer_name
        self.assistant = settings.assistant_name
        self.menu = (
            QuickReply("Book", pl.BOOK),
            QuickReply("Prices", pl.PRICES),
            QuickReply("Hours", pl.HOURS),
            QuickReply("My bookings", pl.MY_BOOKINGS),
            QuickReply(f"Talk to {self.groomer}", pl.HUMAN),
        )

    # --- entry points -----------------------------------------------------------------------------
    async def respond(
        self,
        session: AsyncSession,
        conversation: Conversation,
        *,
        text: str,
        payload: str | None,
    ) -> Outcome:
        """Answer one inbound message: a button of ours, else its text."""
        if payload and pl.is_ours(payload):
            return await self.on_payload(session, conversation, payload)
        return await self.on_text(session, conversation, text)

    async def on_text(self, session: AsyncSession, conversation: Conversation, text: str) -> Outcome:
        if not text.strip() or text.startswith("[tapped a button:"):
            # A "Get started" postback, a sticker, a button we do not know: greet, do not bother Kimmie.
            return await self.greet(session, conversation)
        if _MY_BOOKINGS.search(text):
            return await self.my_bookings(session, conversation)
        if _PRICES.search(text):
            return await self.prices(session)
        if _HOURS.search(text):
            return await self.hours(session)
        if _BOOK.search(text):
            return await self.choose_service(session)
        if _HUMAN.search(text) or self.groomer.lower() in text.lower():
            return await self.handover(session, conversation, "customer asked for the groomer")
        if _GREETING.search(text):
            return await self.greet(session, conversation)
        if _THANKS.search(text):
            return Outcome().say("You're welcome! Anything else I can do?", self.menu[:4])
        named = await self._name_placeholder(session, conversation, text)
        if named is not None:
            return named
        return await self.handover(session, conversation, "assistant offline: message needs the groomer")

    async def on_payload(self, session: AsyncSession, conversation: Conversation, payload: str) -> Outcome:
        entry = {
            pl.BOOK: lambda: self.choose_service(session),
            pl.PRICES: lambda: self.prices(session),
            pl.HOURS: lambda: self.hours(session),
            pl.MY_BOOKINGS: lambda: self.my_bookings(session, conversation),
            pl.HUMAN: lambda: self.handover(session, conversation, "customer asked for the groomer"),
            pl.MENU: lambda: self.greet(session, conversation),
        }.get(payload)
        if entry is not None:
            return await entry()
        if self.previews is not None and is_preview_payload(payload):
            return await self.preview_step(session, conversation, payload)
        step = pl.parse_book(payload)
        if step is not None:
            return await self.book_step(session, conversation, step)
        appt = pl.parse_appointment(payload)
        if appt is not None:
            return await self.appointment_step(session, conversation, appt)
        return await self.booking_service_payload(session, conversation, payload)

    async def preview_step(self, session: AsyncSession, conversation: Conversation, payload: str) -> Outcome:
        """A style button (the preview is queued), or "Book this style": on to the days for that dog,
        the request carrying the style and the preview."""
        assert self.previews is not None
        answer = await self.previews.on_payload(session, conversation, payload)
        if isinstance(answer, OutboundMessage):
            return Outcome([answer])
        pet_id, _design_id, style = answer
        services = [s for s in await self.booking.list_services(session) if not s.is_addon]
        if not services:
            return await self.handover(session, conversation, "booking a previewed style: no service")
        service = services[0].code  # the full groom: what a styled cut is
        outcome = await self._days(
            session,
            conversation.client_id,
            service,
            [pet_id],
            lambda d: pl.book(service, pet_id=pet_id, day=d),
        )
        outcome.messages.insert(
            0, OutboundMessage(preview_texts.BOOKING_WITH_STYLE.format(style=style, pet="your dog"))
        )
        return outcome

    # --- simple answers ---------------------------------------------------------------------------
    async def greet(self, session: AsyncSession, conversation: Conversation) -> Outcome:
        client = await session.get(Client, conversation.client_id)
        name = f" {client.name.split()[0]}" if client is not None and client.name else ""
        info = await self.booking.business_info(session)
        return Outcome().say(
            f"Hi{name}! I'm {self.assistant}, the automated assistant of {info.name}. "
            f"I can show prices and hours and book a visit with {self.groomer}. What would you like?",
            self.menu,
        )

    async def prices(self, session: AsyncSession) -> Outcome:
        lines = []
        for service in await self.booking.list_services(session):
            try:
                quote = await self.booking.quote(session, service_code=service.code)
            except BookingError:
                continue
            price = money(quote.price_min_cents)
            if quote.price_max_cents != quote.price_min_cents:
                price += f"-{money(quote.price_max_cents)}"
            kind = " (add-on)" if service.is_addon else ""
            lines.append(f"• {service.name}{kind}: {price}")
        if not lines:
            return Outcome().say(
                f"{self.groomer} hasn't published prices here yet and will tell you personally."
            )
        text = "Prices depend on size and coat:\n" + "\n".join(lines)
        return Outcome().say(text, (QuickReply("Book a visit", pl.BOOK), QuickReply("Hours", pl.HOURS)))

    async def hours(self, session: AsyncSession) -> Outcome:
        info = await self.booking.business_info(session)
        lines = [f"Opening hours ({info.timezone}):", *info.hours]
        if info.address:
            lines.append(f"Address: {info.address}")
        if info.phone:
            lines.append(f"Phone: {info.phone}")
        return Outcome().say(
            "\n".join(lines), (QuickReply("Book a visit", pl.BOOK), QuickReply("Prices", pl.PRICES))
        )

    async def handover(self, session: AsyncSession, conversation: Conversation, reason: str) -> Outcome:
        """Flag the chat for Kimmie and notify her, once until she deals with it."""
        if not conversation.needs_attention:
            conversation.needs_attention = True
            await handover_requested(session, conversation.id, reason)
        outcome = Outcome(handed_over=True)
        return outcome.say(
            f"Thanks! {self.groomer} will answer you personally as soon as possible. "
            "Meanwhile I can show prices, hours or free times.",
            self.menu[:4],
        )

    # --- booking flow -----------------------------------------------------------------------------
    async def choose_service(self, session: AsyncSession) -> Outcome:
        services = [s for s in await self.booking.list_services(session) if not s.is_addon]
        replies = [QuickReply(s.name, pl.book(s.code)) for s in services]
        if not replies:
            return Outcome().say(f"Booking isn't open yet. {self.groomer} will help you personally.")
        return Outcome().say("Which service would you like?", replies)

    async def book_step(
        self, session: AsyncSession, conversation: Conversation, step: pl.BookStep
    ) -> Outcome:
        services = {s.code: s for s in await self.booking.list_services(session)}
        service = services.get(step.service)
        if service is None or service.is_addon:
            return (await self.choose_service(session)).say("That service isn't offered any more.")
        client_id = conversation.client_id
        if step.new_pet:
            return await self._new_pet_step(session, conversation, step)
        if step.pet_id is None:
            pets = await customers.pets_of(session, client_id)
            replies = [QuickReply(p.name, pl.book(step.service, pet_id=p.id)) for p in pets[:11]]
            replies.append(QuickReply("Another dog", pl.book(step.service, new_pet=True)))
            return Outcome().say(f"{service.name}: for which dog?", replies)
        if not await customers.own_pets(session, client_id, [step.pet_id]):
            return Outcome().say(
                "I can't find that dog on your profile.", [QuickReply("Start again", pl.BOOK)]
            )
        if step.start is not None:
            return await self._request(session, conversation, step.service, step.pet_id, step.start)
        if step.day is not None:
            return await self._times(
                session,
                client_id,
                step.service,
                [step.pet_id],
                step.day,
                lambda t: pl.book(step.service, pet_id=step.pet_id, start=t),
                back=pl.book(step.service, pet_id=step.pet_id),
            )
        return await self._days(
            session,
            client_id,
            step.service,
            [step.pet_id],
            lambda d: pl.book(step.service, pet_id=step.pet_id, day=d),
        )

    async def _new_pet_step(
        self, session: AsyncSession, conversation: Conversation, step: pl.BookStep
    ) -> Outcome:
        if step.size is None:
            replies = [
                QuickReply(t, pl.book(step.service, new_pet=True, size=s.value))
                for s, t in SIZE_TITLES.items()
            ]
            return Outcome().say("How big is your dog?", replies)
        try:
            size = SizeClass(step.size)
        except ValueError:
            return Outcome().say("Please pick a size.", [QuickReply("Start again", pl.BOOK)])
        if step.coat is None:
            replies = [
                QuickReply(t, pl.book(step.service, new_pet=True, size=size.value, coat=c.value))
                for c, t in COAT_TITLES.items()
            ]
            return Outcome().say("And the coat?", replies)
        try:
            coat = CoatType(step.coat)
        except ValueError:
            return Outcome().say("Please pick a coat.", [QuickReply("Start again", pl.BOOK)])
        name = await self._free_pet_name(session, conversation.client_id)
        pet = await customers.save_pet(
            session, client_id=conversation.client_id, name=name, size_class=size, coat_type=coat
        )
        # Marked, not guessed from "Dog N": the assistant's save_pet fills this record in later.
        pet.placeholder = True
        conversation.state = {**(conversation.state or {}), NAMING_KEY: pet.id}
        outcome = await self._days(
            session,
            conversation.client_id,
            step.service,
            [pet.id],
            lambda d: pl.book(step.service, pet_id=pet.id, day=d),
        )
        outcome.messages.insert(
            0,
            OutboundMessage(
                f'Noted: a {size.value} dog with a {coat.value} coat, saved as "{name}" for now. '
                "What's your dog's name? Type it any time."
            ),
        )
        return outcome

    async def _name_placeholder(
        self, session: AsyncSession, conversation: Conversation, text: str
    ) -> Outcome | None:
        """A short name typed after the button flow asked for it renames that placeholder dog."""
        state = dict(conversation.state or {})
        pet_id = state.get(NAMING_KEY)
        if not isinstance(pet_id, int):
            return None
        name = _NAME_LEAD.sub("", text.strip().rstrip(".!")).strip()
        words = name.lower().split()
        if not _NAME.fullmatch(name) or len(words) > 3 or _NOT_NAMES.intersection(words):
            return None
        owned = await customers.own_pets(session, conversation.client_id, [pet_id])
        state.pop(NAMING_KEY)
        conversation.state = state
        if not owned or not owned[0].placeholder:
            return None  # named another way meanwhile (the assistant, or Kimmie)
        taken = {p.name.lower() for p in await customers.pets_of(session, conversation.client_id)}
        if name.lower() in taken:
            return None
        owned[0].name = name[:1].upper() + name[1:]
        owned[0].placeholder = False
        return Outcome().say(f"Thanks! {owned[0].name} it is.", self.menu[:4])

    @staticmethod
    async def _free_pet_name(session: AsyncSession, client_id: int) -> str:
        taken = {p.name.lower() for p in await customers.pets_of(session, client_id)}
        n = 1
        while f"dog {n}" in taken:
            n += 1
        return f"Dog {n}"

    async def _slots(
        self,
        session: AsyncSession,
        client_id: int,
        service: str,
        pet_ids: list[int],
        first: date,
        last: date,
        limit: int,
    ) -> list[Slot]:
        return await self.booking.find_slots(
            session,
            service_code=service,
            pet_ids=pet_ids,
            client_id=client_id,
            date_from=first,
            date_to=last,
            limit=limit,
        )

    async def _days(
        self,
        session: AsyncSession,
        client_id: int,
        service: str,
        pet_ids: list[int],
        payload_for: Callable[[date], str],
    ) -> Outcome:
        today = self.now().astimezone(self.tz).date()
        try:
            slots = await self._slots(
                session, client_id, service, pet_ids, today, today + timedelta(days=DAYS_AHEAD), 200
            )
        except BookingError as exc:
            return Outcome().say(str(exc), [QuickReply(f"Talk to {self.groomer}", pl.HUMAN)])
        days = sorted({s.start.astimezone(self.tz).date() for s in slots})[:MAX_DAYS_OFFERED]
        if not days:
            return Outcome().say(
                f"I see no free time in the next {DAYS_AHEAD} days. {self.groomer} can look for you.",
                [QuickReply(f"Talk to {self.groomer}", pl.HUMAN)],
            )
        replies = [QuickReply(f"{d:%a %b} {d.day}", payload_for(d)) for d in days]
        return Outcome().say("Which day suits you? These have free time:", replies)

    async def _times(
        self,
        session: AsyncSession,
        client_id: int,
        service: str,
        pet_ids: list[int],
        day: date,
        payload_for: Callable[[datetime], str],
        back: str,
    ) -> Outcome:
        try:
            slots = await self._slots(session, client_id, service, pet_ids, day, day, MAX_TIMES_OFFERED)
        except BookingError as exc:
            return Outcome().say(str(exc), [QuickReply("Other days", back)])
        if not slots:
            return Outcome().say("That day just filled up. Another day?", [QuickReply("Other days", back)])
        replies = [
            QuickReply(self.clock(s.start), payload_for(s.start)) for s in slots[: pl.MAX_QUICK_REPLIES - 1]
        ]
        replies.append(QuickReply("Other days", back))
        return Outcome().say(f"Free times on {day:%A %b} {day.day}:", replies)

    async def _request(
        self, session: AsyncSession, conversation: Conversation, service: str, pet_id: int, start: datetime
    ) -> Outcome:
        for existing in await self.booking.my_appointments(session, client_id=conversation.client_id):
            if existing.start == start and existing.service_code == service and pet_id in existing.pet_ids:
                # A second tap on the same button: the request is already with the groomer.
                return Outcome().say(
                    f"That one is already requested ({self.when(existing.start)}): {existing.status.value}.",
                    [QuickReply("My bookings", pl.MY_BOOKINGS)],
                )
        note = await self.previews.booking_note(session, conversation, pet_id) if self.previews else None
        try:
            booking = await self.booking.request_booking(
                session,
                client_id=conversation.client_id,
                service_code=service,
                pet_ids=[pet_id],
                start=start,
                source_channel=_channel(conversation.channel),
                notes=note,
            )
        except BookingError as exc:
            return Outcome().say(str(exc), [QuickReply("Other times", pl.book(service, pet_id=pet_id))])
        if self.previews is not None and note is not None:
            await self.previews.attach_to_booking(session, conversation, appointment_id=booking.id)
        return Outcome().say(
            f"Request sent! {booking.service_name} for {', '.join(booking.pet_names) or 'your dog'} on "
            f"{self.when(booking.start)}. {self.groomer} will confirm shortly; "
            "the time is held for you meanwhile.",
            [QuickReply("My bookings", pl.MY_BOOKINGS)],
        )

    # --- own appointments -------------------------------------------------------------------------
    async def my_bookings(self, session: AsyncSession, conversation: Conversation) -> Outcome:
        bookings = await self.booking.my_appointments(session, client_id=conversation.client_id)
        if not bookings:
            return Outcome().say("You have no upcoming appointments.", [QuickReply("Book a visit", pl.BOOK)])
        lines, replies = [], []
        for b in bookings[:6]:
            pets = f" for {', '.join(b.pet_names)}" if b.pet_names else ""
            lines.append(f"#{b.id} {b.service_name}{pets}, {self.when(b.start)}: {b.status.value}")
            replies += [
                QuickReply(f"Move #{b.id}", pl.move(b.id)),
                QuickReply(f"Cancel #{b.id}", pl.cancel(b.id)),
            ]
        return Outcome().say("Your appointments:\n" + "\n".join(lines), replies)

    async def _own_booking(
        self, session: AsyncSession, conversation: Conversation, appointment_id: int
    ) -> Booking | None:
        try:
            booking = await self.booking.get_booking(session, appointment_id)
        except BookingError:
            return None
        return booking if booking.client_id == conversation.client_id else None

    async def appointment_step(
        self, session: AsyncSession, conversation: Conversation, step: pl.AppointmentStep
    ) -> Outcome:
        booking = await self._own_booking(session, conversation, step.appointment_id)
        if booking is None:
            return Outcome().say(
                "I can't find that appointment.", [QuickReply("My bookings", pl.MY_BOOKINGS)]
            )
        client_id = conversation.client_id
        if step.action == "cancel":
            if not step.confirmed:
                return Outcome().say(
                    f"Cancel {booking.service_name} on {self.when(booking.start)}?",
                    [
                        QuickReply("Yes, cancel", pl.cancel(booking.id, confirmed=True)),
                        QuickReply("Keep it", pl.MY_BOOKINGS),
                    ],
                )
            try:
                await self.booking.cancel(session, appointment_id=booking.id, client_id=client_id)
            except BookingError as exc:
                return Outcome().say(str(exc), [QuickReply(f"Talk to {self.groomer}", pl.HUMAN)])
            return Outcome().say(
                "Cancelled. Hope to see you another time!", [QuickReply("Book again", pl.BOOK)]
            )
        if step.start is not None:
            try:
                moved = await self.booking.reschedule(
                    session, appointment_id=booking.id, new_start=step.start, client_id=client_id
                )
            except BookingError as exc:
                return Outcome().say(str(exc), [QuickReply("Other times", pl.move(booking.id))])
            return Outcome().say(f"Done: moved to {self.when(moved.start)} ({moved.status.value}).")
        pet_ids = list(booking.pet_ids)
        if step.day is not None:
            return await self._times(
                session,
                client_id,
                booking.service_code,
                pet_ids,
                step.day,
                lambda t: pl.move(booking.id, start=t),
                back=pl.move(booking.id),
            )
        return await self._days(
            session, client_id, booking.service_code, pet_ids, lambda d: pl.move(booking.id, day=d)
        )

    async def booking_service_payload(
        self, session: AsyncSession, conversation: Conversation, payload: str
    ) -> Outcome:
        """Buttons the booking service puts on reminders and declines (core/booking/payloads.py)."""
        head, _, rest = payload.partition(":")
        parts = rest.split(":")
        try:
            appointment_id = int(parts[0])
        except ValueError:
            return await self.greet(session, conversation)
        if head == "APPT_OK":
            return Outcome().say("Thanks for confirming! See you then.")
        if head == "APPT_CANCEL":
            return await self.appointment_step(
                session, conversation, pl.AppointmentStep("cancel", appointment_id)
            )
        if head == "APPT_MOVE":
            return await self.appointment_step(
                session, conversation, pl.AppointmentStep("move", appointment_id)
            )
        if head == "ALT" and len(parts) == 2:
            request_alternative = getattr(self.booking, "request_alternative", None)
            if request_alternative is None:
                return await self.handover(session, conversation, "customer picked an alternative time")
            try:
                start = pl.parse_ts("t" + parts[1])
                booking = await request_alternative(
                    session,
                    client_id=conversation.client_id,
                    appointment_id=appointment_id,
                    start=start,
                    source_channel=_channel(conversation.channel),
                )
            except (BookingError, ValueError) as exc:
                return Outcome().say(str(exc), [QuickReply("Book", pl.BOOK)])
            if booking.status == AppointmentStatus.CONFIRMED:
                # The time Kimmie offered: confirmed at once; the confirmation follows from the event.
                return Outcome().say(
                    f"{self.when(booking.start)} it is!", [QuickReply("My bookings", pl.MY_BOOKINGS)]
                )
            return Outcome().say(
                f"Request sent for {self.when(booking.start)}. {self.groomer} will confirm shortly.",
                [QuickReply("My bookings", pl.MY_BOOKINGS)],
            )
        return await self.greet(session, conversation)

    # --- formatting -------------------------------------------------------------------------------
    def clock(self, moment: datetime) -> str:
        local = moment.astimezone(self.tz)
        return f"{local:%I:%M %p}".lstrip("0")

    def when(self, moment: datetime) -> str:
        local = moment.astimezone(self.tz)
        return f"{local:%a %b} {local.day} at {self.clock(moment)}"


def _channel(value: str) -> Channel | None:
    try:
        return Channel(value)
    except ValueError:
        return None
