"""core/photos.py without aiogram: a caption names the target, the photo is uploaded under its
stable key and linked to the pet; every refusal says why and leaves the pet untouched.

Storage is faked at core's own port (`ObjectStorage`); the S3 adapter itself is exercised against a
local moto server in tests/bot/test_photos.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from core import photos
from core.db.database import Database
from core.db.models import Appointment, AppointmentPet, Client, Pet, Service
from core.storage import StorageError, StoredObject

JPEG = b"\xff\xd8\xff\xe0jpeg\xff\xd9"
PHOTO = photos.PhotoFile(unique_id="AgADbig", content_type="image/jpeg")


@dataclass
class MemoryStorage:
    """An `ObjectStorage` keeping objects in a dict; `fail` makes every upload fail."""

    configured: bool = True
    fail: bool = False
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    async def put(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        if self.fail:
            raise StorageError("bucket unreachable")
        self.objects[key] = (data, content_type)
        return StoredObject(key=key, url=f"https://bucket.test/{key}", content_type=content_type)


class Fetch:
    """The channel's download: counts calls, so a refusal can be shown to fetch nothing."""

    def __init__(self, data: bytes = JPEG) -> None:
        self.data = data
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return self.data


async def _pet(db: Database, *, with_appointment: bool = False) -> tuple[int, int | None]:
    async with db.transaction() as session:
        client = Client(name="Ann")
        session.add(client)
        await session.flush()
        pet = Pet(client_id=client.id, name="Bella", photos=[])
        session.add(pet)
        await session.flush()
        if not with_appointment:
            return pet.id, None
        service = Service(code="bath", name="Bath", base_price_cents=4000, base_duration_min=60)
        session.add(service)
        await session.flush()
        start = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
        appointment = Appointment(
            client_id=client.id,
            service_id=service.id,
            start_at=start,
            end_at=start + timedelta(hours=1),
            status="confirmed",
        )
        session.add(appointment)
        await session.flush()
        session.add(AppointmentPet(appointment_id=appointment.id, pet_id=pet.id))
        return pet.id, appointment.id


async def _photos_of(db: Database, pet_id: int) -> list[dict[str, object]]:
    async with db.transaction() as session:
        return list((await session.get_one(Pet, pet_id)).photos or [])


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("pet 12", photos.CaptionTarget(pet_id=12, appointment_id=None, kind="photo")),
        ("Pet #12 style", photos.CaptionTarget(pet_id=12, appointment_id=None, kind="style_reference")),
        ("appt 34 after", photos.CaptionTarget(pet_id=None, appointment_id=34, kind="after")),
        ("appointment 34", photos.CaptionTarget(pet_id=None, appointment_id=34, kind=None)),
        ("Bella after the bath", None),
        (None, None),
    ],
)
def test_a_caption_names_the_target_and_the_kind(
    caption: str | None, expected: photos.CaptionTarget | None
) -> None:
    assert photos.parse_caption(caption) == expected


async def test_a_pet_photo_is_uploaded_under_its_stable_key_and_linked_once(db: Database) -> None:
    pet_id, _ = await _pet(db)
    storage = MemoryStorage()
    for _ in range(2):  # the same file twice: one object, one entry
        filed = await photos.file_photo(
            db.transaction,
            storage,
            prefix="cheshire/",
            photo=PHOTO,
            fetch=Fetch(),
            kind="photo",
            pet_id=pet_id,
        )
    key = f"cheshire/pets/{pet_id}/photo/AgADbig.jpg"
    assert storage.objects == {key: (JPEG, "image/jpeg")}
    assert [(p["key"], p["kind"]) for p in await _photos_of(db, pet_id)] == [(key, "photo")]
    assert filed.summary() == "Saved as Bella's photo."


async def test_an_after_photo_of_an_appointment_goes_to_its_pet(db: Database) -> None:
    pet_id, appointment_id = await _pet(db, with_appointment=True)
    storage = MemoryStorage()
    png = photos.PhotoFile(unique_id="AgADdoc", content_type="image/png")
    filed = await photos.file_photo(
        db.transaction,
        storage,
        prefix="",
        photo=png,
        fetch=Fetch(b"png"),
        kind="after",
        appointment_id=appointment_id,
    )
    assert filed.pet_id == pet_id and filed.key == f"pets/{pet_id}/after/AgADdoc.png"
    assert filed.summary() == f"Saved as Bella's after photo (appointment #{appointment_id})."
    [entry] = await _photos_of(db, pet_id)
    assert entry["appointment_id"] == appointment_id and entry["content_type"] == "image/png"


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("selfie", {"pet_id": 1}, "Unknown photo kind “selfie”."),
        ("before", {"pet_id": 1}, "Before/after photos belong to an appointment"),
        ("photo", {"pet_id": 424242}, "No pet #424242."),
        ("after", {"appointment_id": 424242}, "No appointment #424242."),
    ],
)
async def test_a_refused_photo_is_neither_fetched_nor_stored(
    db: Database, kind: str, target: dict[str, int], message: str
) -> None:
    pet_id, _ = await _pet(db)
    target = {k: (pet_id if v == 1 else v) for k, v in target.items()}
    storage, fetch = MemoryStorage(), Fetch()
    with pytest.raises(photos.PhotoRefusedError, match=message):
        await photos.file_photo(
            db.transaction, storage, prefix="", photo=PHOTO, fetch=fetch, kind=kind, **target
        )
    assert fetch.calls == 0 and storage.objects == {}
    assert await _photos_of(db, pet_id) == []


async def test_a_failed_upload_says_try_again_and_links_nothing(db: Database) -> None:
    pet_id, _ = await _pet(db)
    with pytest.raises(photos.PhotoRefusedError, match="try again in a minute"):
        await photos.file_photo(
            db.transaction,
            MemoryStorage(fail=True),
            prefix="",
            photo=PHOTO,
            fetch=Fetch(),
            kind="photo",
            pet_id=pet_id,
        )
    assert await _photos_of(db, pet_id) == []
