"""A local file that keeps updates durable while the database is slower than a platform
will wait, until they can be stored.

Each process appends to its own file, fsynced before the platform is answered, and holds
a lock on it. Draining moves the file aside and stores what it holds (a repeated update
is stored once), then deletes it. Any process drains the files nobody holds, so what a
killed process spooled is stored by the next one to start on that machine. While older
updates wait in the spool, new ones go there too, so that a chat's order is kept.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backend.crypto import DataKeyError, keys

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
PURPOSE = "spool"
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Stored:
    """An update to store: the platform's id (key) makes a redelivery a no-op."""

    channel: str
    key: str
    chat_id: str
    body: dict[str, Any]
    # The webhook request that brought it (see backend.logs).
    request_id: str | None = None


class Spool:
    def __init__(self, directory: Path, name: str) -> None:
        self._dir = directory
        self._name = name
        self._seq = 0
        self._file: IO[bytes] | None = None
        self._lines = 0
        self._draining = False
        self._lock = asyncio.Lock()

    def waiting(self) -> bool:
        """Whether updates of this process wait in the spool."""
        return self._lines > 0 or self._draining

    async def append(self, item: Stored) -> None:
        # Sealed like the database's copy: the update names the resident.
        line = (
            keys()
            .seal_json(
                {
                    "channel": item.channel,
                    "key": item.key,
                    "chat_id": item.chat_id,
                    "body": item.body,
                    "request_id": item.request_id,
                },
                PURPOSE,
            )
            .encode()
        )
        async with self._lock:
            await asyncio.to_thread(self._write, line + b"\n")
            self._lines += 1

    def _write(self, line: bytes) -> None:
        if self._file is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            path = self._dir / f"{self._name}-{self._seq}{SUFFIX}"
            handle = path.open("ab")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file = handle
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    async def drain(self, store: Callable[[Sequence[Stored]], Awaitable[None]]) -> int:
        """Store every spooled update nobody is writing; returns how many."""
        if not self._dir.is_dir():
            return 0
        self._draining = True
        try:
            async with self._lock:
                # This process's file is set aside: new updates start another one.
                if self._file is not None:
                    self._file.close()
                    self._file = None
                self._lines = 0
            stored = 0
            kept: DataKeyError | None = None
            for path in sorted(self._dir.glob(f"*{SUFFIX}")):
                handle = _take(path)
                if handle is None:
                    continue
                try:
                    items = _records(path, handle.read())
                    for start in range(0, len(items), CHUNK):
                        await store(items[start : start + CHUNK])
                    path.unlink()
                    stored += len(items)
                except DataKeyError as exc:
                    kept = kept or exc
                finally:
                    handle.close()
            if stored:
                log.info("stored %d updates from the spool", stored)
            if kept is not None:
                # Said by the caller, at most every few seconds (see Quiet).
                raise DataKeyError(f"{kept}; kept for a process that has that key")
            return stored
        finally:
            self._draining = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _take(path: Path) -> IO[bytes] | None:
    """The file, locked for this process; None when another process holds it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _records(path: Path, content: bytes) -> list[Stored]:
    """The spooled updates; a line cut short by a crash (never answered) is skipped."""
    items = []
    ring = keys()
    for line in content.splitlines():
        token = line.decode(errors="replace")
        kid, dot, _ = token.partition(".")
        if dot and not ring.known(kid):
            # Sealed under a key this process lacks (HOTLINE_DATA_KEY_PREVIOUS removed
            # too early): the file is kept for a process that has it, never skipped.
            raise DataKeyError(f"the spool file {path.name} is sealed under key {kid!r}")
        try:
            data = ring.open_json(token, PURPOSE)
            items.append(
                Stored(
                    channel=str(data["channel"]),
                    key=str(data["key"]),
                    chat_id=str(data["chat_id"]),
                    body=dict(data["body"]),
                    request_id=data.get("request_id"),
                )
            )
        except (ValueError, KeyError, TypeError):
            log.warning("an unreadable line in the spool file %s skipped", path.name)
    return items
