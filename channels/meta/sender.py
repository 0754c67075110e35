"""The Send API adapter: core `OutboundMessage` → Messenger / Instagram `POST /{version}/me/messages`.

Implements `core.ports.ChannelSender` for "messenger" (page access token) and "instagram" (Instagram
access token). Graph errors are mapped by code onto core's delivery errors, so core/delivery.py can
retry, fall back to another channel or alert Kimmie without knowing anything about Meta:

    HTTP 429, codes 4 / 17 / 32 / 613           throttled      → RetryableDeliveryError (+ Retry-After)
    HTTP 5xx, codes 1 / 2 / 1200, timeouts      transient      → RetryableDeliveryError
    10 / 2018278 (Messenger), 10 / 2534022 (IG)  24 h window    → WindowClosedError
    551                                          person unavailable → RecipientUnreachableError
    190 (any subcode)                            token invalid  → ChannelCredentialsError
    anything else                                               → PermanentDeliveryError

With `META_UTILITY_MESSAGES` (the `page_utility_messaging` permission), the Messenger sender declares
`utility_templates`: a reminder past the window goes out as the Page's utility template
(`"messaging_type": "UTILITY"`, `message.template` with name, language, body parameters and postback
buttons), one call.

Each sender declares Meta's 24-hour messaging window in its `capabilities`. With
`META_HUMAN_AGENT_TAG` (the app passed Meta's App Review for it), it declares `human_agent_window_s`
(7 days) there too: core/delivery.py then marks Kimmie's own replies in the band between 24 h and
7 days after the person's last message `human_agent`, and they go out as
`"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"` (never an automated message).

`profile()` looks a person's name up (`GET /{version}/{PSID}?fields=first_name,last_name` with the page
token; `GET /{version}/{IGSID}?fields=name,username` with the Instagram token), mapping errors alike.

A message becomes several Send API calls: images first, then the text split at the platform's limit
(Messenger 2,000 characters, Instagram 1,000 bytes); quick replies (≤ 13, titles ≤ 20 characters)
ride on the last call. Each call is one "part" of the `ChannelSender` contract: a retry resumes after
the parts Meta already accepted, so the person never sees one twice. An image Meta cannot fetch (a
relative link: local storage without PUBLIC_BASE_URL) goes up with its call as multipart `filedata`,
its bytes read by storage key from the storage this sender was wired with; on Messenger the upload is
saved (`is_reusable`) and its `attachment_id` stands in for the bytes on later sends. The token travels in the
Authorization header, never in a URL that could end up in a log line or an exception message.
"""

from __future__ import annotations

import json as json_module
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from core.ports import (
    ChannelCapabilities,
    ChannelCredentialsError,
    PartSent,
    PermanentDeliveryError,
    Profile,
    RecipientUnreachableError,
    RetryableDeliveryError,
    SendResult,
    WindowClosedError,
)
from core.settings import Settings
from core.storage import MediaStorage, StorageError, StorageNotConfiguredError
from core.types import Channel, OutboundMessage, QuickReply, Recipient, UtilityTemplate

log = logging.getLogger(__name__)

MESSAGING_WINDOW_S = 24 * 3600.0
MESSENGER_TEXT_LIMIT_CHARS = 2000
INSTAGRAM_TEXT_LIMIT_BYTES = 1000
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
THROTTLE_CODES = frozenset({4, 17, 32, 613})
TRANSIENT_CODES = frozenset({1, 2, 1200})
WINDOW_CLOSED = frozenset({(10, 2018278), (10, 2534022)})
DEFAULT_THROTTLE_RETRY_S = 60.0
HUMAN_AGENT_WINDOW_S = 7 * 24 * 3600.0
# Profile fields per channel: Messenger's User Profile API, Instagram's user fields.
PROFILE_FIELDS = {"messenger": "first_name,last_name", "instagram": "name,username"}


