"""The photo pipeline: what it accepts, what it refuses, and what it strips."""

from __future__ import annotations

import io
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from backend.services.media_store import LocalStore
from backend.services.photos import (
    MAX_SIDE,
    NotAnImage,
    TooLarge,
    read_photo,
    sanitise,
    shutdown_pool,
    store_photo,
)
from tests.fakes.images import image_bytes

LIMIT = 20 * 1024 * 1024


def exif_photo(
    size: tuple[int, int] = (640, 480),
    gps: Mapping[int, Any] | None = None,
    orientation: int | None = None,
    comment: bytes | None = None,
) -> bytes:
    """A JPEG with EXIF (camera, time, GPS), as a phone would send it as a file."""
    img = Image.new("RGB", size, "orange")
    img.paste((0, 0, 255), (0, 0, 6, 6))  # a blue marker in the top-left corner
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0132] = "2026:11:20 07:15:00"
    exif.get_ifd(0x8769)[36867] = "2026:11:20 07:14:59"  # DateTimeOriginal
    if orientation:
        exif[0x0112] = orientation
    if gps is not None:
        exif.get_ifd(0x8825).update(gps)
    buf = io.BytesIO()
    extra = {"comment": comment} if comment else {}
    img.save(buf, "JPEG", exif=exif, **extra)
    return buf.getvalue()


BIM_SON = {
    1: "N",
    2: (Fraction(20), Fraction(4), Fraction(2640, 100)),
    3: "E",
    4: (Fraction(105), Fraction(54), Fraction(4320, 100)),
}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_accepted_formats_come_out_as_clean_jpeg(fmt: str) -> None:
    clean = sanitise(image_bytes(fmt), LIMIT)
    with Image.open(io.BytesIO(clean.jpeg)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 48))
    with Image.open(io.BytesIO(clean.thumbnail)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 320


def test_gps_and_time_are_read_then_every_trace_is_stripped() -> None:
    clean = sanitise(exif_photo(gps=BIM_SON, comment=b"IMG_0042 by Lan"), LIMIT)
    assert clean.gps == pytest.approx((20.074, 105.912), abs=1e-5)
    assert clean.taken_at == "2026-11-20T07:14:59"
    with Image.open(io.BytesIO(clean.jpeg)) as img:
        assert not img.getexif()
        assert "comment" not in img.info and "exif" not in img.info
    assert b"PhoneMaker" not in clean.jpeg and b"IMG_0042" not in clean.jpeg


def test_an_iphone_heic_keeps_its_gps_as_evidence_and_loses_it_in_the_stored_jpeg() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825).update(BIM_SON)
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), "orange").save(buf, "HEIF", exif=exif.tobytes())
    clean = sanitise(buf.getvalue(), LIMIT)
    assert clean.gps == pytest.approx((20.074, 105.912), abs=1e-5)
    with Image.open(io.BytesIO(clean.jpeg)) as img:
        assert (img.format, img.size) == ("JPEG", (96, 64))
        assert not img.getexif()
    assert b"PhoneMaker" not in clean.jpeg


def test_the_photo_is_turned_upright() -> None:
    # Orientation 6: the camera was turned; the picture must be rotated 90° clockwise.
    clean = sanitise(exif_photo(size=(40, 20), orientation=6), LIMIT)
    with Image.open(io.BytesIO(clean.jpeg)) as img:
        assert img.size == (20, 40)
        pixel = img.getpixel((17, 2))  # the top-left marker is now top-right
        assert isinstance(pixel, tuple) and pixel[2] > 150 and pixel[0] < 100


def test_big_photos_are_shrunk_to_2048_px() -> None:
    # A phone JPEG is decoded at half scale straight away (draft decoding).
    jpeg = sanitise(image_bytes("JPEG", size=(4032, 3024)), LIMIT)
    assert (jpeg.width, jpeg.height) == (2016, 1512)
    png = sanitise(image_bytes("PNG", size=(4032, 3024)), LIMIT)
    assert (png.width, png.height) == (MAX_SIDE, 1536)


def test_malformed_gps_is_ignored_not_fatal() -> None:
    for bad in (
        {1: "N", 2: (Fraction(20), Fraction(4)), 3: "E", 4: (1, 2, 3)},
        {1: "N", 2: (IFDRational(20, 1), IFDRational(4, 0), IFDRational(1)), 3: "E", 4: (1, 2, 3)},
        {2: (Fraction(20), Fraction(4), Fraction(1))},
    ):
        clean = sanitise(exif_photo(gps=bad), LIMIT)
        assert clean.gps is None


def _png_header(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("zero bytes", b""),
        ("PDF named .jpg", b"%PDF-1.7\n1 0 obj << >> endobj"),
        ("HTML named .jpg", b"<html><script>alert(1)</script></html>"),
        ("SVG named .jpg", b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>'),
        ("GIF", image_bytes("GIF")),
        ("truncated JPEG", image_bytes("JPEG", size=(400, 300))[:400]),
    ],
)
def test_files_that_are_not_usable_images_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(NotAnImage):
        sanitise(data, LIMIT)


def test_a_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10,000 × 10,000 px of one colour: a few kilobytes that would decode to 100 MP.
    bomb = _png_header(10_000, 10_000)
    assert len(bomb) < 100_000
    with pytest.raises(NotAnImage):
        sanitise(bomb, LIMIT)


def test_a_png_with_huge_dimensions_is_refused() -> None:
    header = _png_header(1, 1)
    # Rewrite the IHDR size to 60,000 × 60,000 (the CRC no longer matches either).
    huge = header[:16] + (60_000).to_bytes(4, "big") * 2 + header[24:]
    with pytest.raises(NotAnImage):
        sanitise(huge, LIMIT)


def test_too_large_files_are_refused_before_decoding() -> None:
    with pytest.raises(TooLarge):
        sanitise(b"\xff" * 1001, 1000)


async def test_the_same_photo_is_stored_once(tmp_path: Path) -> None:
    data = exif_photo(gps=BIM_SON)
    media = LocalStore(tmp_path)
    try:
        first = await store_photo(media, data, LIMIT)
        second = await store_photo(media, data, LIMIT)
    finally:
        shutdown_pool()
    assert first.sha256 == second.sha256 and first.gps == second.gps
    sha = first.sha256
    assert sorted(await media.sizes()) == [f"{sha[:2]}/{sha}.jpg", f"{sha[:2]}/{sha}.thumb.jpg"]
    assert await read_photo(media, first.sha256) is not None
    assert await read_photo(media, first.sha256, thumbnail=True) is not None
