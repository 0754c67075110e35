"""Customer photos are decoded and written again by Pillow: type, size and corruption are refused
clearly, EXIF is gone, the long side is at most 1,536 px, and a polyglot's payload does not survive."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.previews.images import MAX_SIDE_PX, PhotoRejectedError, clean_photo

LIMIT = 5 * 1024 * 1024


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (800, 600), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(out, format=fmt, **save)
    return out.getvalue()


def with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 6  # Orientation: rotated 90° clockwise
    return image_bytes(size=(400, 200), exif=exif.tobytes())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_images_come_out_as_clean_jpeg(fmt: str) -> None:
    clean = clean_photo(image_bytes(fmt), max_bytes=LIMIT)
    with Image.open(io.BytesIO(clean.data)) as out:
        assert out.format == "JPEG" and out.size == (800, 600)
    assert clean.content_type == "image/jpeg"


def test_exif_is_stripped_and_orientation_applied() -> None:
    clean = clean_photo(with_exif(), max_bytes=LIMIT)
    assert b"SecretCam" not in clean.data
    with Image.open(io.BytesIO(clean.data)) as out:
        assert not out.getexif()
        assert out.size == (200, 400)  # turned upright before the EXIF was dropped


def test_large_photos_are_shrunk() -> None:
    clean = clean_photo(image_bytes(size=(4000, 3000)), max_bytes=LIMIT)
    assert max(clean.width, clean.height) == MAX_SIDE_PX
    assert (clean.width, clean.height) == (1536, 1152)


def test_wrong_type_is_refused() -> None:
    for data in (b"%PDF-1.7 not an image", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"GIF8"):
        with pytest.raises(PhotoRejectedError) as caught:
            clean_photo(data, max_bytes=LIMIT)
        assert caught.value.reason == "type"


def test_too_big_is_refused() -> None:
    with pytest.raises(PhotoRejectedError) as caught:
        clean_photo(image_bytes() + b"\0" * LIMIT, max_bytes=LIMIT)
    assert caught.value.reason == "size"


def test_decompression_bomb_is_refused() -> None:
    bomb = image_bytes("PNG", size=(8000, 6000))  # 48 MP of one colour: a few KB
    with pytest.raises(PhotoRejectedError) as caught:
        clean_photo(bomb, max_bytes=LIMIT)
    assert caught.value.reason == "size"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_corrupt_images_are_refused(cut: float) -> None:
    data = image_bytes("PNG", size=(300, 300))
    with pytest.raises(PhotoRejectedError) as caught:
        clean_photo(data[: int(len(data) * cut)], max_bytes=LIMIT)
    assert caught.value.reason == "corrupt"


def test_jpeg_header_with_garbage_is_corrupt() -> None:
    with pytest.raises(PhotoRejectedError) as caught:
        clean_photo(b"\xff\xd8\xff\xe0" + b"garbage" * 100, max_bytes=LIMIT)
    assert caught.value.reason == "corrupt"


def test_polyglot_payload_does_not_survive() -> None:
    payload = b"<?php system($_GET['c']); ?><script>alert(1)</script>PK\x03\x04zip-inside"
    polyglot = image_bytes() + payload  # a valid JPEG, with a script and an archive appended
    clean = clean_photo(polyglot, max_bytes=LIMIT)
    assert b"<?php" not in clean.data and b"<script>" not in clean.data and b"PK\x03\x04" not in clean.data
    comment = image_bytes(comment=payload)  # the payload inside a JPEG comment segment
    assert b"<?php" not in clean_photo(comment, max_bytes=LIMIT).data
