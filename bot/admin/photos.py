"""Kimmie's photos: an image with the caption "pet 12" / "appt 34 after" is filed at once; without a
kind (or a caption) buttons ask which appointment and what it is.

Filing is core's (core/photos.py: target check, upload, link); this module parses the message,
downloads the file from Telegram when core asks for the bytes, and renders the answer. The photo
waiting for a choice lives in FSM state, with the state to return to afterwards (reply mode).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from io import BytesIO
from typing import Any

from aiogram import Bot, F
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.admin.common import PhotoStates, TakeoverStates
from bot.callbacks import PhotoAction
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from core import photos as filing
from core.booking.api import BookingService
from core.settings import Settings
from core.storage import ObjectStorage

router = RouterSpec("admin.photos")

WHAT_IS_IT = "What is this photo?"


def _image(message: Message) -> tuple[str, filing.PhotoFile] | None:
    """(Telegram file_id, facts) of a photo (its largest size) or an image sent as a file."""
    if message.photo:
        biggest = message.photo[-1]
        return biggest.file_id, filing.PhotoFile(biggest.file_unique_id, "image/jpeg")
    document = message.document
    if document and (document.mime_type or "").startswith("image/"):
        return document.file_id, filing.PhotoFile(document.file_unique_id, document.mime_type or "image/jpeg")
    return None


async def _file(
    bot: Bot,
    scope: UpdateScope,
    storage: ObjectStorage,
    settings: Settings,
    *,
    file_id: str,
    photo: filing.PhotoFile,
    kind: str,
    pet_id: int | None = None,
    appointment_id: int | None = None,
) -> str:
    async def download() -> bytes:
        buffer = await bot.download(file_id, destination=BytesIO())
        assert buffer is not None
        return buffer.read()

    try:
        filed = await filing.file_photo(
            scope.transaction,
            storage,
            prefix=settings.s3_prefix,
            photo=photo,
            fetch=download,
            kind=kind,
            pet_id=pet_id,
            appointment_id=appointment_id,
        )
    except filing.PhotoRefusedError as exc:
        return str(exc)
    return filed.summary()


@router.message(StateFilter(None, TakeoverStates.replying, PhotoStates.choosing), F.photo | F.document)
async def photo_received(
    message: Message,
    bot: Bot,
    scope: UpdateScope,
    state: FSMContext,
    photos: ObjectStorage | None,
    booking: BookingService,
    settings: Settings,
) -> None:
    found = _image(message)
    if found is None:
        await message.answer("Only images can be stored (a photo, or an image sent as a file).")
        return
    if photos is None or not photos.configured:
        await message.answer(filing.NOT_CONFIGURED)
        return
    file_id, photo = found
    target = filing.parse_caption(message.caption)
    if target is not None and target.kind is not None:
        reply = await _file(
            bot,
            scope,
            photos,
            settings,
            file_id=file_id,
            photo=photo,
            kind=target.kind,
            pet_id=target.pet_id,
            appointment_id=target.appointment_id,
        )
        await message.answer(reply)
        return
    if target is not None and target.appointment_id is not None:
        await _remember(state, file_id, photo, appointment_id=target.appointment_id)
        await message.answer(WHAT_IS_IT, reply_markup=keyboards.photo_kind_keyboard(target.appointment_id))
        return
    await _ask_appointment(message, scope, state, booking, settings, file_id, photo)


async def _ask_appointment(
    message: Message,
    scope: UpdateScope,
    state: FSMContext,
    booking: BookingService,
    settings: Settings,
    file_id: str,
    photo: filing.PhotoFile,
) -> None:
    """No caption: offer yesterday's and today's appointments."""
    day = datetime.now(settings.tz).date()
    async with scope.transaction() as session:
        items = await booking.agenda(session, day_from=day - timedelta(days=1), day_to=day)
    if not items:
        await message.answer(
            "Which pet is it? Send it again with the caption “pet <id>” or “appt <id>” "
            "(find ids with /client)."
        )
        return
    await _remember(state, file_id, photo)
    await message.answer(
        "Which appointment is this photo for?",
        reply_markup=keyboards.photo_appointment_keyboard(items[:10], settings.tz),
    )


async def _remember(
    state: FSMContext, file_id: str, photo: filing.PhotoFile, appointment_id: int | None = None
) -> None:
    previous = await state.get_state()
    if previous == PhotoStates.choosing.state:  # a new photo replaces the one still waiting
        previous = ((await state.get_data()).get("photo") or {}).get("return_state")
    await state.update_data(
        photo={
            "file_id": file_id,
            "unique_id": photo.unique_id,
            "content_type": photo.content_type,
            "appointment_id": appointment_id,
            "return_state": previous,
        }
    )
    await state.set_state(PhotoStates.choosing)


async def _waiting(query: CallbackQuery, state: FSMContext) -> dict[str, Any] | None:
    """The photo waiting for this choice; None (and the tap answered) when there is none."""
    photo: dict[str, Any] | None = (await state.get_data()).get("photo")
    if not photo:
        await query.answer("That photo is no longer waiting; send it again.", show_alert=True)
    return photo or None


async def _restore_state(state: FSMContext, photo: dict[str, Any]) -> None:
    await state.update_data(photo=None)
    await state.set_state(photo.get("return_state"))


async def _edit(query: CallbackQuery, text: str, **kwargs: Any) -> None:
    if isinstance(query.message, Message):
        await query.message.edit_text(text, **kwargs)


@router.callback_query(PhotoAction.filter(F.action == "cancel"))
async def cancel_photo(query: CallbackQuery, state: FSMContext) -> None:
    photo = await _waiting(query, state)
    if photo is None:
        return
    await _restore_state(state, photo)
    await query.answer("Cancelled")
    await _edit(query, "Photo not stored.")


@router.callback_query(PhotoAction.filter(F.action == "appt"))
async def photo_for_appointment(query: CallbackQuery, callback_data: PhotoAction, state: FSMContext) -> None:
    photo = await _waiting(query, state)
    if photo is None:
        return
    await state.update_data(photo={**photo, "appointment_id": callback_data.target_id})
    await query.answer()
    await _edit(query, WHAT_IS_IT, reply_markup=keyboards.photo_kind_keyboard(callback_data.target_id))


@router.callback_query(PhotoAction.filter(F.action == "kind"))
async def photo_kind(
    query: CallbackQuery,
    callback_data: PhotoAction,
    bot: Bot,
    scope: UpdateScope,
    state: FSMContext,
    photos: ObjectStorage | None,
    settings: Settings,
) -> None:
    photo = await _waiting(query, state)
    if photo is None:
        return
    if photos is None:
        await query.answer("Photo storage is not set up.", show_alert=True)
        return
    reply = await _file(
        bot,
        scope,
        photos,
        settings,
        file_id=photo["file_id"],
        photo=filing.PhotoFile(photo["unique_id"], photo["content_type"]),
        kind=callback_data.kind,
        appointment_id=photo.get("appointment_id") or callback_data.target_id,
    )
    await _restore_state(state, photo)
    await query.answer()
    await _edit(query, reply)
