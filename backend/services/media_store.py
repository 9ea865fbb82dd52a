"""Where photos are kept: a local folder or an S3-compatible bucket, behind one interface.

Objects are named by key, the same relative names in both stores: `ab/<sha256>.jpg` and
`ab/<sha256>.thumb.jpg` (the first two hex digits, then the digest). A bucket filled by
`hotline migrate-media` therefore has the folder's layout under its prefix. Keys are
checked against that pattern by every store, so no path or object name is ever built
from other text. Objects are content-addressed: writing one again writes the same bytes.

Every server process opens one store with the app and closes it at shutdown; on S3 that
is one aiobotocore client (and its connection pool) per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote, urlsplit

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from backend.config import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

KEY = re.compile(r"[0-9a-f]{2}/([0-9a-f]{64})(?:\.thumb)?\.(?:jpg|png|webp)")
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# S3: a store that does not answer fails the call within about this many seconds per
# attempt, rather than holding a request or a chat.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
ATTEMPTS = 3
POOL_CONNECTIONS = 32


class MediaUnavailable(Exception):
    """The store did not answer, or refused: nothing was lost, try again later."""


def is_key(value: object) -> bool:
    """Whether value is a media key (`ab/<sha256>[.thumb].jpg`), nothing else."""
    if not isinstance(value, str):
        return False
    found = KEY.fullmatch(value)
    return found is not None and found.group(1)[:2] == value[:2]


def _checked(key: str) -> str:
    if not is_key(key):
        raise ValueError("not a media key")
    return key


def content_type(key: str) -> str:
    """The media type of a stored object, by its key's extension."""
    return CONTENT_TYPES[key.rsplit(".", 1)[1]]


class MediaStore(ABC):
    """Photos by key. put is idempotent; get and size answer None for a missing object and
    raise MediaUnavailable when the store cannot be reached."""

    kind: ClassVar[str]

    @abstractmethod
    async def start(self) -> None:
        """Open what the store needs (once per process, with the app)."""

    @abstractmethod
    async def close(self) -> None:
        """Release it."""

    @abstractmethod
    async def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def size(self, key: str) -> int | None: ...

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    @abstractmethod
    async def sizes(self) -> dict[str, int]:
        """Every stored object's key and size (what a migration compares against)."""


class LocalStore(MediaStore):
    """A folder on this machine (or a shared mount): `root/ab/<sha256>.jpg`."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing is held open."""

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with _local_failures():
            await asyncio.to_thread(_write, path, data)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        with _local_failures():
            try:
                return await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                return None

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        with _local_failures():
            try:
                return (await asyncio.to_thread(path.stat)).st_size
            except FileNotFoundError:
                return None

    async def sizes(self) -> dict[str, int]:
        with _local_failures():
            return await asyncio.to_thread(self._walk)

    def _walk(self) -> dict[str, int]:
        found: dict[str, int] = {}
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", folder.name):
                continue
            for path in folder.iterdir():
                key = f"{folder.name}/{path.name}"
                # Half-written files (".upload-…") and anything else are not photos.
                if is_key(key) and path.is_file():
                    found[key] = path.stat().st_size
        return found


@contextlib.contextmanager
def _local_failures() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MediaUnavailable(f"media folder: {type(exc).__name__}") from exc


def _write(path: Path, data: bytes) -> None:
    """Write then rename, so a crash never leaves a half-written file under its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class S3Store(MediaStore):
    """A bucket of any S3-compatible store (MinIO, Ceph, cloud object storage):
    `prefix/ab/<sha256>.jpg`, through one aiobotocore client per process."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._endpoint_url = endpoint_url or None
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._exit: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None

    def __str__(self) -> str:
        where = f" at {self._endpoint_url}" if self._endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    async def start(self) -> None:
        if self._client is not None:
            return
        # Imported here: botocore takes a second to load, which a folder store never needs.
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
            max_pool_connections=POOL_CONNECTIONS,
            # Path-style requests and checksums only where the API requires them: what
            # MinIO, Ceph and older S3-compatible stores understand.
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        exit_stack = contextlib.AsyncExitStack()
        self._client = await exit_stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                # None: the usual chain (environment, instance profile) supplies them.
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=config,
            )
        )
        self._exit = exit_stack

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit.aclose()
        self._exit = None
        self._client = None

    def _s3(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("the S3 media store is not started")
        return self._client

    def _name(self, key: str) -> str:
        return self.prefix + _checked(key)

    async def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        with _s3_failures("put"):
            await self._s3().put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=content_type(key)
            )

    async def get(self, key: str) -> bytes | None:
        name = self._name(key)
        with _s3_failures("get"):
            try:
                answer = await self._s3().get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
            async with answer["Body"] as body:
                return await body.read()

    async def size(self, key: str) -> int | None:
        name = self._name(key)
        with _s3_failures("head"):
            try:
                answer = await self._s3().head_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
            return answer["ContentLength"]

    async def sizes(self) -> dict[str, int]:
        found: dict[str, int] = {}
        pages = self._s3().get_paginator("list_objects_v2")
        with _s3_failures("list"):
            async for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item.get("Key", "")[len(self.prefix) :]
                    if is_key(key):
                        found[key] = item.get("Size", 0)
        return found


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


