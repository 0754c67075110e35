"""Object storage (S3) for pet photos, before/after pictures and style references.

The only module importing `aioboto3`. Bucket, prefix, region, credentials and endpoint come from
settings (`S3_BUCKET`, `S3_PREFIX`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL_S3`). Without a bucket the storage refuses uploads with `StorageNotConfiguredError`.

Keys are stable (`{prefix}pets/{pet_id}/{kind}/{unique_id}{ext}`), so uploading the same file twice
overwrites one object instead of creating a second, and linking it twice keeps one entry.
"""

from __future__ import annotations

import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import signing
from core.db.models import Appointment, AppointmentPet, Pet
from core.settings import Settings

PHOTO_KINDS = ("photo", "before", "after", "style_reference")


class StorageNotConfiguredError(Exception):
    """No S3 bucket configured: uploads are refused (the message is safe to show Kimmie)."""


class StorageError(Exception):
    """The upload failed (network, credentials, bucket)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    url: str
    content_type: str


class ObjectStorage(Protocol):
    @property
    def configured(self) -> bool: ...

    async def put(self, key: str, data: bytes, *, content_type: str) -> StoredObject: ...


class MediaStorage(ObjectStorage, Protocol):
    """Storage that can also read an object back and hand out a short-lived link to it (previews:
    the customer's photo for FAL, the results for the channels)."""

    async def get(self, key: str) -> bytes: ...

    async def link(self, key: str, *, expires_s: int) -> str | None:
        """A URL that can be fetched for `expires_s` (relative when there is no public address)."""
        ...


def extension_for(content_type: str | None, fallback: str = ".jpg") -> str:
    if not content_type:
        return fallback
    if content_type == "image/jpeg":
        return ".jpg"
    return mimetypes.guess_extension(content_type) or fallback


def pet_photo_key(prefix: str, *, pet_id: int, kind: str, unique_id: str, ext: str = ".jpg") -> str:
    if kind not in PHOTO_KINDS:
        raise ValueError(f"unknown photo kind {kind!r}")
    safe_id = "".join(ch for ch in unique_id if ch.isalnum() or ch in "-_") or "file"
    return f"{prefix}pets/{pet_id}/{kind}/{safe_id}{ext}"


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        self._bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self._region = settings.aws_region
        self._endpoint = settings.aws_endpoint_url_s3
        self._key_id = settings.aws_access_key_id
        self._secret = settings.aws_secret_access_key

    @property
    def configured(self) -> bool:
        return bool(self._bucket)

    def _client(self) -> Any:
        import aioboto3
        from aiobotocore.config import AioConfig

        session = aioboto3.Session()
        kwargs: dict[str, Any] = {"region_name": self._region}
        if self._endpoint:
            kwargs["endpoint_url"] = self._endpoint
            kwargs["config"] = AioConfig(s3={"addressing_style": "path"})
        if self._key_id and self._secret:
            kwargs["aws_access_key_id"] = self._key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = self._secret.get_secret_value()
        return session.client("s3", **kwargs)

    def url_for(self, key: str) -> str:
        if self._endpoint:
            return f"{self._endpoint.rstrip('/')}/{self._bucket}/{key}"
        return f"https://{self._bucket}.s3.{self._region}.amazonaws.com/{key}"

    async def put(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        if not self._bucket:
            raise StorageNotConfiguredError("Photo storage is not set up (S3_BUCKET is empty).")
        try:
            async with self._client() as s3:
                await s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)
        except Exception as exc:  # botocore raises many shapes; none must leak out of this adapter
            raise StorageError(f"upload of {key} failed: {type(exc).__name__}") from exc
        return StoredObject(key=key, url=self.url_for(key), content_type=content_type)

    async def presigned_url(self, key: str, *, expires_s: int = 3600) -> str:
        if not self._bucket:
            raise StorageNotConfiguredError("Photo storage is not set up (S3_BUCKET is empty).")
        try:
            async with self._client() as s3:
                url: str = await s3.generate_presigned_url(
                    "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_s
                )
        except Exception as exc:  # never let a botocore type out of this adapter
            raise StorageError(f"could not sign {key}: {type(exc).__name__}") from exc
        return url

    async def get(self, key: str) -> bytes:
        if not self._bucket:
            raise StorageNotConfiguredError("Photo storage is not set up (S3_BUCKET is empty).")
        try:
            async with self._client() as s3:
                answer = await s3.get_object(Bucket=self._bucket, Key=key)
                async with answer["Body"] as body:
                    data: bytes = await body.read()
        except Exception as exc:  # never let a botocore type out of this adapter
            raise StorageError(f"download of {key} failed: {type(exc).__name__}") from exc
        return data

    async def link(self, key: str, *, expires_s: int) -> str | None:
        return await self.presigned_url(key, expires_s=expires_s)


class LocalStorage:
    """Files under a directory (`var/media/` by default) when no S3 bucket is configured. Links are
    `{PUBLIC_BASE_URL}/media/<key>?e=<expiry>&s=<signature>` (channels/web/photos.py serves them),
    relative without a public address (then FAL gets the photo as a data URI)."""

    def __init__(self, root: Path, *, public_base_url: str | None, signing_key: bytes) -> None:
        self.root = root
        self.prefix = ""
        self._public = public_base_url
        self._key = signing_key

    @property
    def configured(self) -> bool:
        return True

    def path_for(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or ".." in key.split("/"):
            raise StorageError("key outside the media directory")
        return path

    async def put(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)  # readers never see half a file
        except OSError as exc:
            raise StorageError(f"writing {key} failed: {type(exc).__name__}") from exc
        return StoredObject(key=key, url=f"/media/{key}", content_type=content_type)

    async def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"reading {key} failed: {type(exc).__name__}") from exc

    def signed_path(self, key: str, *, expires_s: int, now: float | None = None) -> str:
        expiry = int((now if now is not None else time.time()) + expires_s)
        return f"/media/{key}?e={expiry}&s={signing.mac(self._key, 'media', f'{key}:{expiry}')}"

    def verify(self, key: str, expiry: str, signature: str, *, now: float | None = None) -> bool:
        if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
            return False
        return signing.matches(self._key, "media", f"{key}:{expiry}", signature)

    async def link(self, key: str, *, expires_s: int) -> str | None:
        # Without a public address the link is relative: the web chat (same origin) can show it,
        # FAL cannot fetch it (it gets a data URI instead).
        return (self._public or "") + self.signed_path(key, expires_s=expires_s)


def media_storage(settings: Settings) -> S3Storage | LocalStorage:
    """S3 when S3_BUCKET is set, else files under MEDIA_DIR (var/media/)."""
    if settings.s3_bucket:
        return S3Storage(settings)
    secret = settings.media_signing_secret or settings.fal_ai_key or SecretStr("cheshire-media")
    return LocalStorage(
        Path(settings.media_dir),
        public_base_url=settings.public_base_url,
        signing_key=signing.derive_key("cheshire-media", secret),
    )


class PhotoTargetError(LookupError):
    """The pet or appointment to attach a photo to does not exist (message safe to show Kimmie)."""


async def resolve_photo_target(
    session: AsyncSession, *, pet_id: int | None = None, appointment_id: int | None = None
) -> tuple[int, int | None]:
    """(pet_id, appointment_id) for a photo: an appointment means its first pet unless one is named."""
    if appointment_id is not None:
        appointment = await session.get(Appointment, appointment_id)
        if appointment is None:
            raise PhotoTargetError(f"No appointment #{appointment_id}.")
        rows = await session.execute(
            select(AppointmentPet.pet_id)
            .where(AppointmentPet.appointment_id == appointment_id)
            .order_by(AppointmentPet.pet_id)
        )
        pet_ids = list(rows.scalars())
        if pet_id is None:
            if not pet_ids:
                raise PhotoTargetError(f"Appointment #{appointment_id} has no pet.")
            pet_id = pet_ids[0]
        elif pet_id not in pet_ids:
            raise PhotoTargetError(f"Pet #{pet_id} is not on appointment #{appointment_id}.")
    if pet_id is None or await session.get(Pet, pet_id) is None:
        raise PhotoTargetError(f"No pet #{pet_id}.")
    return pet_id, appointment_id


async def link_pet_photo(
    session: AsyncSession,
    *,
    pet_id: int,
    stored: StoredObject,
    kind: str,
    appointment_id: int | None = None,
) -> Pet:
    """Record an uploaded photo on the pet (idempotent per key). Runs in the caller's unit of work."""
    if kind not in PHOTO_KINDS:
        raise ValueError(f"unknown photo kind {kind!r}")
    pet = await session.get(Pet, pet_id)
    if pet is None:
        raise PhotoTargetError(f"No pet #{pet_id}.")
    photos = [p for p in (pet.photos or []) if p.get("key") != stored.key]
    entry: dict[str, Any] = {
        "url": stored.url,
        "key": stored.key,
        "kind": kind,
        "content_type": stored.content_type,
    }
    if appointment_id is not None:
        entry["appointment_id"] = appointment_id
    photos.append(entry)
    pet.photos = photos  # a new list, so the JSON column is seen as changed
    await session.flush()
    return pet
