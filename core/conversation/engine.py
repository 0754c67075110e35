"""The conversation engine: one inbound message in, replies and actions out, on every channel.

`process(message_id, conversation_id)` is the `process_message` job (queued by ingest with the queue key
"conversation:<id>", so one customer's messages run strictly one at a time, in order). Three steps, and
no database transaction is held across an LLM call:

1. read (one short transaction): the conversation and the message; stop if it was handled already or
   Kimmie holds the chat (an idle takeover is released first); button payloads and "no LLM configured"
   are answered right here by the offline responder; otherwise build the prompt and the history.
2. model (no transaction): the provider chain with the tools, in a loop bounded by
   `llm_max_tool_rounds` and the turn deadline `llm_turn_deadline_s`. Each tool call is its own short
   transaction.
3. write (one short transaction): alerts for configuration faults (deduplicated: once per fault), the
   reply through the outbox with its token usage, or — when every provider failed — the offline
   responder's answer and a flag for Kimmie.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from core import customers
from core.alerts import raise_alert
from core.booking.api import BookingService
from core.conversation import memory
from core.conversation import payloads as pl
from core.conversation.ingest import PROCESS_JOB, ProcessMessagePayload
from core.conversation.offline import OfflineResponder
from core.conversation.prompt import context_prompt, stable_prompt
from core.conversation.summarize import register_summary_job
from core.conversation.takeover import handover_requested, is_active, release_if_idle, takeover_active
from core.conversation.tools import ContactLinks, ToolBox, ToolContext
from core.db.database import Database
from core.db.models import ChannelIdentity, Client, Conversation, Message, utcnow
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry
from core.llm.types import (
    AllProvidersFailedError,
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    ProviderError,
    ProviderFault,
    SystemPrompt,
    ToolResult,
    Usage,
)
from core.outbox import queue_outbound
from core.profiles import queue_profile_lookup
from core.settings import Settings
from core.types import OutboundMessage, QuickReply

log = logging.getLogger(__name__)

STABLE_PROMPT_TTL_S = 60.0
MAX_SLOT_BUTTONS = 6
GAVE_UP_TEXT = "Sorry, I couldn't finish that just now. {groomer} will follow up with you personally."
HANDLED_KEY = "handled_up_to"


@dataclass
class TurnResult:
    status: Literal["skipped", "silent", "offline", "llm", "fallback"]
    message_ids: list[int] = field(default_factory=list)


@dataclass
class _Prepared:
    request: ChatRequest
    ctx: ToolContext
    inbound_text: str
    state: dict[str, Any]


@dataclass
class _Turn:
    texts: list[str]
    usage: Usage
    last: ChatResponse
    faults: list[ProviderFault]
    gave_up: bool


class ConversationEngine:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        booking: BookingService,
        model: ChatModel | None,
        offline: OfflineResponder | None = None,
        contact_links: ContactLinks | None = None,
        now: Callable[[], Any] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.booking = booking
        self.model = model
        self.now = now
        self.offline = offline or OfflineResponder(booking, settings, now=now)
        self.toolbox = ToolBox(booking, settings.tz, contact_links=contact_links)
        self._stable: tuple[float, str] | None = None
        self.gave_up_text = GAVE_UP_TEXT.format(groomer=settings.groomer_name)

    # --- the job ----------------------------------------------------------------------------------
    async def process(self, message_id: int, conversation_id: int) -> TurnResult:
        async with self.db.transaction() as session:
            # One round trip for the rows every turn needs.
            query = (
                select(Conversation, Message, Client, ChannelIdentity.display_name)
                .join(Message, Message.conversation_id == Conversation.id)
                .join(Client, Client.id == Conversation.client_id)
                .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
                .where(Conversation.id == conversation_id, Message.id == message_id)
                .options(joinedload(Client.pets))  # the dogs, in the same round trip
            )
            found = (await session.execute(query)).unique().one_or_none()
            if found is None:
                return TurnResult("skipped")
            conversation, inbound, client, display_name = found
            if int((conversation.state or {}).get(HANDLED_KEY, 0)) >= message_id:
                return TurnResult("skipped")  # a re-run after the reply was already written
            # A customer known by id only (Messenger, Instagram): core/profiles.py asks for the name.
            await queue_profile_lookup(session, conversation, display_name)
            release_if_idle(conversation, idle_hours=self.settings.takeover_idle_hours)
            if conversation.human_takeover:
                _mark(conversation, message_id)
                return TurnResult("silent")
            if self.model is None or pl.is_ours(inbound.payload):
                outcome = await self.offline.respond(
                    session, conversation, text=inbound.text or "", payload=inbound.payload
                )
                ids = await self._store(session, conversation.id, conversation.channel, outcome.messages)
                _mark(conversation, message_id)
                return TurnResult("offline", ids)
            prepared = await self._prepare(session, conversation, inbound, client)

        turn: _Turn | None = None
        faults: list[ProviderFault] = []
        try:
            turn = await self._run_model(prepared)
            faults = turn.faults
        except AllProvidersFailedError as exc:
            faults = exc.faults
            log.warning("every llm provider failed (%s); offline responder answers", exc)

        async with self.db.transaction() as session:
            await self._alert(session, faults)
            if turn is None:
                return await self._fallback(session, conversation_id, message_id, prepared)
            # Mark the message handled and read the takeover flags in one statement.
            flags = (
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id)
                    .values(state={**prepared.state, HANDLED_KEY: message_id})
                    .returning(
                        Conversation.human_takeover, Conversation.takeover_at, Conversation.needs_attention
                    )
                )
            ).one()
            idle_hours = self.settings.takeover_idle_hours
            if is_active(flags.human_takeover, flags.takeover_at, idle_hours=idle_hours):
                return TurnResult("silent")  # Kimmie took over while the model was thinking
            if turn.gave_up and not flags.needs_attention:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id)
                    .values(needs_attention=True)
                )
                await handover_requested(
                    session,
                    conversation_id,
                    "assistant gave up (tool round limit or deadline)",
                )
            reply = self._reply(turn, prepared.ctx)
            usage = turn.usage
            ids = await self._store(
                session,
                conversation_id,
                prepared.ctx.channel,
                [reply],
                llm_usage={
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_input_tokens": usage.cache_read_input_tokens,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                    "llm_provider": turn.last.provider,
                    "llm_model": turn.last.model,
                },
            )
            return TurnResult("llm", ids)

    async def _fallback(
        self, session: AsyncSession, conversation_id: int, message_id: int, prepared: _Prepared
    ) -> TurnResult:
        """Every provider failed: the offline responder answers and Kimmie hears of the chat once."""
        conversation = await session.get_one(Conversation, conversation_id)
        _mark(conversation, message_id)
        if takeover_active(conversation, idle_hours=self.settings.takeover_idle_hours):
            return TurnResult("silent")
        outcome = await self.offline.on_text(session, conversation, prepared.inbound_text)
        if not conversation.needs_attention:
            conversation.needs_attention = True
            await handover_requested(
                session,
                conversation.id,
                "assistant unavailable (every LLM provider failed)",
            )
        ids = await self._store(session, conversation.id, conversation.channel, outcome.messages)
        return TurnResult("fallback", ids)

    # --- step 1: the prompt -----------------------------------------------------------------------
    async def _stable_prompt(self, session: AsyncSession) -> str:
        now = time.monotonic()
        if self._stable is not None and now - self._stable[0] < STABLE_PROMPT_TTL_S:
            return self._stable[1]
        info = await self.booking.business_info(session)
        services = await self.booking.list_services(session)
        text = stable_prompt(
            info, services, assistant=self.settings.assistant_name, groomer=self.settings.groomer_name
        )
        self._stable = (now, text)
        return text

    async def _prepare(
        self, session: AsyncSession, conversation: Conversation, inbound: Message, client: Client | None
    ) -> _Prepared:
        stable = await self._stable_prompt(session)
        pets = [customers.to_pet(p) for p in (client.pets if client is not None else [])]
        bookings = await self.booking.my_appointments(session, client_id=conversation.client_id)
        rows = await memory.load_history(session, conversation, up_to_message_id=inbound.id)
        context = context_prompt(
            now=self.now(),
            tz=self.settings.tz,
            customer=customers.to_customer(client) if client is not None else None,
            pets=pets,
            bookings=bookings,
            summary=conversation.summary,
            channel=conversation.channel,
        )
        request = ChatRequest(
            system=SystemPrompt(stable=stable, context=context),
            messages=tuple(memory.to_chat(rows)),
            tools=self.toolbox.specs,
            max_output_tokens=self.settings.llm_max_output_tokens,
        )
        ctx = ToolContext(conversation.id, conversation.client_id, conversation.channel)
        return _Prepared(request, ctx, memory.message_text(inbound), dict(conversation.state or {}))

    # --- step 2: the model and its tools ----------------------------------------------------------
    async def _run_model(self, prepared: _Prepared) -> _Turn:
        assert self.model is not None
        deadline = time.monotonic() + self.settings.llm_turn_deadline_s
        messages = list(prepared.request.messages)
        usage = Usage()
        texts: list[str] = []
        faults: list[ProviderFault] = []
        max_rounds = self.settings.llm_max_tool_rounds
        rounds = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AllProvidersFailedError(
                    [
                        *faults,
                        ProviderFault(self.model.name, None, "transient", "deadline", error_type="deadline"),
                    ]
                )
            allow_tools = rounds < max_rounds
            request = ChatRequest(
                system=prepared.request.system,
                messages=tuple(messages),
                tools=prepared.request.tools,
                max_output_tokens=prepared.request.max_output_tokens,
                allow_tools=allow_tools,
            )
            try:
                response = await self.model.complete(request, timeout_s=remaining)
            except ProviderError as exc:  # a bare provider, not a chain
                raise AllProvidersFailedError([*faults, exc.fault()]) from None
            except AllProvidersFailedError as exc:
                raise AllProvidersFailedError([*faults, *exc.faults]) from None
            usage += response.usage
            faults += response.faults
            if response.text:
                texts.append(response.text)
            if not response.tool_calls:
                return _Turn(texts, usage, response, faults, gave_up=False)
            if not allow_tools:
                # Still asking for tools after the bound: stop here, tell the customer, flag the chat.
                log.warning("tool round limit reached", extra={"rounds": rounds})
                return _Turn(texts or [self.gave_up_text], usage, response, faults, gave_up=not texts)
            rounds += 1
            messages.append(ChatMessage("assistant", response.text, tool_calls=response.tool_calls))
            results: list[ToolResult] = []
            for call in response.tool_calls:
                async with self.db.transaction() as session:
                    results.append(await self.toolbox.run(session, prepared.ctx, call))
            messages.append(ChatMessage("user", tool_results=tuple(results)))

    # --- step 3: the reply --------------------------------------------------------------------------
    def _reply(self, turn: _Turn, ctx: ToolContext) -> OutboundMessage:
        text = "\n\n".join(t for t in turn.texts if t) or self.gave_up_text
        buttons: list[QuickReply] = []
        if ctx.offered and not ctx.booked and not ctx.handed_over:
            for service, pet_id, slot in ctx.offered[:MAX_SLOT_BUTTONS]:
                label = self.offline.when(slot.start).replace(" at ", " ")
                buttons.append(QuickReply(pl.title(label), pl.book(service, pet_id=pet_id, start=slot.start)))
        return OutboundMessage(text=text, quick_replies=tuple(b for b in buttons if pl.fits(b.payload)))

    async def _store(
        self,
        session: AsyncSession,
        conversation_id: int,
        channel: str,
        messages: list[OutboundMessage],
        *,
        llm_usage: dict[str, object] | None = None,
    ) -> list[int]:
        return [
            await queue_outbound(
                session,
                conversation_id=conversation_id,
                channel=channel,
                message=message,
                llm_usage=llm_usage if n == 0 else None,
            )
            for n, message in enumerate(messages)
        ]

    async def _alert(self, session: AsyncSession, faults: list[ProviderFault]) -> None:
        for fault in faults:
            if fault.kind != "configuration":
                continue
            await raise_alert(
                session,
                f"llm:{fault.provider}:{fault.status}",
                f"The {fault.provider} API answered {fault.status} ({fault.message}). Check its API key and "
                "model setting; Cheshire is answering with the next provider (or offline) meanwhile.",
            )


def _mark(conversation: Conversation, message_id: int) -> None:
    # Reassign: JSON columns only notice a new value, not an in-place change.
    conversation.state = {**(conversation.state or {}), HANDLED_KEY: message_id}


def register_jobs(registry: JobRegistry, *, engine: ConversationEngine, db: Database | None = None) -> None:
    """Register `process_message` (queued by core.conversation.ingest) and `summarize_conversation`."""
    del db  # the engine holds the database; accepted for a uniform wiring signature

    async def process_message(job: ClaimedJob) -> None:
        payload = ProcessMessagePayload.load(job.payload)
        await engine.process(payload.message_id, payload.conversation_id)

    registry.register(PROCESS_JOB, process_message)
    # Older turns folded by memory are re-summarized by the same model chain, off the customer's turn.
    register_summary_job(
        registry, db=engine.db, model=lambda: engine.model, deadline_s=engine.settings.llm_turn_deadline_s
    )
