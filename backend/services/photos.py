"""Evidence photos: check, sanitise and store them, addressed by sha256.

An accepted file (JPEG, PNG, WebP) is fully decoded to prove it is an image (verify()
alone misses truncated JPEGs), with decompression bombs refused. Its EXIF GPS position
and time are read first, to be kept sealed as evidence; then the image is turned
upright, converted to RGB, shrunk to at most 2048 px (JPEG draft decoding does most of
that while decoding) and written as a fresh JPEG at quality 85, with a 320 px
thumbnail. Nothing of the original file's metadata (EXIF, comments, profiles) survives.

The work is CPU-bound: `store_photo` runs it in the process pool, never on the event
loop, then writes the two files to the media store (a folder or a bucket).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from backend.services.media_store import MediaStore, content_type

# iPhones save HEIC: pillow-heif teaches Pillow to read it (in every pool process too,
# since each imports this module).
register_heif_opener()
ACCEPTED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "HEIF": "image/heic",
}
# How each accepted format is named to a resident.
FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC (iPhone)"}
ACCEPTED_NAMES = ", ".join(FORMAT_NAMES[f] for f in ACCEPTED_FORMATS)
STORED_TYPE = "image/jpeg"
MAX_SIDE = 2048
THUMB_SIDE = 320
QUALITY = 85
_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867


class NotAnImage(ValueError):
    """The bytes are not a JPEG, PNG or WebP image that decodes."""


class TooLarge(ValueError):
    """The file is over the size limit."""


@dataclass(frozen=True, slots=True)
class StoredImage:
    sha256: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    # Sealed evidence from the original's EXIF: where and when it was taken.
    gps: tuple[float, float] | None = None
    taken_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The photo as services take it."""
        return {
            **image_fields(self),
            "gps": list(self.gps) if self.gps else None,
            "taken_at": self.taken_at,
        }


# What every stored image is described by (StoredImage, and the Photo and Media rows).
IMAGE_FIELDS = ("sha256", "content_type", "width", "height", "size_bytes")


def image_fields(image: Any) -> dict[str, Any]:
    """A stored image's description, from anything that has IMAGE_FIELDS."""
    return {name: getattr(image, name) for name in IMAGE_FIELDS}


