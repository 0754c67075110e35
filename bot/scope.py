"""One unit of work per Telegram update, and each update handled once.

`UpdateScope.transaction()` opens `db.transaction()`; the first one of an update also inserts the
update id into ProcessedEvent (source "telegram") in that same transaction. A redelivered update
(webhook retry, restart before the offset was confirmed) finds the row and raises
`DuplicateUpdate`, which `UpdateScopeMiddleware` swallows: nothing runs twice. If the handler's
transaction fails, the claim rolls back with it, so a redelivery is processed then.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.processed_updates import EVENT_SOURCE
from core.db.database import Database, insert_for
from core.db.models import ProcessedEvent, utcnow

log = logging.getLogger(__name__)


class DuplicateUpdate(Exception):  # noqa: N818 - a signal
    pass


async def claim_event(session: AsyncSession, source: str, event_id: str) -> bool:
    insert = insert_for(session)
    stmt = (
        insert(ProcessedEvent)
        .values(source=source, event_id=event_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(ProcessedEvent.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


class UpdateScope:
    def __init__(self, db: Database, update_id: int) -> None:
        self.db = db
        self.update_id = update_id
        self.claimed = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.db.transaction() as session:
            if not self.claimed and not await claim_event(session, EVENT_SOURCE, str(self.update_id)):
                raise DuplicateUpdate(self.update_id)
            yield session
        self.claimed = True


class UpdateScopeMiddleware(BaseMiddleware):
    """Outer middleware on `dp.update`: gives handlers `scope`, drops duplicates, and handles one
    chat's updates one at a time (polling runs updates as concurrent tasks; a customer's two quick
    messages must be stored in the order they were sent)."""

    def __init__(self) -> None:
        self._chat_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock_for(self, chat_id: int) -> asyncio.Lock:
        lock = self._chat_locks.get(chat_id)
        if lock is None:
            lock = asyncio.Lock()
            self._chat_locks[chat_id] = lock
        return lock

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        data["scope"] = UpdateScope(data["db"], event.update_id)
        chat = data.get("event_chat")
        try:
            if chat is None:
                return await handler(event, data)
            async with self._lock_for(chat.id):
                return await handler(event, data)
        except DuplicateUpdate:
            log.info("duplicate telegram update ignored", extra={"update_id": event.update_id})
            return None
