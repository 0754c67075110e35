"""Filing Kimmie's photos: which pet/appointment a photo belongs to, upload to storage, link to the pet.

Platform-neutral: a channel hands over facts (a caption, the file's stable id and content type) and a
`fetch` that returns the bytes; the Telegram download stays in bot/. The order keeps the unit-of-work
rule: check the target in one transaction, fetch and upload outside any, link in a second one. Every
refusal is a `PhotoRefusedError` whose message is safe to show Kimmie.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from core.storage import (
    PHOTO_KINDS,
    ObjectStorage,
    PhotoTargetError,
    StorageError,
    StorageNotConfiguredError,
    extension_for,
    link_pet_photo,
    pet_photo_key,
    resolve_photo_target,
)

log = logging.getLogger(__name__)

# One unit of work: `Database.transaction` or a channel's per-update scope (bot/scope.py).
Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]
FetchBytes = Callable[[], Awaitable[bytes]]

NOT_CONFIGURED = "I can't store photos: photo storage (S3_BUCKET and AWS credentials) is not set up."
KIND_LABELS = {
    "photo": "photo",
    "before": "before photo",
    "after": "after photo",
    "style_reference": "style reference",
}

_CAPTION = re.compile(
    r"^\s*(?P<what>pet|appt|appointment)\s*#?(?P<id>\d+)(?:\s+(?P<kind>photo|before|after|style_reference|style))?",
    re.IGNORECASE,
)


class PhotoRefusedError(Exception):
    """The photo was not filed; the message says why, in words for Kimmie."""


@dataclass(frozen=True, slots=True)
class CaptionTarget:
    """What a caption like "pet 12", "appt 34 after" or "pet 12 style" names.

    `kind` is None when the caption names an appointment without saying what the photo is: ask."""

    pet_id: int | None
    appointment_id: int | None
    kind: str | None


@dataclass(frozen=True, slots=True)
class PhotoFile:
    """The facts of one image: a stable id (same file → same key) and its content type."""

    unique_id: str
    content_type: str


@dataclass(frozen=True, slots=True)
class FiledPhoto:
    pet_id: int
    pet_name: str
    kind: str
    appointment_id: int | None
    key: str

    def summary(self) -> str:
        where = f" (appointment #{self.appointment_id})" if self.appointment_id else ""
        return f"Saved as {self.pet_name}'s {KIND_LABELS[self.kind]}{where}."


def parse_caption(caption: str | None) -> CaptionTarget | None:
    """The target a caption names, or None when it names none (then the channel asks)."""
    match = _CAPTION.match(caption or "")
    if match is None:
        return None
    target_id = int(match["id"])
    is_appointment = match["what"].lower() != "pet"  # "appt" or "appointment"
    kind = (match["kind"] or "").lower()
    kind = "style_reference" if kind == "style" else kind
    if not kind and not is_appointment:
        kind = "photo"
    if is_appointment:
        return CaptionTarget(pet_id=None, appointment_id=target_id, kind=kind or None)
    return CaptionTarget(pet_id=target_id, appointment_id=None, kind=kind)


async def file_photo(
    transaction: Transaction,
    storage: ObjectStorage,
    *,
    prefix: str,
    photo: PhotoFile,
    fetch: FetchBytes,
    kind: str,
    pet_id: int | None = None,
    appointment_id: int | None = None,
) -> FiledPhoto:
    """Upload the photo under its stable key and record it on the pet (and appointment)."""
    if kind not in PHOTO_KINDS:
        raise PhotoRefusedError(f"Unknown photo kind “{kind}”.")
    if kind in ("before", "after") and appointment_id is None:
        raise PhotoRefusedError(
            "Before/after photos belong to an appointment: use the caption “appt <id> before”."
        )
    try:
        async with transaction() as session:
            pet_id, appointment_id = await resolve_photo_target(
                session, pet_id=pet_id, appointment_id=appointment_id
            )
    except PhotoTargetError as exc:
        raise PhotoRefusedError(str(exc)) from exc
    key = pet_photo_key(
        prefix, pet_id=pet_id, kind=kind, unique_id=photo.unique_id, ext=extension_for(photo.content_type)
    )
    data = await fetch()
    try:
        stored = await storage.put(key, data, content_type=photo.content_type)
    except StorageNotConfiguredError as exc:
        raise PhotoRefusedError(str(exc)) from exc
    except StorageError as exc:
        log.warning("photo upload failed", exc_info=True)
        raise PhotoRefusedError("The upload to photo storage failed; please try again in a minute.") from exc
    async with transaction() as session:
        pet = await link_pet_photo(
            session, pet_id=pet_id, stored=stored, kind=kind, appointment_id=appointment_id
        )
        name = pet.name
    return FiledPhoto(pet_id=pet_id, pet_name=name, kind=kind, appointment_id=appointment_id, key=key)
