"""Message catalogues: Vietnamese and English gettext .po files, read with Babel.

Each part of the product keeps its own catalogue directory (the chat dialogue, the
staff dashboard); this reads any of them the same way.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"


@cache
def read_catalogue(locales_dir: Path, language: str, domain: str = "messages") -> dict[str, str]:
    """msgid → msgstr for a language; message ids are symbolic keys."""
    path = locales_dir / language / "LC_MESSAGES" / f"{domain}.po"
    with path.open("rb") as f:
        cat = read_po(f, locale=language)
    return {str(m.id): str(m.string) for m in cat if m.id and isinstance(m.id, str)}


class Catalogues:
    """The vi and en catalogues of one directory, with a Vietnamese fallback."""

    def __init__(self, locales_dir: Path, domain: str = "messages") -> None:
        self.locales_dir = locales_dir
        self.domain = domain

    def catalogue(self, language: str) -> dict[str, str]:
        return read_catalogue(self.locales_dir, language, self.domain)

    def translate(self, language: str, key: str, **params: Any) -> str:
        """The message for key in language (falling back to Vietnamese), formatted."""
        text = self.catalogue(language).get(key) or self.catalogue(DEFAULT_LANGUAGE).get(key)
        if text is None:
            raise KeyError(f"no message {key!r}")
        return text.format(**params) if params else text
