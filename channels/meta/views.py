"""Messenger and Instagram webhooks: verify → parse → store once → 200.

    GET  /webhook/facebook, /webhook/fb, /webhook/instagram   subscription handshake
    POST the same paths                                         events, signed by Meta

A POST is checked against `X-Hub-Signature-256` on the raw bytes before anything is parsed; its
messages are stored and their processing queued in one transaction (`core.conversation.ingest`), and
Meta gets its 200 at once: the engine runs later in a worker. A redelivered event is a no-op.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from aiohttp import web
from pydantic import SecretStr

from channels import middleware
from channels.meta.parser import parse_webhook
from channels.middleware import (
    LIMITER_KEY,
    ApiError,
    limit_unsigned,
    note_for_log,
    parse_json,
    read_body,
    require_json,
    signed_webhook,
)
from channels.ratelimit import RateLimiter
from core.conversation.ingest import GroupCommit, already_stored
from core.db.database import Database
from core.settings import Settings
from core.types import InboundMessage

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
MESSENGER_PATHS = ("/webhook/facebook", "/webhook/fb")
INSTAGRAM_PATH = "/webhook/instagram"


def signature_valid(raw: bytes, header: str | None, secrets: list[str]) -> bool:
    """`sha256=<hex HMAC-SHA256(app secret, raw body)>`, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256=") :].strip().lower()
    for secret in secrets:
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, given):
            return True
    return False


def sign(raw: bytes, secret: str) -> str:
    """The header value Meta would send for `raw` (tests, the bench and local tools use it)."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


@dataclass
class MetaWebhook:
    """One webhook endpoint (Messenger or Instagram): its verify token and accepted app secrets."""

    name: str
    settings: Settings
    verify_token: SecretStr | None
    app_secrets: list[SecretStr]
    ingestor: GroupCommit
    db: Database

    async def handshake(self, request: web.Request) -> web.Response:
        mode = request.query.get("hub.mode")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        if self.verify_token is None:
            log.warning("%s webhook handshake refused: its verify token is not configured", self.name)
            return web.Response(status=403, text="verification failed")
        expected = self.verify_token.get_secret_value()
        if mode == "subscribe" and hmac.compare_digest(token.encode(), expected.encode()) and challenge:
            log.info("%s webhook subscription verified", self.name)
            return web.Response(text=challenge[:256], content_type="text/plain")
        log.warning("%s webhook handshake refused: wrong mode or verify token", self.name)
        return web.Response(status=403, text="verification failed")

    async def receive(self, request: web.Request) -> web.Response:
        secrets = [s.get_secret_value() for s in self.app_secrets]
        if not secrets and not self.settings.meta_allow_unsigned:
            log.error(
                "%s webhook POST refused (503): no app secret is configured (META_APP_SECRET%s), so "
                "signatures cannot be checked; set META_ALLOW_UNSIGNED=true only in development",
                self.name,
                " / INSTAGRAM_APP_SECRET" if self.name == "instagram" else "",
            )
            raise ApiError(503, "webhook signature checking is not configured")
        if not secrets:  # META_ALLOW_UNSIGNED (development): every post is unsigned traffic
            await limit_unsigned(request)
        require_json(request)
        raw = await read_body(request, self.settings.max_body_bytes)
        if secrets and not signature_valid(raw, request.headers.get(SIGNATURE_HEADER), secrets):
            await limit_unsigned(request)
            log.warning("%s webhook POST refused (403): missing or wrong %s", self.name, SIGNATURE_HEADER)
            raise ApiError(403, "invalid signature")
        result = parse_webhook(parse_json(raw))
        if result.unknown_object is not None:
            log.info("%s webhook: ignored object %r", self.name, result.unknown_object)
            return web.Response(text="EVENT_RECEIVED")
        messages, charged = await self._within_sender_limits(request, result.messages)
        unanswered = sum(not message.answer for message in messages)
        try:
            # Database away: the middleware answers 503 and Meta redelivers, so nothing is lost; the
            # redelivery is charged to the sender's quota then, not now.
            results = await self.ingestor.ingest(messages) if messages else []
        except Exception:
            await self._refund(request, [messages[i] for i in charged])
            raise
        await self._refund(request, [messages[i] for i in charged if not results[i].stored])
        stored = sum(result.stored for result in results)
        note_for_log(
            request,
            f"{self.name}: {len(messages)} message(s), {stored} new, {len(messages) - stored} redelivered"
            + (f", {unanswered} unanswered (sender flood)" if unanswered else "")
            + (f", skipped {dict(result.skipped)}" if result.skipped else ""),
        )
        return web.Response(text="EVENT_RECEIVED")

    async def _within_sender_limits(
        self, request: web.Request, messages: list[InboundMessage]
    ) -> tuple[list[InboundMessage], list[int]]:
        """Events from a sender over RATE_LIMIT_PER_MINUTE (a flood) are kept but not answered: stored
        for Kimmie to see, with no assistant turn (no LLM spend, no reply storm). Refusing them is not
        an option: an error answer would make Meta redeliver everyone's messages and, after an hour of
        failures, unsubscribe the app.

        Only new events count. A redelivery's token is given back once ingest says it was stored
        before (`receive`); and when one seems over the limit, the events of this post stored before
        are looked up first (one read, on this rare path only), so redeliveries in the same post
        never push a new one over. Returns the messages and the indexes of those that took a token.
        """
        charged, denied = await self._charge(request, messages, range(len(messages)))
        if denied:
            try:
                redelivered = await already_stored(self.db, messages)
            except Exception:  # database away: a 503, and this post is charged when it comes again
                await self._refund(request, [messages[i] for i in charged])
                raise
            await self._refund(request, [messages[i] for i in charged if _mid(messages[i]) in redelivered])
            charged = [i for i in charged if _mid(messages[i]) not in redelivered]
            # A denied redelivery needs no token (ingest does nothing with it); a denied new one may
            # find one now.
            retried, denied = await self._charge(
                request, messages, [i for i in denied if _mid(messages[i]) not in redelivered]
            )
            charged = sorted(charged + retried)
        if denied:
            log.warning(
                "%s webhook: %d event(s) over their sender's rate limit, stored unanswered",
                self.name,
                len(denied),
            )
        flooded = set(denied)
        checked = [replace(m, answer=False) if i in flooded else m for i, m in enumerate(messages)]
        return checked, charged

    async def _charge(
        self, request: web.Request, messages: list[InboundMessage], indexes: Iterable[int]
    ) -> tuple[list[int], list[int]]:
        """One token per message from its sender's bucket: (indexes charged, indexes denied)."""
        charged: list[int] = []
        denied: list[int] = []
        for index in indexes:
            decision = await request.app[LIMITER_KEY].hit(
                _sender_key(messages[index]), self.settings.rate_limit_per_minute
            )
            (charged if decision.allowed else denied).append(index)
        return charged, denied

    async def _refund(self, request: web.Request, messages: list[InboundMessage]) -> None:
        for message in messages:
            await request.app[LIMITER_KEY].refund(_sender_key(message), self.settings.rate_limit_per_minute)


