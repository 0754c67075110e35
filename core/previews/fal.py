"""FAL through `fal-client`: the only module importing it (tests/test_import_rules.py).

fal-client fixes its hosts at import (`QUEUE_URL_FORMAT = "https://queue.fal.run/"`, no base-URL
argument), and builds the status/result/cancel URLs of a stored request id from that same global.
`FalEditor` sets it from `FAL_QUEUE_BASE` when it is built (http allowed, for a local fake), so
submit, resume and cancel all reach the configured queue. Uploads (another host) are never used:
the photo goes in as a presigned S3 URL, a signed /media/... link or a data URI.

FAL's errors become core/previews/ports.py's: a 4xx other than 408/409/429 is final
(`ImageEditRejectedError`, a 401/403/404 being a configuration fault), everything else is retryable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import fal_client
import fal_client.client as fal_wire
import httpx
from pydantic import SecretStr

from core.previews.ports import EditProgress, EditResult, ImageEditError, ImageEditRejectedError

JWKS_TTL_S = 24 * 3600.0
_RETRYABLE = frozenset({408, 409, 429})


def set_queue_base(base: str | None) -> None:
    """Point fal-client's queue URLs at `base` (None: FAL's own host). Read at call time by the SDK."""
    if base:
        fal_wire.QUEUE_URL_FORMAT = base.rstrip("/") + "/"


class FalEditor:
    def __init__(
        self,
        *,
        key: SecretStr,
        model: str,
        queue_base: str | None,
        jwks_url: str,
        timeout_s: float = 60.0,
    ) -> None:
        set_queue_base(queue_base)
        self._model = model
        self._client = fal_client.AsyncClient(key=key.get_secret_value(), default_timeout=timeout_s)
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=True)
        self._jwks_url = jwks_url
        self._jwks: tuple[float, list[dict[str, Any]]] | None = None

    @property
    def model(self) -> str:
        return self._model

    def arguments(self, *, prompt: str, image_url: str, seed: int | None) -> dict[str, Any]:
        """The model input. Image-edit models take the photo as `image_urls` (nano-banana, FLUX.2,
        Seedream) or `image_url` (Kontext); the safety checker stays on for all."""
        args: dict[str, Any] = {
            "prompt": prompt,
            "num_images": 1,
            "output_format": "jpeg",
            "enable_safety_checker": True,
            "safety_tolerance": "2",
        }
        if "kontext" in self._model:
            args["image_url"] = image_url
        else:
            args["image_urls"] = [image_url]
        if seed is not None:
            args["seed"] = seed
        return args

    async def submit(self, *, prompt: str, image_url: str, seed: int | None, webhook_url: str | None) -> str:
        arguments = self.arguments(prompt=prompt, image_url=image_url, seed=seed)
        try:
            handle = await self._client.submit(self._model, arguments, webhook_url=webhook_url)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one of ours
            raise _translate(exc) from None
        return str(handle.request_id)

    async def status(self, request_id: str) -> EditProgress:
        try:
            status = await self._client.status(self._model, request_id)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one of ours
            raise _translate(exc) from None
        if isinstance(status, fal_client.Completed):
            return EditProgress(done=True, error=status.error)
        if isinstance(status, fal_client.Queued):
            return EditProgress(done=False, position=status.position)
        return EditProgress(done=False)

    async def result(self, request_id: str) -> EditResult:
        try:
            data = await self._client.result(self._model, request_id)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one of ours
            raise _translate(exc) from None
        return parse_output(data)

    async def cancel(self, request_id: str) -> None:
        try:
            await self._client.cancel(self._model, request_id)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one of ours
            raise _translate(exc) from None

    async def download(self, url: str, *, max_bytes: int) -> bytes:
        if url.startswith("data:"):
            raise ImageEditRejectedError("data URI results are not taken")
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise _status_error(response.status_code, f"result image: HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ImageEditRejectedError("result image too large")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ImageEditError(f"result image download failed: {type(exc).__name__}") from None
        return b"".join(chunks)

    async def signing_keys(self) -> Sequence[dict[str, Any]]:
        now = time.monotonic()
        if self._jwks is not None and now - self._jwks[0] < JWKS_TTL_S:
            return self._jwks[1]
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            keys = [k for k in response.json().get("keys", []) if isinstance(k, dict)]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            if self._jwks is not None:
                return self._jwks[1]  # stale keys beat none while FAL's endpoint is down
            raise ImageEditError(f"FAL JWKS unavailable: {type(exc).__name__}") from None
        self._jwks = (now, keys)
        return keys

    def forget_signing_keys(self) -> None:
        """A signature no cached key verifies may be from a rotated key: fetch again (rate-bounded
        by the caller)."""
        self._jwks = None

    async def close(self) -> None:
        await self._http.aclose()
        client = self._client.__dict__.get("_client")  # the SDK's httpx client, once it made one
        if isinstance(client, httpx.AsyncClient):
            await client.aclose()


def parse_output(data: Any) -> EditResult:
    if not isinstance(data, dict):
        raise ImageEditRejectedError("FAL answered an unexpected result shape")
    images = data.get("images") or []
    urls = tuple(str(i["url"]) for i in images if isinstance(i, dict) and i.get("url"))
    seed = data.get("seed")
    nsfw = tuple(bool(x) for x in data.get("has_nsfw_concepts") or ())
    return EditResult(image_urls=urls, seed=int(seed) if isinstance(seed, int) else None, nsfw=nsfw, raw=data)


def _status_error(status: int, message: str) -> ImageEditError:
    if 400 <= status < 500 and status not in _RETRYABLE:
        return ImageEditRejectedError(message, status=status, configuration=status in (401, 403, 404))
    return ImageEditError(message)


def _translate(exc: Exception) -> ImageEditError:
    if isinstance(exc, fal_client.FalClientHTTPError):
        detail = exc.message if isinstance(exc.message, str) else str(exc.message)
        return _status_error(exc.status_code, f"FAL answered {exc.status_code}: {detail[:200]}")
    if isinstance(exc, fal_client.client.FalClientTimeoutError | httpx.HTTPError | TimeoutError):
        return ImageEditError(f"FAL unreachable: {type(exc).__name__}")
    if isinstance(exc, KeyError | ValueError | TypeError):
        return ImageEditError(f"FAL answered an unexpected shape: {type(exc).__name__}")
    return ImageEditError(f"FAL call failed: {type(exc).__name__}")
