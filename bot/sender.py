"""The Telegram ChannelSender: core's OutboundMessage → Bot API calls.

- Text is HTML-escaped (customers and Kimmie type `<`, `&`) and sent with parse_mode HTML.
- Long texts are split at Telegram's 4,096-character limit, on a line or word boundary when possible.
- Quick replies become inline keyboard buttons whose callback_data is the payload (ASCII, <= 64 bytes).
- Images go out with sendPhoto; several (a preview's three angles) as one sendMediaGroup album. An
  image Telegram cannot fetch (a relative link: local storage without PUBLIC_BASE_URL) is uploaded:
  its bytes are read by storage key from the storage this sender was wired with. Telegram's file_id
  for an upload is remembered, so a resend of the same image (a retry, /client) is not uploaded again.
- A token-bucket limiter keeps sends under Telegram's limits: ~30 messages/s overall, ~1/s per chat
  (with a small burst, so a three-part reply is not slowed down). Telegram counts per bot, not per
  process: with REDIS_URL set the buckets live in Redis (`RedisSendLimiter`), shared by every process.
- Errors map to core.ports delivery errors: 429 → RetryableDeliveryError(retry_after) (aiogram does not
  retry; the deliver job reschedules), 403 → RecipientUnreachableError, 401 → ChannelCredentialsError.

Every Bot API call (a photo, a piece of text) is one "part" of the `ChannelSender` contract, planned
deterministically from the message. Each accepted part is reported to the caller, which records it in
the database (core/delivery.py), and a retry resumes after the recorded parts: the customer sees each
part once, across retries, restarts and workers.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from io import BytesIO
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.enums import ChatAction, ParseMode
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BufferedInputFile,
    InputMediaAudio,
    InputMediaDocument,
    InputMediaLivePhoto,
    InputMediaPhoto,
    InputMediaVideo,
)
from redis.exceptions import RedisError

from bot.deferred import TELEGRAM_CAPABILITIES
from bot.keyboards import quick_reply_keyboard
from core.ports import (
    ChannelCredentialsError,
    PartSent,
    PermanentDeliveryError,
    RecipientUnreachableError,
    RetryableDeliveryError,
    SendResult,
)
from core.storage import MediaStorage, StorageError, StorageNotConfiguredError
from core.types import OutboundMessage, Recipient

log = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_CAPTION = 1024
T = TypeVar("T")
MediaItem = InputMediaAudio | InputMediaDocument | InputMediaLivePhoto | InputMediaPhoto | InputMediaVideo


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, preferring newlines, then spaces."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", limit // 2, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", limit // 2, limit + 1)
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def reserve(self, now: float) -> float:
        """Take one token (possibly in the future); returns how long to wait for it."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class SendLimiter:
    """Global and per-chat token buckets. Reservations are made under a lock, waits outside it."""

    def __init__(
        self,
        *,
        global_rate: float = 28.0,
        global_burst: float = 28.0,
        chat_rate: float = 1.0,
        chat_burst: float = 3.0,
        max_chats: int = 10_000,
    ) -> None:
        self._global = TokenBucket(global_rate, global_burst)
        self._chat_rate = chat_rate
        self._chat_burst = chat_burst
        self._chats: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_chats = max_chats
        self._lock = asyncio.Lock()

    def _bucket(self, chat: str) -> TokenBucket:
        bucket = self._chats.get(chat)
        if bucket is None:
            bucket = self._chats[chat] = TokenBucket(self._chat_rate, self._chat_burst)
            if len(self._chats) > self._max_chats:
                self._chats.popitem(last=False)
        else:
            self._chats.move_to_end(chat)
        return bucket

    async def acquire(self, chat: str) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = max(self._global.reserve(now), self._bucket(chat).reserve(now))
        if wait > 0:
            await asyncio.sleep(wait)

    async def close(self) -> None:
        return None


