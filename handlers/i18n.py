"""Message catalogues: Vietnamese and English gettext .po files, read with Babel."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"


@cache
def catalogue(language: str) -> dict[str, str]:
    """msgid → msgstr for a language; message ids are symbolic keys."""
    path = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as f:
        cat = read_po(f, locale=language)
    return {str(m.id): str(m.string) for m in cat if m.id and isinstance(m.id, str)}


def pick_language(platform_code: str | None) -> str:
    """The dialogue language for a platform's language code: English if asked, else Vietnamese."""
    if platform_code and platform_code.lower().startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE


def translate(language: str, key: str, **params: Any) -> str:
    """The message for key in language (falling back to Vietnamese), formatted with params."""
    text = catalogue(language).get(key) or catalogue(DEFAULT_LANGUAGE).get(key)
    if text is None:
        raise KeyError(f"no message {key!r}")
    return text.format(**params) if params else text
