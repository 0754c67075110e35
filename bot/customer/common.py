"""What the customer routers share: storing an update as an `InboundMessage`, once, and whether to
show "typing…" for it."""

from __future__ import annotations

from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import views
from bot.scope import UpdateScope
from core import customers
from core.conversation.ingest import IngestResult, ingest
from core.types import Attachment, Channel, InboundMessage


def display_name(event: Message | CallbackQuery) -> str | None:
    user = event.from_user
    return user.full_name if user else None


def username(event: Message | CallbackQuery) -> str | None:
    user = event.from_user
    return user.username if user and user.username else None


def inbound_from(
    message: Message,
    *,
    text: str,
    phone: str | None = None,
    attachments: tuple[Attachment, ...] = (),
) -> InboundMessage:
    """The customer's message as core sees it (the chat id is the customer's id on Telegram)."""
    return InboundMessage(
        channel=Channel.TELEGRAM,
        external_user_id=str(message.chat.id),
        platform_message_id=f"{message.chat.id}:{message.message_id}",
        text=text,
        attachments=attachments,
        sent_at=message.date,
        display_name=display_name(message),
        phone=phone,
        handle=username(message),
    )


def tap_inbound(query: CallbackQuery, payload: str) -> InboundMessage:
    """A button tap as core sees it: the payload, and the tapped button's title as the text."""
    message = query.message if isinstance(query.message, Message) else None
    chat_id = message.chat.id if message else query.from_user.id
    return InboundMessage(
        channel=Channel.TELEGRAM,
        external_user_id=str(chat_id),
        platform_message_id=f"cb:{query.id}",
        text=_button_title(message, query.data or "") or payload,
        payload=payload,
        display_name=display_name(query),
        handle=username(query),
    )


def _button_title(message: Message | None, data: str) -> str | None:
    markup = message.reply_markup if message else None
    if markup is None:
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.callback_data == data:
                return button.text
    return None


async def typing_due(session: AsyncSession, ingested: IngestResult) -> bool:
    """Newly stored and the assistant will answer it. While Kimmie holds the chat the assistant stays
    silent: no "typing…" that leads nowhere."""
    return ingested.stored and not await views.taken_over(session, ingested.conversation_id)


async def ingest_update(scope: UpdateScope, inbound: InboundMessage) -> bool:
    """Store the message once; True when the assistant will now work on it (show "typing…")."""
    async with scope.transaction() as session:
        ingested = await ingest(session, inbound)
        if inbound.handle:  # the @username Kimmie's cards show
            await customers.set_handle(session, ingested.identity_id, inbound.handle)
        return await typing_due(session, ingested)
