"""Evidence photos: check that bytes are an image we accept, store them by sha256."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


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

    def as_dict(self) -> dict[str, Any]:
        """The photo as services take it (sha256, content_type, width, height, size)."""
        return {
            "sha256": self.sha256,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "size_bytes": self.size_bytes,
        }


def media_path(media_dir: Path, sha256: str, content_type: str) -> Path:
    return media_dir / sha256[:2] / f"{sha256}.{_EXTENSIONS[content_type]}"


def find_media(media_dir: Path, sha256: str) -> Path | None:
    """The stored file for a digest, whatever its extension."""
    for ext in _EXTENSIONS.values():
        path = media_dir / sha256[:2] / f"{sha256}.{ext}"
        if path.exists():
            return path
    return None


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(content type, width, height) of an accepted image; raises NotAnImage."""
    if not data:
        raise NotAnImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            if fmt not in ACCEPTED_FORMATS:
                raise NotAnImage(f"format {fmt or 'unknown'}")
            width, height = img.size
            # verify() walks the file structure; decoding catches truncated data too.
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except NotAnImage:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise NotAnImage(str(exc)) from exc
    return ACCEPTED_FORMATS[fmt], width, height


def store_image(media_dir: Path, data: bytes, max_bytes: int) -> StoredImage:
    """Check and store an image once per content. Blocking: run it off the event loop."""
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes")
    content_type, width, height = inspect_image(data)
    digest = hashlib.sha256(data).hexdigest()
    path = media_path(media_dir, digest, content_type)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash never leaves a half-written photo under its name.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return StoredImage(digest, content_type, width, height, len(data))
