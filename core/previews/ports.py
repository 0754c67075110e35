"""What the preview service needs from an image-edit vendor (core/previews/fal.py implements it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class ImageEditError(Exception):
    """The vendor is down, timed out or throttled us: try again later."""


class ImageEditRejectedError(ImageEditError):
    """The vendor refused the request for good (4xx: bad input, unknown model, key refused)."""

    def __init__(self, message: str, *, status: int | None = None, configuration: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.configuration = configuration  # our key or model setting is wrong: Kimmie must hear


@dataclass(frozen=True, slots=True)
class EditProgress:
    done: bool
    position: int | None = None
    error: str | None = None  # set when done and the model failed


@dataclass(frozen=True, slots=True)
class EditResult:
    image_urls: tuple[str, ...]
    seed: int | None = None
    nsfw: tuple[bool, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class ImageEditor(Protocol):
    @property
    def model(self) -> str: ...

    async def submit(self, *, prompt: str, image_url: str, seed: int | None, webhook_url: str | None) -> str:
        """Queue one edit; the vendor's request id."""
        ...

    async def status(self, request_id: str) -> EditProgress: ...

    async def result(self, request_id: str) -> EditResult: ...

    async def cancel(self, request_id: str) -> None: ...

    async def download(self, url: str, *, max_bytes: int) -> bytes:
        """A result image's bytes (the vendor's URLs expire, so they are copied at once)."""
        ...

    async def signing_keys(self) -> Sequence[dict[str, Any]]:
        """The vendor's webhook verification keys (JWKS `keys`)."""
        ...

    async def close(self) -> None: ...