SHA256 = re.compile(r"[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    """Whether value is a photo id: 64 lower-case hex digits, nothing else."""
    return isinstance(value, str) and SHA256.fullmatch(value) is not None


def photo_key(sha256: str, *, thumbnail: bool = False, suffix: str = "jpg") -> str:
    """The media store's key for a photo (or its thumbnail); ValueError for anything that
    is not a digest, so no key is ever built from other text."""
    if not is_digest(sha256):
        raise ValueError("not a photo id")
    return f"{sha256[:2]}/{sha256}.{'thumb.jpg' if thumbnail else suffix}"


@dataclass(frozen=True, slots=True)
class PhotoFile:
    """A stored photo as read back: its file name, bytes and media type."""

    name: str
    data: bytes
    content_type: str


async def read_photo(
    media: MediaStore, sha256: str, *, thumbnail: bool = False
) -> PhotoFile | None:
    """The stored photo (or its thumbnail) for a digest; None for anything that is not a
    digest or is not stored. MediaUnavailable when the store does not answer."""
    if not is_digest(sha256):
        return None
    if thumbnail:
        keys = [photo_key(sha256, thumbnail=True)]
    else:
        # Photos stored by the first versions kept their PNG or WebP original.
        keys = [photo_key(sha256, suffix=suffix) for suffix in ("jpg", "png", "webp")]
    for key in keys:
        data = await media.get(key)
        if data is not None:
            return PhotoFile(key.rsplit("/", 1)[1], data, content_type(key))
    return None


def _ratio(value: Any) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        return float(Fraction(int(value[0]), int(value[1])))
    return float(value)


def read_gps(exif: Image.Exif) -> tuple[float, float] | None:
    """EXIF GPS as (lat, lon), or None when absent or malformed."""
    try:
        gps = exif.get_ifd(_GPS_IFD)
        lat_ref, lat, lon_ref, lon = gps.get(1), gps.get(2), gps.get(3), gps.get(4)
        if not (lat and lon and lat_ref and lon_ref) or len(lat) != 3 or len(lon) != 3:
            return None
        latitude = _ratio(lat[0]) + _ratio(lat[1]) / 60 + _ratio(lat[2]) / 3600
        longitude = _ratio(lon[0]) + _ratio(lon[1]) / 60 + _ratio(lon[2]) / 3600
        if str(lat_ref).upper().startswith("S"):
            latitude = -latitude
        if str(lon_ref).upper().startswith("W"):
            longitude = -longitude
    except (TypeError, ValueError, ZeroDivisionError, KeyError, AttributeError, IndexError):
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180) or latitude == longitude == 0:
        return None
    return round(latitude, 6), round(longitude, 6)


def read_taken_at(exif: Image.Exif) -> str | None:
    """EXIF DateTimeOriginal as ISO text (camera local time), or None."""
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)
        if not raw:
            return None
        # The camera's own clock, zone unknown: kept as the camera wrote it.
        taken = datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S")  # noqa: DTZ007
        return taken.isoformat()
    except (ValueError, TypeError, AttributeError):
        return None


@dataclass(frozen=True, slots=True)
class Sanitised:
    jpeg: bytes
    thumbnail: bytes
    width: int
    height: int
    gps: tuple[float, float] | None
    taken_at: str | None


def sanitise(data: bytes, max_bytes: int) -> Sanitised:
    """The clean JPEG and thumbnail for an uploaded image; raises NotAnImage/TooLarge."""
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes")
    if not data:
        raise NotAnImage("empty file")
    try:
        with warnings.catch_warnings():
            # Past Pillow's pixel limit an image is treated as an attack, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                if fmt not in ACCEPTED_FORMATS:
                    raise NotAnImage(f"format {fmt or 'unknown'}")
                exif = img.getexif()
                gps, taken_at = read_gps(exif), read_taken_at(exif)
                if fmt == "JPEG" and max(img.size) > MAX_SIDE:
                    # Decode at the power-of-two scale that first fits in MAX_SIDE: a
                    # 4032 px photo decodes at 2016 px, four times less work, no resize.
                    scale = 2
                    while max(img.size) / scale > MAX_SIDE and scale < 8:
                        scale *= 2
                    img.draft("RGB", (img.width // scale, img.height // scale))
                img.load()  # the whole decode: truncated or corrupt data fails here
                ImageOps.exif_transpose(img, in_place=True)
                clean = _rgb(img)
                clean.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
                clean.info = {}
                full = io.BytesIO()
                clean.save(full, "JPEG", quality=QUALITY)
                # A cheap box reduction to just above the size, then a proper resample.
                factor = max(1, max(clean.size) // THUMB_SIDE)
                thumb = clean.reduce(factor) if factor > 1 else clean.copy()
                thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
                small = io.BytesIO()
                thumb.save(small, "JPEG", quality=80)
    except (NotAnImage, TooLarge):
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        EOFError,
    ) as exc:
        raise NotAnImage(str(exc) or type(exc).__name__) from exc
    return Sanitised(full.getvalue(), small.getvalue(), clean.width, clean.height, gps, taken_at)


def _rgb(img: Image.Image) -> Image.Image:
    """A fresh RGB image (transparency over white), carrying none of the original's info."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    # An RGB image is used as it is: its info and EXIF are dropped before it is saved.
    return img.convert("RGB") if img.mode != "RGB" else img


def prepare(data: bytes, max_bytes: int) -> tuple[str, Sanitised]:
    """The sanitised image and its digest (the sha256 of the clean JPEG). CPU-bound: run
    in the process pool."""
    clean = sanitise(data, max_bytes)
    return hashlib.sha256(clean.jpeg).hexdigest(), clean


_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        # "spawn": the workers start clean, not as copies of a process with an event
        # loop and threads.
        _pool = ProcessPoolExecutor(
            max_workers=max(1, min(4, os.cpu_count() or 1)),
            mp_context=multiprocessing.get_context("spawn"),
        )
    return _pool


async def store_photo(media: MediaStore, data: bytes, max_bytes: int) -> StoredImage:
    """Sanitise an image in the process pool (the event loop never decodes one) and store
    it once per content: the thumbnail first, so a stored photo always has one."""
    loop = asyncio.get_running_loop()
    digest, clean = await loop.run_in_executor(_executor(), prepare, data, max_bytes)
    key = photo_key(digest)
    if not await media.exists(key):
        await media.put(photo_key(digest, thumbnail=True), clean.thumbnail)
        await media.put(key, clean.jpeg)
    return StoredImage(
        digest, STORED_TYPE, clean.width, clean.height, len(clean.jpeg), clean.gps, clean.taken_at
    )


def shutdown_pool() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