def _chars(text: str) -> int:
    return len(text)


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def split_text(text: str, limit: int, measure: Callable[[str], int] = _chars) -> list[str]:
    """Split into parts each within `limit` (as `measure`d), preferring paragraph, line and word
    boundaries; a single over-long word is cut between characters (never inside a UTF-8 sequence)."""
    text = text.strip()
    parts: list[str] = []
    while text:
        if measure(text) <= limit:
            parts.append(text)
            break
        # Longest prefix within the limit (binary search: measure may count bytes).
        lo, hi = 1, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure(text[:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        cut = lo
        for separator in ("\n\n", "\n", " "):
            at = text.rfind(separator, 0, cut + 1)
            if at > cut // 2:
                cut = at
                break
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return [part for part in parts if part]


def _quick_replies(quick_replies: tuple[QuickReply, ...]) -> list[dict[str, str]]:
    quick_replies = tuple(q for q in quick_replies if not q.url)  # links are in the text
    shown = quick_replies[:MAX_QUICK_REPLIES]
    if len(quick_replies) > MAX_QUICK_REPLIES:
        log.warning("quick replies cut to %d (were %d)", MAX_QUICK_REPLIES, len(quick_replies))
    return [
        {
            "content_type": "text",
            "title": q.title if len(q.title) <= MAX_QUICK_REPLY_TITLE else q.title[:19] + "…",
            "payload": q.payload,
        }
        for q in shown
    ]


def map_graph_error(status: int, body: Any, retry_after: str | None = None) -> Exception:
    """A Graph API error response → one of core's delivery errors (message without secrets)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    what = f"graph error http={status} code={code} subcode={subcode}: {str(error.get('message', ''))[:200]}"
    hint: float | None = None
    if retry_after:
        try:
            hint = max(0.0, float(retry_after))
        except ValueError:
            hint = None
    if (code, subcode) in WINDOW_CLOSED:
        return WindowClosedError(what)
    if code == 551:
        return RecipientUnreachableError(what)
    if code == 190:
        return ChannelCredentialsError(what)
    if status == 429 or code in THROTTLE_CODES:
        return RetryableDeliveryError(
            what, retry_after_s=hint if hint is not None else DEFAULT_THROTTLE_RETRY_S
        )
    if status >= 500 or code in TRANSIENT_CODES or bool(error.get("is_transient")):
        return RetryableDeliveryError(what, retry_after_s=hint)
    return PermanentDeliveryError(what)


def utility_body(template: UtilityTemplate) -> dict[str, Any]:
    """The `message` of a utility message: the template by name and language, its body's positional
    parameters, and a postback payload per template button."""
    components: list[dict[str, Any]] = [
        {"type": "body", "parameters": [{"type": "text", "text": p} for p in template.parameters]}
    ]
    if template.button_payloads:
        components.append(
            {
                "type": "buttons",
                "parameters": [{"type": "POSTBACK", "payload": p} for p in template.button_payloads],
            }
        )
    return {
        "template": {"name": template.name, "language": {"code": template.language}, "components": components}
    }


def _attachment(payload: dict[str, Any]) -> dict[str, Any]:
    return {"attachment": {"type": "image", "payload": payload}}


def _fetchable(url: str) -> bool:
    """Whether Meta's servers can fetch `url` themselves (an absolute http(s) address)."""
    return url.startswith(("https://", "http://"))


def _image_keys(message: OutboundMessage) -> list[str | None]:
    """Per image part: the storage key to upload from, or None when Meta fetches the URL."""
    if len(message.image_keys) != len(message.image_urls):
        return [None] * len(message.image_urls)
    return [
        None if _fetchable(url) else key
        for url, key in zip(message.image_urls, message.image_keys, strict=True)
    ]


class MetaSender:
    """One channel (Messenger or Instagram) of the Send API."""

    def __init__(
        self,
        channel: Channel,
        *,
        base_url: str,
        version: str,
        token: SecretStr,
        http: Callable[[], aiohttp.ClientSession],
        human_agent_window_s: float | None = None,
        utility_templates: bool = False,
        storage: MediaStorage | None = None,
    ) -> None:
        self.channel = channel
        self._storage = storage
        self._attachment_ids: dict[str, str] = {}  # storage key → Messenger's saved attachment
        self.api_root = f"{base_url.rstrip('/')}/{version}"
        self.url = f"{self.api_root}/me/messages"
        # Read by core/delivery.py: automated messages only inside Meta's 24 h window; Kimmie's replies
        # up to 7 days only when the app may use the HUMAN_AGENT tag.
        self.capabilities = ChannelCapabilities(
            messaging_window_s=MESSAGING_WINDOW_S,
            human_agent_window_s=human_agent_window_s,
            utility_templates=utility_templates,
        )
        self._token = token
        self._http = http
        # The alert Kimmie gets (once) about an invalid token, shared with the profile look-ups.
        self.credentials_fault_key = "meta:token" if channel is Channel.MESSENGER else "meta:instagram_token"
        if channel is Channel.INSTAGRAM:
            self._limit, self._measure = INSTAGRAM_TEXT_LIMIT_BYTES, _utf8_bytes
        else:
            self._limit, self._measure = MESSENGER_TEXT_LIMIT_CHARS, _chars

    def requests_for(self, message: OutboundMessage) -> list[dict[str, Any]]:
        """The `message` objects of the Send API calls for one outbound message, in order."""
        # `is_reusable` is a Messenger option; Instagram's attachment payload is the URL alone.
        extra = {"is_reusable": True} if self.channel is Channel.MESSENGER else {}
        bodies: list[dict[str, Any]] = [
            {"attachment": {"type": "image", "payload": {"url": url, **extra}}} for url in message.image_urls
        ]
        bodies += [{"text": part} for part in split_text(message.text, self._limit, self._measure)]
        if any(not q.url for q in message.quick_replies):
            if not bodies:
                bodies.append({"text": "…"})
            # Instagram shows quick replies on text only; Messenger on either.
            texts = [i for i, body in enumerate(bodies) if "text" in body]
            target = texts[-1] if texts else len(bodies) - 1
            bodies[target]["quick_replies"] = _quick_replies(message.quick_replies)
        return bodies

    async def send(
        self,
        recipient: Recipient,
        message: OutboundMessage,
        *,
        resume_from: int = 0,
        on_part_sent: PartSent | None = None,
    ) -> SendResult:
        if message.as_template and message.template is not None:
            return await self._send_template(recipient, message.template, resume_from, on_part_sent)
        bodies = self.requests_for(message)
        if not bodies:
            raise PermanentDeliveryError("empty message: no text, image or quick reply")
        first_id: str | None = None
        # Only delivery sets `human_agent`, and only while we declare a human-agent window.
        kind = (
            {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
            if message.human_agent
            else {"messaging_type": "RESPONSE"}
        )
        # One Send API call is one part; `requests_for` is deterministic, so part N is the same call on
        # a retry and the parts an earlier attempt got accepted are skipped.
        images = _image_keys(message) if self._storage is not None else []
        for index in range(max(0, resume_from), len(bodies)):
            call = {"recipient": {"id": recipient.external_id}, **kind, "message": bodies[index]}
            upload = images[index] if index < len(images) else None
            message_id = await (self._upload(call, upload) if upload else self._post(call))
            if on_part_sent is not None:
                await on_part_sent(index, message_id)
            first_id = first_id or message_id
        return SendResult(platform_message_id=first_id)

    async def _send_template(
        self,
        recipient: Recipient,
        template: UtilityTemplate,
        resume_from: int,
        on_part_sent: PartSent | None,
    ) -> SendResult:
        """One call (one part): Messenger's utility message, `"messaging_type": "UTILITY"`."""
        if resume_from >= 1:
            return SendResult(platform_message_id=None)
        message_id = await self._post(
            {
                "recipient": {"id": recipient.external_id},
                "messaging_type": "UTILITY",
                "message": utility_body(template),
            }
        )
        if on_part_sent is not None:
            await on_part_sent(0, message_id)
        return SendResult(platform_message_id=message_id)

    async def profile(self, recipient: Recipient) -> Profile | None:
        """The person's name (and Instagram username) as Meta gives it to this page/account."""
        fields = PROFILE_FIELDS[self.channel.value]
        url = f"{self.api_root}/{quote(recipient.external_id, safe='')}"
        body = await self._call("GET", url, fields=fields)
        if not isinstance(body, dict):
            return None

        def field(key: str) -> str:
            value = body.get(key)
            return value.strip() if isinstance(value, str) else ""

        name = field("name") or " ".join(p for p in (field("first_name"), field("last_name")) if p)
        handle = field("username")
        if not name and not handle:
            return None
        return Profile(name=name[:200] or None, handle=handle[:200] or None)

    async def _upload(self, data: dict[str, Any], key: str) -> str | None:
        """An image part whose URL Meta cannot fetch: its saved attachment, else its bytes."""
        saved = self._attachment_ids.get(key)
        if saved is not None:
            return await self._post({**data, "message": _attachment({"attachment_id": saved})})
        assert self._storage is not None  # _image_keys names keys only with a storage
        try:
            blob = await self._storage.get(key)
        except (StorageError, StorageNotConfiguredError, OSError) as exc:
            raise RetryableDeliveryError(f"image {key} unreadable: {type(exc).__name__}") from None
        payload = {"is_reusable": True} if self.channel is Channel.MESSENGER else {}
        form = aiohttp.FormData()
        for name, value in {**data, "message": _attachment(payload)}.items():
            form.add_field(name, value if isinstance(value, str) else json_module.dumps(value))
        form.add_field("filedata", blob, filename=key.rsplit("/", 1)[-1], content_type="image/jpeg")
        body = await self._call("POST", self.url, data=form)
        if isinstance(body, dict) and body.get("attachment_id"):
            self._attachment_ids[key] = str(body["attachment_id"])
        message_id = body.get("message_id") if isinstance(body, dict) else None
        return str(message_id) if message_id is not None else None

    async def _post(self, data: dict[str, Any]) -> str | None:
        body = await self._call("POST", self.url, json=data)
        message_id = body.get("message_id") if isinstance(body, dict) else None
        return str(message_id) if message_id is not None else None

    async def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: aiohttp.FormData | None = None,
        fields: str | None = None,
    ) -> Any:
        """One Graph API call; its JSON body, or one of core's delivery errors."""
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        params = {"fields": fields} if fields is not None else None
        try:
            async with self._http().request(
                method, url, json=json, data=data, params=params, headers=headers
            ) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status >= 400 or (isinstance(body, dict) and "error" in body):
                    raise map_graph_error(response.status, body, response.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            # ClientError messages can include the URL (no token there: it is in a header).
            what = "send" if method == "POST" else "profile lookup"
            raise RetryableDeliveryError(
                f"{self.channel.value} {what} failed: {type(exc).__name__}"
            ) from None
        return body


class MetaSenders:
    """Owns the HTTP session (created at start-up, closed at shutdown) and the configured senders."""

    def __init__(self, settings: Settings, *, storage: MediaStorage | None = None) -> None:
        """`storage`: where images without a public URL are read from, to upload their bytes."""
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.senders: dict[str, MetaSender] = {}
        base = settings.meta_graph_api_base
        version = settings.meta_graph_api_version
        human_agent_window_s = HUMAN_AGENT_WINDOW_S if settings.meta_human_agent_tag else None
        if settings.facebook_page_access_token is not None:
            self.senders[Channel.MESSENGER.value] = MetaSender(
                Channel.MESSENGER,
                base_url=base,
                version=version,
                token=settings.facebook_page_access_token,
                http=self.http,
                human_agent_window_s=human_agent_window_s,
                # Messenger only: Meta offers no utility messages on Instagram.
                utility_templates=settings.meta_utility_messages,
                storage=storage,
            )
        if settings.instagram_access_token is not None:
            self.senders[Channel.INSTAGRAM.value] = MetaSender(
                Channel.INSTAGRAM,
                base_url=settings.instagram_graph_api_base or base,
                version=version,
                token=settings.instagram_access_token,
                http=self.http,
                human_agent_window_s=human_agent_window_s,
                storage=storage,
            )

    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RetryableDeliveryError("meta sender not started yet")
        return self._session

    async def fetch_photo(self, attachment: Mapping[str, Any]) -> bytes:
        """A customer's image attachment (Meta's CDN URL in the webhook; it expires, so fetched at once
        by the preview job). At most PREVIEW_MAX_BYTES (+1, so the check refuses it as too big)."""
        url = str(attachment.get("url") or "")
        if not url.startswith(("https://", "http://")):
            raise PermanentDeliveryError("image attachment without a URL")
        limit = self.settings.preview_max_bytes
        try:
            async with self.http().get(url) as response:
                if response.status in (403, 404, 410):  # Meta's CDN link expired or was never ours
                    raise PermanentDeliveryError(f"image download answered {response.status}")
                if response.status >= 400:
                    raise RetryableDeliveryError(f"image download answered {response.status}")
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        break  # enough to know it is too big
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableDeliveryError(f"image download failed: {type(exc).__name__}") from None

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.meta_send_timeout_s, connect=5)
            self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
