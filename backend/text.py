"""Text helpers for Vietnamese names: tone-free keys for matching typed input."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_LATLON = re.compile(r"^\s*(-?\d{1,2}(?:\.\d+)?)\s*[,;\s]\s*(-?\d{1,3}(?:\.\d+)?)\s*$")


def fold(text: str) -> str:
    """Lower-case text without tone marks, with đ as d ("Bỉm Sơn" → "bim son")."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.lower()


@lru_cache(maxsize=4096)
def search_key(text: str) -> str:
    """fold() without spaces or punctuation ("Phường Bỉm Sơn" → "phuongbimson").

    Cached: button labels are matched against typed text on every message.
    """
    return _NON_ALNUM.sub("", fold(text))


def parse_point(text: str) -> tuple[float, float] | None:
    """'20.0740, 105.9120' → (20.074, 105.912); None when it is not a coordinate pair."""
    m = _LATLON.match(text)
    if m is None:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon
