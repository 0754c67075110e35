"""Looking Glass previews: the customer's own dog, in the cut they want.

The flow, on every channel (the channel only supplies the photo's bytes and renders the buttons):

1. photo in → the engine queues `preview.photo` (`queue_intake`). That job fetches the bytes (the
   channel's `PhotoFetcher`; the web upload stored them already), checks and cleans them with Pillow
   (core/previews/images.py), stores them (S3 or var/media/), links them to the customer's pet (a
   placeholder pet when no dog is known yet) and answers with one button per style.
2. a style tapped (`PV:s:<code>`, `PV:f:<code>` for three angles) or the assistant's `preview_style`
   tool → `request()`: the daily limit and the monthly budget are checked, one `grooming_design` row per
   angle is written (sharing a `batch_key`) and one `preview.generate` job queued for the batch.
3. `preview.generate` submits each design to the image editor, storing FAL's `request_id` in its own
   transaction before anything polls; a row left "submitting" (a crash during the submit) is never
   submitted again. It then polls with backoff, or waits for the webhook (`on_webhook`: verified,
   then the job is made due at once), copies each result into storage (FAL's URLs expire) and, when
   the whole batch is done, queues ONE outbound message (an album for three angles) with "Book this
   style" and "Try another style". Delivery is marked on the rows in the same transaction, so a re-run
   never sends it twice.

Failures: an error tells the customer once and the job retries with backoff; a refusal (4xx) or the
last attempt marks the rows failed and ends the job dead (Kimmie gets the dead-job alert; a key or
model refused is a configuration alert). Never a network call inside a transaction.
"""

from __future__ import annotations

import base64
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import customers
from core.alerts import raise_alert
from core.db.database import Database
from core.db.models import Conversation, GroomingDesign, Job, Message, Pet, utcnow
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import ClaimedJob, PermanentJobError, RetryLater, enqueue
from core.jobs.worker import JobRegistry
from core.outbox import queue_outbound
from core.ports import DeliveryError, RetryableDeliveryError
from core.previews import texts
from core.previews.images import PhotoRejectedError, clean_photo_off_loop
from core.previews.ports import EditResult, ImageEditError, ImageEditor, ImageEditRejectedError
from core.previews.styles import ANGLES, Style
from core.previews.webhook import WebhookRejectedError, verify
from core.settings import Settings
from core.storage import MediaStorage, StorageError, StoredObject, link_pet_photo
from core.types import OutboundMessage, QuickReply

log = logging.getLogger(__name__)

PHOTO_JOB = "preview.photo"
GENERATE_JOB = "preview.generate"
GENERATE_ATTEMPTS = 40  # polls count as attempts; errors too (backoff), so this bounds both
STATE_PHOTO = "preview_photo"  # conversation.state: the photo the style buttons apply to
STATE_DESIGN = "preview_design"  # conversation.state: the preview chosen with "Book this style"
STORED_PREFIX = "stored:"  # an attachment's file_id when the channel stored the cleaned photo itself
INPUT_LINK_S = 3600
DELIVERY_LINK_S = 7 * 24 * 3600  # S3 presigned URLs live at most 7 days
MAX_RESULT_BYTES = 20 * 1024 * 1024
MAX_STYLE_BUTTONS = 11

# Payloads (core/conversation/payloads.py routes "PV:" here): PV:s:<style> one angle, PV:f:<style>
# three, PV:b:<design id> book with that preview, PV:m the style buttons again.
PV = "PV"

# The bytes of one inbound attachment ({"kind", "url", "file_id", "mime_type"}), by its channel.
PhotoFetcher = Callable[[Mapping[str, Any]], Awaitable[bytes]]


@job_payload(PHOTO_JOB)
class PhotoPayload(JobPayload):
    message_id: int
    conversation_id: int


@job_payload(GENERATE_JOB)
class GeneratePayload(JobPayload):
    batch_key: str


def style_payload(code: str, *, full: bool = False) -> str:
    return f"{PV}:{'f' if full else 's'}:{code}"


def is_preview_payload(payload: str | None) -> bool:
    return bool(payload) and str(payload).startswith(PV + ":")


