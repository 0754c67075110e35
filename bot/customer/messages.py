"""Everything else a customer sends or taps: the same conversation core as every other channel.

Text, photos and button taps become `InboundMessage`s stored by `core.conversation.ingest` (the
engine, or the offline responder when no LLM is configured, answers through the outbox, and the
TelegramSender renders its quick replies as inline buttons). So the button-driven booking flow is the
offline responder's payload flow and needs no LLM. A shared contact carries the phone that links
this chat to an existing client (ingest does it) — only the customer's own contact.
"""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery, Message, ReplyKeyboardRemove

from bot.customer.common import inbound_from, ingest_update, tap_inbound
from bot.routing import RouterSpec
from bot.scope import UpdateScope
from bot.sender import TelegramSender
from core.types import Attachment

router = RouterSpec("customer.messages")


@router.message(F.contact)
async def shared_contact(message: Message, scope: UpdateScope, sender: TelegramSender) -> None:
    contact = message.contact
    assert contact is not None
    if message.from_user is None or contact.user_id != message.from_user.id:
        # Someone else's card: linking it would let anyone claim another client's bookings.
        await message.answer("Please share your own number with the button below.")
        return
    inbound = inbound_from(message, text="(shared my phone number)", phone=contact.phone_number)
    typing = await ingest_update(scope, inbound)
    await message.answer("Thanks, your number is linked. ✅", reply_markup=ReplyKeyboardRemove())
    if typing:
        await sender.send_typing(message.chat.id)


def _attachments(message: Message) -> tuple[Attachment, ...]:
    if message.photo:
        return (Attachment(kind="image", file_id=message.photo[-1].file_id, mime_type="image/jpeg"),)
    if message.document:
        document = message.document
        kind = "image" if (document.mime_type or "").startswith("image/") else "file"
        return (Attachment(kind=kind, file_id=document.file_id, mime_type=document.mime_type),)
    if message.video:
        return (Attachment(kind="video", file_id=message.video.file_id, mime_type=message.video.mime_type),)
    if message.voice:
        return (Attachment(kind="audio", file_id=message.voice.file_id, mime_type=message.voice.mime_type),)
    return ()


@router.message()
async def customer_message(message: Message, scope: UpdateScope, sender: TelegramSender) -> None:
    attachments = _attachments(message)
    text = message.text or message.caption or ""
    if not text and not attachments:
        return  # stickers, service messages: nothing to answer
    if await ingest_update(scope, inbound_from(message, text=text, attachments=attachments)):
        await sender.send_typing(message.chat.id)


@router.callback_query()
async def customer_tap(query: CallbackQuery, scope: UpdateScope, sender: TelegramSender) -> None:
    """Any other button: its callback_data is a conversation payload (core/conversation/payloads.py)."""
    inbound = tap_inbound(query, query.data or "")
    typing = await ingest_update(scope, inbound)
    await query.answer()
    if typing:
        await sender.send_typing(inbound.external_user_id)