# KEYS: the global bucket, the chat's bucket. ARGV: global rate and burst, chat rate and burst (rates in
# tokens per ms). Takes one token from each (possibly ahead of time) and returns the wait in ms. Time is
# the Redis server's own clock, so processes on different hosts agree on it.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i = 1, 2 do
  local rate = tonumber(ARGV[i * 2 - 1])
  local burst = tonumber(ARGV[i * 2])
  local state = redis.call('HMGET', KEYS[i], 't', 's')
  local tokens = tonumber(state[1])
  local stamp = tonumber(state[2])
  if tokens == nil then tokens = burst; stamp = now end
  if now > stamp then tokens = math.min(burst, tokens + (now - stamp) * rate) end
  tokens = tokens - 1
  if tokens < 0 and -tokens / rate > wait then wait = -tokens / rate end
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 's', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tokens) / rate) + 1000)
end
return math.ceil(wait)
"""


class RedisSendLimiter:
    """`SendLimiter`'s buckets in Redis, reserved atomically by one script: every process sending as
    this bot draws on one budget. If Redis is unreachable, this process falls back to its own buckets
    (and says so once): sending a little too fast beats not sending."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cheshire:tg-send:",
        global_rate: float = 28.0,
        global_burst: float = 28.0,
        chat_rate: float = 1.0,
        chat_burst: float = 3.0,
    ) -> None:
        import redis.asyncio as redis_asyncio  # only loaded when REDIS_URL is set

        self._redis: Any = redis_asyncio.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._redis.register_script(_RESERVE_LUA)
        self._prefix = prefix
        self._args = [global_rate / 1000.0, global_burst, chat_rate / 1000.0, chat_burst]
        self._local = SendLimiter(
            global_rate=global_rate, global_burst=global_burst, chat_rate=chat_rate, chat_burst=chat_burst
        )
        self._warned = False

    async def reserve(self, chat: str) -> float | None:
        """Take a send slot for `chat`: seconds until it is due, or None when Redis cannot say."""
        try:
            wait_ms = await self._script(keys=[self._prefix + "global", self._prefix + chat], args=self._args)
        except (RedisError, OSError) as exc:
            if not self._warned:
                log.warning(
                    "telegram send limiter: redis unavailable, limiting per process (%s)", type(exc).__name__
                )
                self._warned = True
            return None
        self._warned = False
        return int(wait_ms) / 1000.0

    async def acquire(self, chat: str) -> None:
        wait = await self.reserve(chat)
        if wait is None:
            await self._local.acquire(chat)
        elif wait > 0:
            await asyncio.sleep(wait)

    async def close(self) -> None:
        await self._redis.aclose()


def build_send_limiter(redis_url: str | None) -> SendLimiter | RedisSendLimiter:
    return RedisSendLimiter(redis_url) if redis_url else SendLimiter()