@dataclass(frozen=True, slots=True)
class _Design:
    id: int
    pet_id: int
    client_id: int | None
    conversation_id: int | None
    style_code: str | None
    angle: str
    prompt: str
    photo_key: str | None
    seed: int | None
    status: str
    request_id: str | None
    storage_keys: tuple[str, ...]
    error: str | None
    created_at: datetime
    delivered: bool

    @classmethod
    def of(cls, row: GroomingDesign) -> _Design:
        return cls(
            row.id,
            row.pet_id,
            row.client_id,
            row.conversation_id,
            row.style_code,
            row.angle,
            row.style_prompt,
            row.photo_key,
            row.seed,
            row.status,
            row.provider_request_id,
            tuple(str(k) for k in row.storage_keys or ()),
            row.error,
            row.created_at,
            row.delivered_at is not None,
        )


class Previews:
    """The preview use cases and jobs. Built by cheshire/wiring.py only when FAL is configured."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        storage: MediaStorage,
        editor: ImageEditor,
        styles: Sequence[Style],
        fetchers: Mapping[str, PhotoFetcher],
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.storage = storage
        self.editor = editor
        self.styles = {s.code: s for s in styles}
        self.fetchers = fetchers
        self.now = now
        self.groomer = settings.groomer_name
        self.prefix = getattr(storage, "prefix", "")

    # --- buttons -----------------------------------------------------------------------------------
    def style_buttons(self) -> tuple[QuickReply, ...]:
        return tuple(QuickReply(s.name, style_payload(s.code)) for s in self.styles.values())[
            :MAX_STYLE_BUTTONS
        ]

    def style_named(self, text: str) -> Style | None:
        """A style the customer's words name ("teddy bear cut please"), if exactly one."""
        lowered = text.lower()
        found = [s for s in self.styles.values() if s.name.lower() in lowered or s.code in lowered]
        return found[0] if len(found) == 1 else None

    # --- 1. photo in -------------------------------------------------------------------------------
    async def queue_intake(self, session: AsyncSession, *, message_id: int, conversation_id: int) -> None:
        await enqueue(
            session,
            PHOTO_JOB,
            PhotoPayload(message_id=message_id, conversation_id=conversation_id).dump(),
            idempotency_key=f"preview:photo:{message_id}",
            queue_key=f"conversation:{conversation_id}",
        )

    async def handle_photo(self, job: ClaimedJob) -> None:
        payload = PhotoPayload.load(job.payload)
        async with self.db.transaction() as session:
            message = await session.get(Message, payload.message_id)
            conversation = await session.get(Conversation, payload.conversation_id)
            if message is None or conversation is None:
                return
            if (conversation.state or {}).get(STATE_PHOTO, {}).get("message_id") == message.id:
                return  # a re-run after the photo was filed
            attachment = image_attachment(message.attachments)
            channel, caption = conversation.channel, message.text or ""
        if attachment is None:
            return
        stored: StoredObject | None = None
        data: bytes | None = None
        file_id = str(attachment.get("file_id") or "")
        if file_id.startswith(STORED_PREFIX):
            key = file_id.removeprefix(STORED_PREFIX)
            stored = StoredObject(key=key, url=f"/media/{key}", content_type="image/jpeg")
        else:
            fetch = self.fetchers.get(channel)
            if fetch is None:
                raise PermanentJobError(f"no photo fetcher for channel {channel}")
            try:
                raw = await fetch(attachment)
            except RetryableDeliveryError as exc:
                raise RetryLater(exc.retry_after_s or 5.0, str(exc)) from None
            except DeliveryError as exc:  # no such file, a URL gone for good
                log.info("customer photo could not be fetched: %s", exc)
                await self._say(payload.conversation_id, OutboundMessage(texts.BAD_PHOTO))
                return
            try:
                # Off the event loop: decoding and encoding a photo takes tens of milliseconds.
                data = (await clean_photo_off_loop(raw, max_bytes=self.settings.preview_max_bytes)).data
            except PhotoRejectedError as exc:
                log.info("customer photo refused: %s", exc)
                await self._say(payload.conversation_id, OutboundMessage(texts.BAD_PHOTO))
                return
        async with self.db.transaction() as session:
            pet = await self._pet_for_photo(session, payload.conversation_id)
            pet_id = pet.id
        if stored is None:
            assert data is not None
            key = f"{self.prefix}pets/{pet_id}/photo/preview-{payload.message_id}.jpg"
            try:
                stored = await self.storage.put(key, data, content_type="image/jpeg")
            except StorageError:
                log.warning("customer photo upload failed", exc_info=True)
                if job.attempts >= job.max_attempts:
                    await self._say(payload.conversation_id, OutboundMessage(texts.PHOTO_FAILED))
                raise
        async with self.db.transaction() as session:
            await link_pet_photo(session, pet_id=pet_id, stored=stored, kind="photo")
            conversation = await session.get_one(Conversation, payload.conversation_id)
            conversation.state = {
                **(conversation.state or {}),
                STATE_PHOTO: {"key": stored.key, "pet_id": pet_id, "message_id": payload.message_id},
            }
            style = self.style_named(caption) if caption else None
            if style is not None:
                reply = await self.request(session, conversation, style_code=style.code)
            else:
                pet_row = await session.get_one(Pet, pet_id)
                reply = OutboundMessage(
                    texts.PICK_STYLE.format(pet=_pet_label(pet_row)), quick_replies=self.style_buttons()
                )
            await queue_outbound(
                session, conversation_id=conversation.id, channel=conversation.channel, message=reply
            )

    async def _pet_for_photo(self, session: AsyncSession, conversation_id: int) -> Pet:
        """The dog the photo shows: the client's latest pet, or a placeholder until it is known."""
        conversation = await session.get_one(Conversation, conversation_id)
        pets = await customers.pets_of(session, conversation.client_id)
        if pets:
            return max(pets, key=lambda p: p.id)
        taken = {p.name.lower() for p in pets}
        n = 1
        while f"dog {n}" in taken:
            n += 1
        pet = await customers.save_pet(session, client_id=conversation.client_id, name=f"Dog {n}")
        pet.placeholder = True
        await session.flush()
        return pet

    # --- 2. a style asked for ----------------------------------------------------------------------
    async def request(
        self,
        session: AsyncSession,
        conversation: Conversation,
        *,
        style_code: str,
        angles: int = 1,
        pet_id: int | None = None,
    ) -> OutboundMessage:
        """Queue a preview for the conversation's client; the answer to send now."""
        style = self.styles.get(style_code)
        if style is None:
            return OutboundMessage(texts.UNKNOWN_STYLE, quick_replies=self.style_buttons())
        photo = await self._photo(session, conversation, pet_id)
        if photo is None:
            return OutboundMessage(texts.NO_PHOTO)
        pet, photo_key = photo
        if round(await self.month_spend(session), 6) >= round(self.settings.preview_monthly_budget_usd, 6):
            await self._budget_alert(session)
            return OutboundMessage(texts.PAUSED.format(groomer=self.groomer))
        if await self.requests_today(session, conversation.client_id) >= self.settings.preview_daily_limit:
            return OutboundMessage(
                texts.DAILY_LIMIT.format(limit=self.settings.preview_daily_limit, groomer=self.groomer)
            )
        batch = uuid.uuid4().hex
        seed = random.randrange(2**31)  # one seed for every angle: the same dog, the same cut
        for angle in ANGLES[: max(1, min(angles, len(ANGLES)))]:
            session.add(
                GroomingDesign(
                    pet_id=pet.id,
                    client_id=conversation.client_id,
                    conversation_id=conversation.id,
                    style_code=style.code,
                    angle=angle,
                    style_prompt=style.prompt(angle),
                    model=self.editor.model,
                    seed=seed,
                    cost_usd=self.settings.fal_price_per_image_usd,  # reserved now: the budget counts it
                    photo_key=photo_key,
                    storage_keys=[],
                    image_urls=[],
                    status="pending",
                    batch_key=batch,
                )
            )
        await session.flush()
        await enqueue(
            session,
            GENERATE_JOB,
            GeneratePayload(batch_key=batch).dump(),
            idempotency_key=f"preview:{batch}",
            queue_key=f"preview:{batch}",
            max_attempts=GENERATE_ATTEMPTS,
        )
        await self._budget_alert(session)
        words = texts.WORKING_FULL if angles > 1 else texts.WORKING
        return OutboundMessage(words.format(pet=_pet_label(pet), style=style.name.lower()))

    async def _photo(
        self, session: AsyncSession, conversation: Conversation, pet_id: int | None
    ) -> tuple[Pet, str] | None:
        state = (conversation.state or {}).get(STATE_PHOTO) or {}
        wanted = pet_id if pet_id is not None else state.get("pet_id")
        if not isinstance(wanted, int):
            return None
        owned = await customers.own_pets(session, conversation.client_id, [wanted])
        if not owned:
            return None  # not this client's dog: payloads and tool arguments are not trusted
        pet = owned[0]
        if state.get("pet_id") == pet.id and isinstance(state.get("key"), str):
            return pet, str(state["key"])
        photos = [p for p in pet.photos or [] if p.get("kind") == "photo" and p.get("key")]
        return (pet, str(photos[-1]["key"])) if photos else None

    async def requests_today(self, session: AsyncSession, client_id: int) -> int:
        local = self.now().astimezone(self.settings.tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        count = await session.scalar(
            select(func.count(func.distinct(GroomingDesign.batch_key))).where(
                GroomingDesign.client_id == client_id,
                GroomingDesign.created_at >= start,
                GroomingDesign.status != "failed",
            )
        )
        return int(count or 0)

    async def month_spend(self, session: AsyncSession) -> float:
        local = self.now().astimezone(self.settings.tz)
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        spent = await session.scalar(
            select(func.coalesce(func.sum(GroomingDesign.cost_usd), 0.0)).where(
                GroomingDesign.created_at >= start
            )
        )
        return float(spent or 0.0)

    async def _budget_alert(self, session: AsyncSession) -> None:
        """Kimmie hears once at 80 % and once at 100 % per month (raise_alert dedupes by key)."""
        budget = self.settings.preview_monthly_budget_usd
        spent = await self.month_spend(session)
        month = f"{self.now().astimezone(self.settings.tz):%Y-%m}"
        spent = round(spent, 6)  # float sums: $0.08 must count as 80 % of $0.10
        if budget <= 0 or spent >= round(budget, 6):
            await raise_alert(
                session, f"previews:budget100:{month}", texts.BUDGET_100.format(budget=_usd(budget))
            )
        elif spent >= round(0.8 * budget, 6):
            await raise_alert(
                session,
                f"previews:budget80:{month}",
                texts.BUDGET_80.format(spent=_usd(spent), budget=_usd(budget)),
            )

    # --- the buttons' answers (the offline responder hands PV: payloads here) ----------------------
    async def on_payload(
        self, session: AsyncSession, conversation: Conversation, payload: str
    ) -> OutboundMessage | tuple[int, int, str]:
        """The answer to a PV: payload, or for "Book this style" (pet id, design id, style name):
        the booking flow continues from there."""
        parts = payload.split(":")
        head = parts[1] if len(parts) > 1 else ""
        if head in ("s", "f") and len(parts) == 3:
            return await self.request(
                session, conversation, style_code=parts[2], angles=3 if head == "f" else 1
            )
        if head == "b" and len(parts) == 3 and parts[2].isdigit():
            design = await session.get(GroomingDesign, int(parts[2]))
            if design is None or design.client_id != conversation.client_id or design.status != "done":
                return OutboundMessage(texts.ANOTHER_STYLE + "?", quick_replies=self.style_buttons())
            conversation.state = {**(conversation.state or {}), STATE_DESIGN: design.id}
            style = self.styles.get(design.style_code or "")
            return design.pet_id, design.id, style.name if style else (design.style_code or "")
        return OutboundMessage(texts.PICK_STYLE.format(pet="your dog"), quick_replies=self.style_buttons())

    async def booking_note(
        self, session: AsyncSession, conversation: Conversation, pet_id: int
    ) -> str | None:
        """The booking request's note when "Book this style" chose a preview of this dog."""
        design = await self._chosen(session, conversation)
        if design is None or design.pet_id != pet_id:
            return None
        style = self.styles.get(design.style_code or "")
        name = style.name if style else design.style_code
        return texts.BOOKING_NOTE.format(style=name, design_id=design.id)

    async def attach_to_booking(
        self, session: AsyncSession, conversation: Conversation, *, appointment_id: int
    ) -> None:
        """Link the chosen preview (all its angles) to the appointment Kimmie's card shows."""
        design = await self._chosen(session, conversation)
        state = dict(conversation.state or {})
        state.pop(STATE_DESIGN, None)
        conversation.state = state
        if design is not None:
            await session.execute(
                update(GroomingDesign)
                .where(GroomingDesign.batch_key == design.batch_key)
                .values(appointment_id=appointment_id)
            )

    async def _chosen(self, session: AsyncSession, conversation: Conversation) -> GroomingDesign | None:
        design_id = (conversation.state or {}).get(STATE_DESIGN)
        if not isinstance(design_id, int):
            return None
        design = await session.get(GroomingDesign, design_id)
        return design if design is not None and design.client_id == conversation.client_id else None

    # --- 3. the job --------------------------------------------------------------------------------
    async def handle_generate(self, job: ClaimedJob) -> None:
        batch = GeneratePayload.load(job.payload).batch_key
        designs = await self._designs(batch)
        if not designs or all(d.delivered for d in designs):
            return
        try:
            pending = False
            for design in designs:
                if design.status in ("done", "failed", "blocked"):
                    continue
                if design.status == "submitting" and design.request_id is None:
                    # Killed during the submit: FAL may have queued it. Submitting again could bill twice.
                    raise ImageEditRejectedError(
                        "the submit's outcome is unknown (interrupted); not resubmitted"
                    )
                request_id = design.request_id or await self._submit(design)
                if request_id is None:
                    continue
                if not await self._collect(design, request_id):
                    pending = True
            if pending:
                waited = (self.now() - designs[0].created_at).total_seconds()
                if waited > self.settings.fal_poll_timeout_s or job.attempts >= job.max_attempts:
                    await self._cancel_unfinished(batch)  # FAL bills what it finishes: stop it
                    raise ImageEditRejectedError("FAL did not finish in time")
                raise RetryLater(self._poll_delay(job.attempts), "waiting for FAL")
        except RetryLater:
            raise
        except ImageEditRejectedError as exc:
            await self._failed(designs, str(exc), configuration=exc.configuration)
            raise PermanentJobError(str(exc)) from None
        except (ImageEditError, StorageError) as exc:
            last = job.attempts >= job.max_attempts
            await self._trouble(designs, str(exc), final=last)
            raise
        await self._deliver(batch)

    async def _cancel_unfinished(self, batch: str) -> None:
        for design in await self._designs(batch):
            if design.status == "submitted" and design.request_id:
                try:
                    await self.editor.cancel(design.request_id)
                except ImageEditError:
                    log.info("FAL cancel failed (it may have finished meanwhile)", exc_info=True)

    def _poll_delay(self, attempt: int) -> float:
        if self.settings.public_base_url:
            return 30.0  # the webhook makes the job due at once; this is only the fallback poll
        return float(min(0.5 * 2 ** max(attempt - 1, 0), 10.0))

    async def _designs(self, batch: str) -> list[_Design]:
        async with self.db.transaction() as session:
            rows = await session.scalars(
                select(GroomingDesign).where(GroomingDesign.batch_key == batch).order_by(GroomingDesign.id)
            )
            return [_Design.of(row) for row in rows]

    async def _submit(self, design: _Design) -> str | None:
        async with self.db.transaction() as session:
            claimed = await session.execute(
                update(GroomingDesign)
                .where(GroomingDesign.id == design.id, GroomingDesign.status == "pending")
                .values(status="submitting")
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                return None
        try:
            image_url = await self._input_url(design)
            request_id = await self.editor.submit(
                prompt=design.prompt, image_url=image_url, seed=design.seed, webhook_url=self._webhook_url()
            )
        except BaseException:
            # FAL answered with an error (nothing queued), or the photo could not be read: try again.
            async with self.db.transaction() as session:
                await session.execute(
                    update(GroomingDesign).where(GroomingDesign.id == design.id).values(status="pending")
                )
            raise
        # Stored before any polling: a retried job resumes this request instead of submitting again.
        async with self.db.transaction() as session:
            await session.execute(
                update(GroomingDesign)
                .where(GroomingDesign.id == design.id)
                .values(status="submitted", provider_request_id=request_id)
            )
        return request_id

    async def _input_url(self, design: _Design) -> str:
        """The photo as FAL reads it: a presigned S3 URL or signed /media link, else a data URI."""
        if design.photo_key is None:
            raise ImageEditRejectedError("the design has no photo")
        link = await self.storage.link(design.photo_key, expires_s=INPUT_LINK_S)
        if link and link.startswith(("https://", "http://")):
            return link
        data = await self.storage.get(design.photo_key)
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()

    def _webhook_url(self) -> str | None:
        base = self.settings.public_base_url
        return f"{base}/webhook/fal" if base else None

    async def _collect(self, design: _Design, request_id: str) -> bool:
        """True when the design is finished (results stored); False while FAL is still working."""
        progress = await self.editor.status(request_id)
        if not progress.done:
            return False
        if progress.error:
            raise ImageEditRejectedError(f"FAL: {progress.error[:200]}")
        result = await self.editor.result(request_id)
        if not result.image_urls:
            raise ImageEditRejectedError("FAL returned no image")
        if result.nsfw and all(result.nsfw):
            await self._set(design.id, status="blocked", error="safety checker flagged the result")
            return True
        keys = await self._store_results(design, result)
        await self._set(
            design.id,
            status="done",
            storage_keys=keys,
            image_urls=list(result.image_urls),
            seed=result.seed if result.seed is not None else design.seed,
        )
        return True

    async def _store_results(self, design: _Design, result: EditResult) -> list[str]:
        keys = []
        for n, url in enumerate(result.image_urls):
            data = await self.editor.download(url, max_bytes=MAX_RESULT_BYTES)
            try:
                clean = await clean_photo_off_loop(data, max_bytes=MAX_RESULT_BYTES)
            except PhotoRejectedError as exc:
                raise ImageEditRejectedError(f"FAL's image is unreadable: {exc}") from None
            key = f"{self.prefix}pets/{design.pet_id}/preview/{design.id}-{n}.jpg"
            await self.storage.put(key, clean.data, content_type=clean.content_type)
            keys.append(key)
        return keys

    async def _set(self, design_id: int, **values: Any) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(GroomingDesign).where(GroomingDesign.id == design_id).values(**values)
            )

    async def _deliver(self, batch: str) -> None:
        designs = await self._designs(batch)
        done = [d for d in designs if d.status == "done"]
        links = []
        keys = [key for design in done for key in design.storage_keys]
        for key in keys:
            links.append(await self._delivery_link(key))
        first = designs[0]
        async with self.db.transaction() as session:
            marked = await session.execute(
                update(GroomingDesign)
                .where(GroomingDesign.batch_key == batch, GroomingDesign.delivered_at.is_(None))
                .values(delivered_at=self.now())
            )
            if not marked.rowcount or first.conversation_id is None:  # type: ignore[attr-defined]
                return  # delivered by an earlier run
            conversation = await session.get(Conversation, first.conversation_id)
            if conversation is None:
                return
            message = await self._ready_message(session, batch, first, done, links, keys)
            await queue_outbound(
                session, conversation_id=conversation.id, channel=conversation.channel, message=message
            )

    async def _ready_message(
        self,
        session: AsyncSession,
        batch: str,
        first: _Design,
        done: list[_Design],
        links: list[str],
        keys: list[str],
    ) -> OutboundMessage:
        if not done:
            return OutboundMessage(texts.UNSAFE, quick_replies=self.style_buttons())
        pet = await session.get_one(Pet, first.pet_id)
        style = self.styles.get(first.style_code or "")
        name = style.name if style else (first.style_code or "style")
        text = texts.READY.format(pet=_pet_label(pet), style=name.lower())
        earlier = await session.scalar(
            select(func.count())
            .select_from(GroomingDesign)
            .where(
                GroomingDesign.client_id == first.client_id,
                GroomingDesign.delivered_at.is_not(None),
                GroomingDesign.batch_key != batch,
            )
        )
        if not earlier:
            text += "\n\n" + texts.DISCLAIMER.format(groomer=self.groomer)
        replies = [
            QuickReply(texts.BOOK_STYLE, f"{PV}:b:{done[0].id}"),
            QuickReply(texts.ANOTHER_STYLE, f"{PV}:m"),
        ]
        if len(done) == 1 and first.style_code:
            replies.append(QuickReply(texts.ALL_ANGLES, style_payload(first.style_code, full=True)))
        return OutboundMessage(
            text, quick_replies=tuple(replies), image_urls=tuple(links), image_keys=tuple(keys)
        )

    async def _delivery_link(self, key: str) -> str:
        link = await self.storage.link(key, expires_s=DELIVERY_LINK_S)
        return link or f"/media/{key}"

    async def _trouble(self, designs: list[_Design], error: str, *, final: bool) -> None:
        """A retryable failure: the rows say why, the customer hears once (the first time); the last
        attempt marks the rows failed (the job then ends dead: Kimmie's dead-job alert)."""
        async with self.db.transaction() as session:
            await session.execute(
                update(GroomingDesign)
                .where(GroomingDesign.id.in_([d.id for d in designs]), GroomingDesign.status != "done")
                .values(error=error[:500], **({"status": "failed"} if final else {}))
            )
            if not any(d.error for d in designs):
                await self._tell(session, designs[0].conversation_id, texts.DELAYED)

    async def _failed(self, designs: list[_Design], error: str, *, configuration: bool) -> None:
        """Final: rows failed (and not charged if FAL never took them), the customer told (unless an
        earlier error told them already), Kimmie too when our key or model setting is at fault."""
        async with self.db.transaction() as session:
            for design in designs:
                if design.status in ("done", "blocked"):
                    continue
                values: dict[str, Any] = {"status": "failed", "error": error[:500]}
                if design.request_id is None and design.status == "pending":
                    values["cost_usd"] = 0.0
                await session.execute(
                    update(GroomingDesign).where(GroomingDesign.id == design.id).values(**values)
                )
            if configuration:
                await raise_alert(session, "fal:configuration", texts.FAL_CONFIG.format(detail=error[:200]))
            if not any(d.error for d in designs):
                await self._tell(
                    session,
                    designs[0].conversation_id,
                    texts.FAILED.format(groomer=self.groomer),
                    buttons=True,
                )

    async def _tell(
        self, session: AsyncSession, conversation_id: int | None, text: str, *, buttons: bool = False
    ) -> None:
        conversation = await session.get(Conversation, conversation_id) if conversation_id else None
        if conversation is not None:
            message = OutboundMessage(text, quick_replies=self.style_buttons() if buttons else ())
            await queue_outbound(
                session, conversation_id=conversation.id, channel=conversation.channel, message=message
            )

    # --- the webhook -------------------------------------------------------------------------------
    async def on_webhook(self, headers: Mapping[str, str], body: bytes) -> int:
        """FAL's completion call: 401 unless genuine; then the batch's job is made due now."""
        refresh = getattr(self.editor, "forget_signing_keys", None)
        try:
            delivery = await verify(headers, body, self.editor.signing_keys, refresh=refresh)
        except WebhookRejectedError as exc:
            log.info("FAL webhook refused: %s", exc)
            return 401
        except ImageEditError:
            log.warning("FAL webhook keys unavailable", exc_info=True)
            return 503  # FAL retries its webhook
        async with self.db.transaction() as session:
            batch = await session.scalar(
                select(GroomingDesign.batch_key).where(
                    GroomingDesign.provider_request_id == delivery.request_id
                )
            )
            if batch is None:
                return 200  # not ours (or already gone): acknowledged so FAL stops retrying
            await session.execute(
                update(Job)
                .where(Job.idempotency_key == f"preview:{batch}", Job.status == "queued")
                .values(run_at=self.now())
            )
        return 200

    # --- Kimmie's views ----------------------------------------------------------------------------
    async def previews_of_pet(
        self, session: AsyncSession, pet_id: int, *, limit: int = 10
    ) -> list[GroomingDesign]:
        rows = await session.scalars(
            select(GroomingDesign)
            .where(GroomingDesign.pet_id == pet_id)
            .order_by(GroomingDesign.id.desc())
            .limit(limit)
        )
        return list(rows)

    async def _say(self, conversation_id: int, message: OutboundMessage) -> None:
        async with self.db.transaction() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is not None:
                await queue_outbound(
                    session, conversation_id=conversation.id, channel=conversation.channel, message=message
                )

    def register(self, registry: JobRegistry) -> None:
        registry.register(PHOTO_JOB, self.handle_photo)
        registry.register(GENERATE_JOB, self.handle_generate)


def image_attachment(attachments: Sequence[Any] | None) -> Mapping[str, Any] | None:
    for attachment in attachments or ():
        if isinstance(attachment, Mapping) and attachment.get("kind") == "image":
            return attachment
    return None


def _pet_label(pet: Pet) -> str:
    return "your dog" if pet.placeholder else pet.name


def _usd(amount: float) -> str:
    return f"${amount:,.2f}"