def _sender_key(message: InboundMessage) -> str:
    return f"sender:{message.channel.value}:{message.external_user_id}"


def _mid(message: InboundMessage) -> tuple[str, str]:
    return (message.channel.value, message.platform_message_id)


def setup_routes(
    app: web.Application, *, db: Database, settings: Settings, limiter: RateLimiter | None = None
) -> None:
    """Mount the Meta webhooks (and the channel middlewares, once)."""
    middleware.install(app, settings=settings, limiter=limiter)
    ingestor = GroupCommit(db)  # both webhooks share one writer: concurrent POSTs share commits
    messenger = MetaWebhook(
        name="messenger",
        settings=settings,
        verify_token=settings.facebook_verify_token,
        app_secrets=[s for s in (settings.meta_app_secret,) if s is not None],
        ingestor=ingestor,
        db=db,
    )
    instagram = MetaWebhook(
        name="instagram",
        settings=settings,
        verify_token=settings.instagram_verify_token,
        # Instagram Login apps sign with their own secret; Messenger-platform Instagram with the app's.
        app_secrets=[s for s in (settings.meta_app_secret, settings.instagram_app_secret) if s is not None],
        ingestor=ingestor,
        db=db,
    )
    for path in MESSENGER_PATHS:
        app.router.add_get(path, messenger.handshake, allow_head=False)
        app.router.add_post(path, messenger.receive)
        signed_webhook(app, path)
    app.router.add_get(INSTAGRAM_PATH, instagram.handshake, allow_head=False)
    app.router.add_post(INSTAGRAM_PATH, instagram.receive)
    signed_webhook(app, INSTAGRAM_PATH)