class TelegramSender:
    """core.ports.ChannelSender for channel "telegram": no messaging window, resumable parts."""

    capabilities = TELEGRAM_CAPABILITIES
    # A refused token is alerted under core's default key ("telegram:token").
    credentials_fault_key: str | None = None

    def __init__(
        self,
        bot: Bot,
        *,
        limiter: SendLimiter | RedisSendLimiter | None = None,
        storage: MediaStorage | None = None,
    ) -> None:
        self.bot = bot
        self.limiter = limiter or SendLimiter()
        self.uploads = TelegramUploads(storage)

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult:
        chat = recipient.external_id
        steps = self._plan(chat, message)
        last_id: str | None = None
        for index in range(max(0, resume_from), len(steps)):
            await self.limiter.acquire(chat)
            sent = await self._call(chat, steps[index])
            # An album answers with its messages; the last one stands for the part.
            last_id = str((sent[-1] if isinstance(sent, list) else sent).message_id)
            if on_part_sent is not None:
                await on_part_sent(index, last_id)
        return SendResult(platform_message_id=last_id)

    async def fetch_photo(self, attachment: Mapping[str, Any]) -> bytes:
        """A customer's photo, by its Telegram file id (core/previews asks for the bytes)."""
        file_id = str(attachment.get("file_id") or "")
        if not file_id:
            raise PermanentDeliveryError("photo without a file id")
        buffer = BytesIO()
        await self._call("", partial(self.bot.download, file_id, destination=buffer))
        return buffer.getvalue()

    async def send_typing(self, chat_id: int | str) -> None:
        """ "typing…" while the engine works; best effort, never fails the caller."""
        try:
            await self.bot.send_chat_action(chat_id=chat_id, action=ChatAction.TYPING)
        except Exception:
            log.debug("typing indicator failed", exc_info=True)

    # ------------------------------------------------------------------------------------------
    def _plan(self, chat: str, message: OutboundMessage) -> list[Callable[[], Awaitable[Any]]]:
        """One Bot API call per part, in order; a pure function of the message (resuming relies on it)."""
        keyboard = quick_reply_keyboard(message.quick_replies)
        texts = split_text(message.text) if message.text.strip() else []
        steps: list[Callable[[], Awaitable[Any]]] = []
        if len(message.image_urls) > 1:
            # Several images (a preview's three angles) are one album: sendMediaGroup, which takes no
            # buttons, so they go on the text after it (or on a short line when there is none).
            steps.append(partial(self._send_album, chat, _images(message)[:10]))
            if not texts and keyboard is not None:
                texts = ["…"]
        if len(message.image_urls) == 1:
            markup = keyboard if not texts else None
            steps.append(partial(self._send_photo, chat, _images(message)[0], markup))
        for n, part in enumerate(texts):
            markup = keyboard if n == len(texts) - 1 else None
            steps.append(
                partial(
                    self.bot.send_message,
                    chat_id=chat,
                    text=html.escape(part, quote=False),
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
            )
        if not steps:
            raise PermanentDeliveryError("empty message")
        return steps

    async def _send_photo(self, chat: str, image: tuple[str, str | None], markup: Any) -> Any:
        sent = await self.bot.send_photo(
            chat_id=chat, photo=await self.uploads.media(*image), reply_markup=markup
        )
        self.uploads.remember(image[1], sent)
        return sent

    async def _send_album(self, chat: str, images: list[tuple[str, str | None]]) -> Any:
        album: list[MediaItem] = [InputMediaPhoto(media=await self.uploads.media(*image)) for image in images]
        sent = await self.bot.send_media_group(chat_id=chat, media=album)
        for image, message in zip(images, sent, strict=False):
            self.uploads.remember(image[1], message)
        return sent

    async def _call(self, chat: str, step: Callable[[], Awaitable[T]]) -> T:
        try:
            return await step()
        except TelegramRetryAfter as exc:
            # No sleeping here: the deliver job is rescheduled after retry_after, freeing the worker.
            raise RetryableDeliveryError(
                "telegram rate limit", retry_after_s=float(exc.retry_after)
            ) from None
        except TelegramForbiddenError:
            raise RecipientUnreachableError("the user blocked the bot") from None
        except TelegramUnauthorizedError:
            raise ChannelCredentialsError("TELEGRAM_BOT_TOKEN was rejected by Telegram") from None
        except TelegramNotFound:
            raise RecipientUnreachableError("chat not found") from None
        except TelegramBadRequest as exc:
            if "chat not found" in exc.message.lower() or "user is deactivated" in exc.message.lower():
                raise RecipientUnreachableError("chat not found") from None
            raise PermanentDeliveryError(f"telegram refused the message: {exc.message[:200]}") from None
        except (TelegramNetworkError, TelegramServerError) as exc:
            raise RetryableDeliveryError(f"telegram unavailable: {type(exc).__name__}") from None


def _images(message: OutboundMessage) -> list[tuple[str, str | None]]:
    """(url, storage key or None) per image."""
    if len(message.image_keys) != len(message.image_urls):
        return [(url, None) for url in message.image_urls]
    return list(zip(message.image_urls, message.image_keys, strict=True))


def fetchable(url: str) -> bool:
    """Whether Telegram's servers can fetch `url` themselves (an absolute http(s) address)."""
    return url.startswith(("https://", "http://"))


class TelegramUploads:
    """Images Telegram cannot fetch go up as bytes, read by storage key; the file_id Telegram gives an
    upload stands in for it afterwards (bounded, per process: a miss only costs one more upload)."""

    def __init__(self, storage: MediaStorage | None, *, max_ids: int = 2_000) -> None:
        self.storage = storage
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._max = max_ids

    async def media(self, url: str, key: str | None) -> str | BufferedInputFile:
        if fetchable(url) or not key or self.storage is None:
            return url
        known = self._ids.get(key)
        if known is not None:
            self._ids.move_to_end(key)
            return known
        try:
            data = await self.storage.get(key)
        except (StorageError, StorageNotConfiguredError, OSError) as exc:
            raise RetryableDeliveryError(f"image {key} unreadable: {type(exc).__name__}") from None
        return BufferedInputFile(data, filename=key.rsplit("/", 1)[-1] or "image.jpg")

    def remember(self, key: str | None, sent: Any) -> None:
        photos = getattr(sent, "photo", None)
        if not key or not photos:
            return
        self._ids[key] = str(photos[-1].file_id)  # the largest size; any size resends the photo
        self._ids.move_to_end(key)
        if len(self._ids) > self._max:
            self._ids.popitem(last=False)


async def stored_picture(storage: MediaStorage, key: str) -> str | BufferedInputFile | None:
    """A stored picture as Telegram takes it (Kimmie's card, /client): a link Telegram can fetch (S3,
    or local storage with PUBLIC_BASE_URL), else the bytes to upload; None when it cannot be read."""
    try:
        link = await storage.link(key, expires_s=600)
        if link and fetchable(link):
            return link
        return BufferedInputFile(await storage.get(key), filename=key.rsplit("/", 1)[-1] or "image.jpg")
    except (StorageError, StorageNotConfiguredError, OSError):
        log.info("stored picture unreadable; sending text only")
        return None
