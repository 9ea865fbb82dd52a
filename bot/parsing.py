"""What every chat adapter reads the same way: a webhook's secret token, and typed text or
a command."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

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


def has_secret(headers: Mapping[str, str], header: str, secret: bytes) -> bool:
    """Whether a webhook request carries the secret token (compared in constant time)."""
    # aiohttp keeps bytes that are not UTF-8 as surrogates: they encode back, and differ.
    given = headers.get(header, "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, secret)


def error_code(value: Any) -> int:
    """A platform's numeric error code as an int (-1 when it is not one: still an error)."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,11}", value):
        return int(value)
    return 0 if value is None else -1
