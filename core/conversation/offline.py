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
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.booking.api import BookingError, BookingService
from core.booking.reach_jobs import mark_confirmed
from core.conversation import payloads as pl
from core.conversation.takeover import handover_requested
from core.conversation.tools import ContactLinks
from core.db.models import Appointment, AppointmentPet, Client, Conversation, Pet, Service, utcnow
from core.previews import texts as preview_texts
from core.previews.service import Previews, is_preview_payload
from core.reach import ReachPolicy, has_lasting_route
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
# conversation.state keys: the request waiting for the answers asked before filing it, and which
# question is open ("pet_name", "client_name" or "contact").
PENDING_KEY = "pending_request"
ASKING_KEY = "asking"
_EMAIL = re.compile(r"^[^@\s<>(),;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_PERSON = re.compile(
    r"^(?:(?:my name is|i am|i'm|it's|this is|name's)\s+)?(?P<name>[^\W\d_](?:[^\W\d_]|[' .-]){0,59})$", re.I
)

ASK_PET_NAME = "Before I send the request: what's your dog's name?"
ASK_CLIENT_NAME = "And your name, please? (So {groomer} knows who's coming.)"
ASK_CONTACT = (
    "Last step: how can we reach you with a reminder the day before? Messages here may not reach you "
    "by then. Type your e-mail address{link}, or tap Skip."
)
CONTACT_LINK = ", or open this link to get it on Telegram: {url}"