@contextlib.contextmanager
def _s3_failures(operation: str) -> Iterator[None]:
    """The store's failures as MediaUnavailable, named by kind only."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
        raise MediaUnavailable(f"S3 {operation}: {code}") from exc
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise MediaUnavailable(f"S3 {operation}: {type(exc).__name__}") from exc


def media_store(settings: Settings) -> MediaStore:
    """The store the settings name (not started): HOTLINE_MEDIA_URL empty for the local
    HOTLINE_MEDIA_DIR, a path or file:// URL for another folder, s3://bucket/prefix for a
    bucket at HOTLINE_S3_ENDPOINT_URL. ValueError for anything else."""
    url = settings.media_url.strip()
    if not url:
        return LocalStore(settings.media_dir)
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("HOTLINE_MEDIA_URL: s3:// needs a bucket (s3://bucket/prefix)")
        return S3Store(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=(
                settings.s3_access_key_id.get_secret_value()
                if settings.s3_access_key_id is not None
                else None
            ),
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key is not None
                else None
            ),
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("HOTLINE_MEDIA_URL: a file:// URL names a folder on this machine")
        return LocalStore(Path(unquote(parts.path)))
    if not parts.scheme:
        return LocalStore(Path(url))
    raise ValueError("HOTLINE_MEDIA_URL: a folder, file:///path or s3://bucket/prefix")


def local_media(settings: Settings) -> MediaStore:
    """The store for settings that name a folder, which needs no opening. ValueError for
    a bucket: the app opens that once per process and hands it to whoever needs it."""
    store = media_store(settings)
    if not isinstance(store, LocalStore):
        raise ValueError("an S3 media store is opened with the app: pass it on")
    return store


@dataclass
class Copied:
    """What a copy from one store to another did."""

    copied: int = 0
    skipped: int = 0
    failed: int = 0
    # Not tried: the copy stopped after FAILURES_IN_A_ROW failures one after another.
    left: int = 0


# A target that fails this many objects in a row is taken to be down: the copy stops.
FAILURES_IN_A_ROW = 50


async def copy_store(source: MediaStore, target: MediaStore, *, jobs: int = 8) -> Copied:
    """Copy into target every object of source that it lacks or holds at another size;
    the rest is skipped, so a second run (or one after an interruption) resumes where the
    last stopped. Thumbnails go first, so that every photo copied has its thumbnail.
    MediaUnavailable when either store cannot be listed (then nothing is copied)."""
    wanted = await source.sizes()
    present = await target.sizes()
    result = Copied()
    in_a_row = 0

    async def copy(key: str) -> None:
        nonlocal in_a_row
        try:
            data = await source.get(key)
            if data is None:
                raise MediaUnavailable("gone from the source")
            await target.put(key, data)
        except MediaUnavailable as exc:
            result.failed += 1
            in_a_row += 1
            log.warning("%s not copied: %s", key, exc)
        else:
            result.copied += 1
            in_a_row = 0

    async def worker(pending: Iterator[str]) -> None:
        for key in pending:  # one iterator shared by the workers: each key taken once
            if in_a_row >= FAILURES_IN_A_ROW:
                result.left += 1
            else:
                await copy(key)

    for thumbnails in (True, False):
        todo = []
        for key in sorted(k for k in wanted if k.endswith(".thumb.jpg") == thumbnails):
            if present.get(key) == wanted[key]:
                result.skipped += 1
            else:
                todo.append(key)
        pending = iter(todo)
        await asyncio.gather(*(worker(pending) for _ in range(jobs)))
    return result
