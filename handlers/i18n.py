"""The dialogue's message catalogues (handlers/locales), in Vietnamese and English."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.i18n import DEFAULT_LANGUAGE, LANGUAGES, Catalogues

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "catalogue", "pick_language", "translate"]

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
_CATALOGUES = Catalogues(LOCALES_DIR)


def catalogue(language: str) -> dict[str, str]:
    """msgid → msgstr for a language; message ids are symbolic keys."""
    return _CATALOGUES.catalogue(language)


def pick_language(platform_code: str | None) -> str:
    """The dialogue language for a platform's language code: English if asked, else Vietnamese."""
    if platform_code and platform_code.lower().startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE


def translate(language: str, key: str, **params: Any) -> str:
    """The message for key in language (falling back to Vietnamese), formatted with params."""
    return _CATALOGUES.translate(language, key, **params)
