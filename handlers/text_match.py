"""Typed answers to a button prompt: "2", or the button's words, pick that button."""

from __future__ import annotations

from collections.abc import Sequence

from backend.text import search_key
from handlers.events import Button


def match_option(text: str, options: Sequence[Button]) -> Button | None:
    """The option a typed text names, by its number (1-based) or its label."""
    stripped = text.strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= len(options):
        return options[int(stripped) - 1]
    key = search_key(stripped)
    if not key:
        return None
    for option in options:
        if search_key(option.label) == key:
            return option
    return None