@dataclass(frozen=True, slots=True)
class Pending:
    """A request the customer chose, waiting for the answers asked before it is filed."""

    service: str
    pet_id: int
    start: datetime
    addons: tuple[str, ...] = ()
    notes: str | None = None

    def dump(self) -> dict[str, object]:
        return {
            "service": self.service,
            "pet_id": self.pet_id,
            "start": self.start.isoformat(),
            "addons": list(self.addons),
            "notes": self.notes,
        }

    @classmethod
    def load(cls, data: object) -> Pending | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                service=str(data["service"]),
                pet_id=int(data["pet_id"]),
                start=datetime.fromisoformat(str(data["start"])),
                addons=tuple(str(a) for a in data.get("addons") or ()),
                notes=str(data["notes"]) if data.get("notes") else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


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
        reach: ReachPolicy | None = None,
        contact_links: ContactLinks | None = None,
    ) -> None:
        self.booking = booking
        # Looking Glass previews (None without FAL: no style buttons, PV: payloads get the menu).
        self.previews = previews
        self.reach = reach or ReachPolicy()
        self.contact_links = contact_links
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
        answered = await self._answer(session, conversation, text)
        if answered is not None:
            return answered
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
            return await self.choose_service(session, conversation)
        if _HUMAN.search(text) or self.groomer.lower() in text.lower():
            return await self.handover(session, conversation, "customer asked for the groomer")
        if _GREETING.search(text):
            return await self.greet(session, conversation)
        if _THANKS.search(text):
            return Outcome().say("You're welcome! Anything else I can do?", self.menu[:4])
        if _EMAIL.match(text.strip()):  # e.g. after a confirmation that had no way to remind them
            return await self._save_email(session, conversation, text.strip(), then=None)
        named = await self._name_placeholder(session, conversation, text)
        if named is not None:
            return named
        return await self.handover(session, conversation, "assistant offline: message needs the groomer")

    async def on_payload(self, session: AsyncSession, conversation: Conversation, payload: str) -> Outcome:
        entry = {
            pl.BOOK: lambda: self.choose_service(session, conversation),
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
        again = pl.parse_again(payload)
        if again is not None:
            return await self.same_again(session, conversation, again)
        if payload in (pl.CONTACT_SKIP, pl.CONTACT_DONE):
            return await self._file_pending(session, conversation)
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
        last = await self._last_visit(session, conversation.client_id)
        again = [QuickReply("Same again", pl.again(last.id))] if last is not None else []
        return Outcome().say(
            f"Hi{name}! I'm {self.assistant}, the automated assistant of {info.name}. "
            f"I can show prices and hours and book a visit with {self.groomer}. What would you like?",
            [*again, *self.menu],
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
    async def choose_service(
        self, session: AsyncSession, conversation: Conversation | None = None
    ) -> Outcome:
        services = [s for s in await self.booking.list_services(session) if not s.is_addon]
        replies = [QuickReply(s.name, pl.book(s.code)) for s in services]
        if not replies:
            return Outcome().say(f"Booking isn't open yet. {self.groomer} will help you personally.")
        if len(services) == 1 and conversation is not None:  # one answer: no question
            return await self.book_step(session, conversation, pl.BookStep(services[0].code))
        if conversation is not None:
            last = await self._last_visit(session, conversation.client_id)
            if last is not None:
                replies.insert(0, QuickReply("Same again", pl.again(last.id)))
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
            if not pets:  # "Another dog" to a customer with none: the one answer, taken
                return await self._new_pet_step(session, conversation, replace(step, new_pet=True))
            replies = [QuickReply(p.name, pl.book(step.service, pet_id=p.id)) for p in pets[:11]]
            replies.append(QuickReply("Another dog", pl.book(step.service, new_pet=True)))
            return Outcome().say(f"{service.name}: for which dog?", replies)
        if not await customers.own_pets(session, client_id, [step.pet_id]):
            return Outcome().say(
                "I can't find that dog on your profile.", [QuickReply("Start again", pl.BOOK)]
            )
        if step.start is not None:
            return await self._before_filing(
                session, conversation, Pending(step.service, step.pet_id, step.start)
            )
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
                f"Noted: a {size.value} dog with a {coat.value} coat. What's your dog's name? "
                "Type it any time."
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

    async def _request(self, session: AsyncSession, conversation: Conversation, pending: Pending) -> Outcome:
        service, pet_id, start = pending.service, pending.pet_id, pending.start
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
                addon_codes=pending.addons,
                # The preview's note (Looking Glass) wins; else the visit repeated ("same again").
                notes=note or pending.notes,
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

    # --- before filing: the dog's name, the customer's name, a way to reach them later -----------
    async def _before_filing(
        self, session: AsyncSession, conversation: Conversation, pending: Pending
    ) -> Outcome:
        """Ask what the request still lacks, one question at a time; file it when nothing is missing.
        Kimmie's card never says "Dog 1" or "(no name)", and the customer is asked once for a route a
        reminder can take when none would reach them (the contact step, one tap to skip)."""
        asking = await self._missing(session, conversation, pending)
        state = dict(conversation.state or {})
        if asking is None:
            state.pop(PENDING_KEY, None)
            state.pop(ASKING_KEY, None)
            conversation.state = state
            return await self._request(session, conversation, pending)
        conversation.state = {**state, PENDING_KEY: pending.dump(), ASKING_KEY: asking}
        if asking == "pet_name":
            return Outcome().say(ASK_PET_NAME)
        if asking == "client_name":
            return Outcome().say(ASK_CLIENT_NAME.format(groomer=self.groomer))
        links = dict(self.contact_links(conversation.client_id)) if self.contact_links else {}
        url = links.get("telegram")
        link = CONTACT_LINK.format(url=url) if url else ""
        buttons = [QuickReply("Skip", pl.CONTACT_SKIP)]
        if url:
            buttons.insert(0, QuickReply("Done on Telegram", pl.CONTACT_DONE))
        return Outcome().say(ASK_CONTACT.format(link=link), buttons)

    @staticmethod
    def asking(conversation: Conversation) -> bool:
        """A question of the button flow's is open: the customer's next text answers it."""
        state = conversation.state or {}
        return bool(state.get(ASKING_KEY)) and Pending.load(state.get(PENDING_KEY)) is not None

    async def _missing(
        self, session: AsyncSession, conversation: Conversation, pending: Pending
    ) -> str | None:
        state = conversation.state or {}
        pets = await customers.own_pets(session, conversation.client_id, [pending.pet_id])
        if pets and pets[0].placeholder:
            return "pet_name"
        client = await session.get_one(Client, conversation.client_id)
        if not (client.name or "").strip():
            return "client_name"
        if state.get(ASKING_KEY) == "contact" or state.get("contact_asked"):
            return None  # asked once already (skipped, or answered): not again for this request
        if self.reach.lasting(conversation.channel) or await has_lasting_route(
            session, conversation.client_id, self.reach
        ):
            return None
        return "contact"

    async def _answer(self, session: AsyncSession, conversation: Conversation, text: str) -> Outcome | None:
        """A typed answer to the question asked before filing; None when none is open."""
        state = dict(conversation.state or {})
        asking = state.get(ASKING_KEY)
        pending = Pending.load(state.get(PENDING_KEY))
        if asking is None or pending is None:
            return None
        text = text.strip().rstrip(".!")
        if asking == "pet_name":
            pets = await customers.own_pets(session, conversation.client_id, [pending.pet_id])
            name = _NAME_LEAD.sub("", text).strip()
            words = name.lower().split()
            if not pets or not _NAME.fullmatch(name) or len(words) > 3 or _NOT_NAMES.intersection(words):
                return Outcome().say("Sorry, I didn't catch that. " + ASK_PET_NAME)
            taken = {p.name.lower() for p in await customers.pets_of(session, conversation.client_id)}
            if name.lower() in taken:
                return Outcome().say(f"You already have a dog called {name}. " + ASK_PET_NAME)
            pets[0].name = name[:1].upper() + name[1:]
            pets[0].placeholder = False
            state.pop(NAMING_KEY, None)
            conversation.state = state
        elif asking == "client_name":
            match = _PERSON.match(text)
            words = match.group("name").lower().split() if match else []
            if match is None or len(words) > 4 or _NOT_NAMES.intersection(words):
                return Outcome().say(
                    "Sorry, I didn't catch that. " + ASK_CLIENT_NAME.format(groomer=self.groomer)
                )
            client = await session.get_one(Client, conversation.client_id)
            client.name = match.group("name").strip().title()
            await customers.client_updated(session, client, ["name"])
        elif _EMAIL.match(text):
            return await self._save_email(session, conversation, text, then=pending)
        else:
            return Outcome().say(
                "That doesn't look like an e-mail address. Type it again, or tap Skip.",
                [QuickReply("Skip", pl.CONTACT_SKIP)],
            )
        return await self._before_filing(session, conversation, pending)

    async def _save_email(
        self, session: AsyncSession, conversation: Conversation, email: str, *, then: Pending | None
    ) -> Outcome:
        try:
            async with session.begin_nested():
                await customers.save_contact(session, client_id=conversation.client_id, email=email)
            saved = f"Thanks! Reminders will reach you at {customers.normalize_email(email)}."
        except customers.ContactConflictError:
            await self.handover(session, conversation, "a customer gave an e-mail already on another client")
            saved = f"I couldn't save that address here; {self.groomer} will check it."
        if then is None:
            return Outcome().say(saved, self.menu[:4])
        conversation.state = {**(conversation.state or {}), "contact_asked": True}
        outcome = await self._before_filing(session, conversation, then)
        outcome.messages.insert(0, OutboundMessage(saved))
        return outcome

    async def _file_pending(self, session: AsyncSession, conversation: Conversation) -> Outcome:
        """ "Skip" (or "Done on Telegram") on the contact step: file the waiting request."""
        state = dict(conversation.state or {})
        pending = Pending.load(state.get(PENDING_KEY))
        if pending is None:
            return await self.greet(session, conversation)
        conversation.state = {**state, "contact_asked": True}
        return await self._before_filing(session, conversation, pending)

    # --- same again: last visit's dog, service and style ------------------------------------------
    async def _last_visit(self, session: AsyncSession, client_id: int) -> Appointment | None:
        rows = await session.execute(
            select(Appointment)
            .where(Appointment.client_id == client_id, Appointment.status.in_(("completed", "confirmed")))
            .order_by(Appointment.start_at.desc())
            .limit(1)
        )
        return rows.scalars().first()

    async def same_again(
        self, session: AsyncSession, conversation: Conversation, step: pl.AgainStep
    ) -> Outcome:
        appt = await session.get(Appointment, step.appointment_id)
        if appt is None or appt.client_id != conversation.client_id:
            return Outcome().say("I can't find that visit.", [QuickReply("Book", pl.BOOK)])
        service = await session.get_one(Service, appt.service_id)
        pet_ids = [p.id for p in await appointment_pets(session, appt.id)]
        if not service.active or not pet_ids:
            return await self.choose_service(session, conversation)
        if step.start is not None:
            notes = appt.notes
            pending = Pending(service.code, pet_ids[0], step.start, tuple(appt.addon_codes or ()), notes)
            return await self._before_filing(session, conversation, pending)
        if step.day is not None:
            return await self._times(
                session,
                conversation.client_id,
                service.code,
                pet_ids[:1],
                step.day,
                lambda t: pl.again(appt.id, start=t),
                back=pl.again(appt.id),
            )
        outcome = await self._days(
            session, conversation.client_id, service.code, pet_ids[:1], lambda d: pl.again(appt.id, day=d)
        )
        pets = await customers.own_pets(session, conversation.client_id, pet_ids[:1])
        outcome.messages.insert(
            0, OutboundMessage(f"{service.name} for {pets[0].name if pets else 'your dog'}, as last time.")
        )
        return outcome

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
            if await self._own_booking(session, conversation, appointment_id) is not None:
                await mark_confirmed(session, appointment_id)  # off Kimmie's list of unreached visits
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


async def appointment_pets(session: AsyncSession, appointment_id: int) -> list[Pet]:
    rows = await session.execute(
        select(Pet)
        .join(AppointmentPet, AppointmentPet.pet_id == Pet.id)
        .where(AppointmentPet.appointment_id == appointment_id)
        .order_by(Pet.id)
    )
    return list(rows.scalars())
