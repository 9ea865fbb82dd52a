"""The process's log as a test reads it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from backend.logs import json_handler


@contextmanager
def json_log() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines (as `hotline serve` does) into a buffer."""
    out = io.StringIO()
    handler = json_handler(out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
