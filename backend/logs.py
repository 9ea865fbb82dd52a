"""Log records as JSON lines, with the request id that follows an update to its replies.

Every line is one JSON object: time, level, logger, message, the request id when there
is one, and for an exception its type and a compact trace (file:line function, innermost
last). An exception's own text is left out: it may quote SQL parameters, an address or
a resident's words. Messages themselves are written without personal data (chat ids,
phone numbers, names, message text) by the code that logs them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

# The id of the request (a webhook's update, a page) being served, or of the update
# being handled or the message being sent: set where each starts.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Frames kept of a traceback (the innermost ones).
TRACE_FRAMES = 12
# Loggers too talkative at INFO for a service's log.
QUIET_LOGGERS = ("httpx", "httpcore", "aiobotocore", "botocore", "asyncio")


@contextmanager
def bound(value: str | None) -> Iterator[None]:
    """Log under this request id for the duration of the block."""
    token = request_id.set(value)
    try:
        yield
    finally:
        request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the context that logs it (a handler's
    filter runs in the caller's context, before any formatting elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is None:
            rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        if record.exc_info and record.exc_info[1] is not None:
            entry.update(describe(record.exc_info[1]))
        return json.dumps(entry, ensure_ascii=False, default=str)


def describe(exc: BaseException) -> dict[str, Any]:
    """An exception as the log keeps it: its type, what it came from (types only), and
    the innermost frames."""
    out: dict[str, Any] = {"error": _type_name(exc), "trace": _frames(exc.__traceback__)}
    causes: list[str] = []
    seen = {id(exc)}
    inner = exc.__cause__ or exc.__context__
    while inner is not None and id(inner) not in seen and len(causes) < 5:
        seen.add(id(inner))
        causes.append(_type_name(inner))
        inner = inner.__cause__ or inner.__context__
    if causes:
        out["caused_by"] = causes
    return out


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return (
        kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    )


_ROOTS = sorted(
    {os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *sys.path},
    key=len,
    reverse=True,
)


def _short(path: str) -> str:
    """A file's path without the directory it was imported from."""
    for root in _ROOTS:
        if root and path.startswith(root + os.sep):
            return path[len(root) + 1 :]
    return path


def _frames(tb: TracebackType | None) -> list[str]:
    frames = traceback.extract_tb(tb)[-TRACE_FRAMES:]
    return [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames]


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines (to stderr unless told), with the request id."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def setup(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Make the root logger write JSON lines; for every `hotline` command."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(json_handler(stream))
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
