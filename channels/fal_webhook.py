"""POST /webhook/fal: FAL's call when a queued preview finished (only with PUBLIC_BASE_URL, which is
where FAL is told to call). core/previews verifies the Ed25519 signature against FAL's JWKS (401 when
it fails, 503 while the keys cannot be had: FAL retries) and makes the preview job due at once; the
job reads the result through the SDK, so nothing in the body is trusted beyond the request id."""

from __future__ import annotations

from aiohttp import web

from channels.middleware import ApiError, limit_unsigned, read_body, signed_webhook
from core.previews.service import Previews
from core.settings import Settings

PATH = "/webhook/fal"


def setup_routes(app: web.Application, *, settings: Settings, previews: Previews) -> None:
    async def fal_webhook(request: web.Request) -> web.Response:
        body = await read_body(request, settings.max_body_bytes)
        status = await previews.on_webhook(request.headers, body)
        if status == 401:
            await limit_unsigned(request)
            raise ApiError(401, "invalid FAL webhook signature")
        if status != 200:
            raise ApiError(status, "webhook keys unavailable, retry later")
        return web.json_response({"ok": True})

    signed_webhook(app, PATH)
    app.router.add_post(PATH, fal_webhook)
