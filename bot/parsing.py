"""What every chat adapter reads the same way: a webhook's secret token, typed text or a
command, and a position."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from backend.text import parse_point
from handlers.events import Incoming


def split_command(text: str) -> tuple[str, str]:
    """'/link@HotlineBot AB12' → ('link', 'AB12'): the command, without a bot's name."""
    head, _, args = text[1:].strip().partition(" ")
    return head.split("@", 1)[0].lower(), args


def text_or_command(text: str, **base: Any) -> Incoming:
    """'/status 38-2611-00001' as a command with its arguments; other text as text."""
    if text.startswith("/"):
        command, args = split_command(text)
        return Incoming(kind="command", command=command, args=args, text=text, **base)
    return Incoming(kind="text", text=text, **base)


def coordinates(value: Any) -> tuple[float, float] | None:
    """A position given as {latitude, longitude} (perhaps under "coordinates", perhaps
    as strings) or as "lat,lon" text; None for anything else or out of range."""
    if isinstance(value, str):
        return parse_point(value)
    if not isinstance(value, Mapping):
        return None
    coords = value.get("coordinates", value)
    try:
        lat, lon = float(coords["latitude"]), float(coords["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def has_secret(headers: Mapping[str, str], header: str, secret: bytes) -> bool:
    """Whether a webhook request carries the secret token (compared in constant time)."""
    return hmac.compare_digest(headers.get(header, "").encode(), secret)
