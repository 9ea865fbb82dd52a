"""The media store: a local folder or an S3 bucket (moto's server on 127.0.0.1), the photos
kept in it, `hotline migrate-media`, and a store that does not answer."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from backend.cli import main
from backend.config import Settings
from backend.services.media_store import (
    FAILURES_IN_A_ROW,
    LocalStore,
    MediaStore,
    MediaUnavailable,
    S3Store,
    copy_store,
    media_store,
)
from backend.services.photos import photo_key, read_photo, shutdown_pool, store_photo
from tests.fakes.images import image_bytes
from tests.fakes.s3 import MotoS3

LIMIT = 20 * 1024 * 1024


def s3_store(server: MotoS3, bucket: str, prefix: str = "photos") -> S3Store:
    store = media_store(Settings(**server.settings(bucket, prefix)))
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(autouse=True)
def photo_pool() -> Iterator[None]:
    """The image pool is the process's; each test leaves none behind."""
    yield
    shutdown_pool()


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStore]:
    chosen: MediaStore
    if request.param == "local":
        chosen = LocalStore(tmp_path / "media")
    else:
        server: MotoS3 = request.getfixturevalue("s3_server")
        chosen = s3_store(server, request.getfixturevalue("s3_bucket"))
    await chosen.start()
    yield chosen
    await chosen.close()


def key_of(data: bytes, suffix: str = "jpg") -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"{sha[:2]}/{sha}.{suffix}"


async def test_a_store_keeps_reads_and_sizes_objects(store: MediaStore) -> None:
    data, thumb = b"\xff\xd8 a photo", b"\xff\xd8 small"
    key, thumb_key = key_of(data), key_of(data, "thumb.jpg")
    assert await store.get(key) is None
    assert await store.size(key) is None
    assert not await store.exists(key)
    assert await store.sizes() == {}

    await store.put(thumb_key, thumb)
    await store.put(key, data)
    await store.put(key, data)  # content-addressed: again is the same
    assert await store.get(key) == data
    assert await store.size(key) == len(data)
    assert await store.exists(thumb_key)
    assert await store.sizes() == {key: len(data), thumb_key: len(thumb)}

    sha = key.split("/")[1].split(".")[0]
    for bad in ("../etc/passwd", f"{sha}.jpg", f"ff/{sha}.jpg", f"{sha[:2]}/{sha}.exe", ""):
        with pytest.raises(ValueError, match="not a media key"):
            await store.get(bad)
        with pytest.raises(ValueError, match="not a media key"):
            await store.put(bad, data)


async def test_a_photo_is_stored_once_in_the_bucket_under_its_prefix(
    s3_server: MotoS3, s3_bucket: str
) -> None:
    store = s3_store(s3_server, s3_bucket, "hotline/photos")
    await store.start()
    try:
        first = await store_photo(store, image_bytes("PNG", (640, 480), "green"), LIMIT)
        again = await store_photo(store, image_bytes("PNG", (640, 480), "green"), LIMIT)
        full = await read_photo(store, first.sha256)
        thumb = await read_photo(store, first.sha256, thumbnail=True)
        assert await read_photo(store, "0" * 64) is None
        assert await read_photo(store, "../../etc/passwd") is None
        listed = await store.sizes()
    finally:
        await store.close()
    assert again == first and first.content_type == "image/jpeg"
    assert full is not None and thumb is not None
    assert full.content_type == "image/jpeg" and full.name == f"{first.sha256}.jpg"
    assert len(full.data) == first.size_bytes and len(thumb.data) < len(full.data)
    # The folder's layout, under the prefix: what migrate-media copies a folder into.
    sha = first.sha256
    in_bucket = await s3_server.get_object(s3_bucket, f"hotline/photos/{sha[:2]}/{sha}.jpg")
    assert in_bucket == full.data
    assert sorted(listed) == [photo_key(sha), photo_key(sha, thumbnail=True)]


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        ("", "local", "default"),
        ("/srv/hotline/media", "local", "/srv/hotline/media"),
        ("var/photos", "local", "var/photos"),
        ("file:///srv/hotline/media", "local", "/srv/hotline/media"),
        ("s3://hotline-media/prod/photos/", "s3", "s3://hotline-media/prod/photos/"),
        ("s3://hotline-media", "s3", "s3://hotline-media/"),
    ],
)
def test_the_media_url_chooses_the_store(url: str, kind: str, where: str, tmp_path: Path) -> None:
    store = media_store(Settings(media_url=url, media_dir=tmp_path))
    assert store.kind == kind
    assert str(store).startswith(str(tmp_path) if where == "default" else where)


@pytest.mark.parametrize(
    "url", ["https://example.org/media", "s3:///no-bucket", "file://other-host/media"]
)
def test_a_media_url_that_is_no_store_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="HOTLINE_MEDIA_URL"):
        media_store(Settings(media_url=url))


class Hotline:
    """Runs a `hotline` command: its console script's function, in a thread of its own
    (it runs its own event loop), with the environment a test gives it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self._monkeypatch, self._capsys = monkeypatch, capsys

    async def __call__(self, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
        """The command's exit code, standard output and standard error."""
        for name, value in env.items():
            self._monkeypatch.setenv(name, value)
        self._capsys.readouterr()
        code = await asyncio.wait_for(asyncio.to_thread(_exit_code, list(args)), 120)
        out, err = self._capsys.readouterr()
        return code, out, err


def _exit_code(args: list[str]) -> int:
    # (SystemExit must not reach the event loop, which would stop on it.)
    try:
        main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture
def hotline(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Hotline:
    return Hotline(monkeypatch, capsys)


def s3_env(server: MotoS3, bucket: str) -> dict[str, str]:
    values = server.settings(bucket)
    return {
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_MEDIA_URL": values["media_url"],
        "HOTLINE_S3_ENDPOINT_URL": values["s3_endpoint_url"],
        "HOTLINE_S3_REGION": values["s3_region"],
        "HOTLINE_S3_ACCESS_KEY_ID": values["s3_access_key_id"].get_secret_value(),
        "HOTLINE_S3_SECRET_ACCESS_KEY": values["s3_secret_access_key"].get_secret_value(),
    }


async def test_migrate_media_copies_a_folder_into_the_bucket_and_resumes(
    s3_server: MotoS3,
    s3_bucket: str,
    tmp_path: Path,
    hotline: Hotline,
) -> None:
    folder = tmp_path / "media"
    local = LocalStore(folder)
    await local.start()
    photos = [
        await store_photo(local, image_bytes("JPEG", (320 + n, 240), color), LIMIT)
        for n, color in enumerate(("red", "green", "blue"))
    ]
    a, b, _ = (p.sha256 for p in photos)
    # Not photos: a half-written upload, and a stray file.
    (folder / a[:2] / ".upload-x1y2z3").write_bytes(b"half")
    (folder / "README").write_text("photos")
    wanted = await local.sizes()
    assert len(wanted) == 6

    # What an interrupted copy (or another tool) left: a's thumbnail, a's photo at the
    # right size (its bytes a marker, to see that it is not copied again), and b's photo
    # cut short.
    bucket = s3_store(s3_server, s3_bucket)
    await bucket.start()
    try:
        thumb_a = await local.get(photo_key(a, thumbnail=True))
        full_b = await local.get(photo_key(b))
        assert thumb_a is not None and full_b is not None
        await bucket.put(photo_key(a, thumbnail=True), thumb_a)
        marker = b"m" * wanted[photo_key(a)]
        await bucket.put(photo_key(a), marker)
        await bucket.put(photo_key(b), full_b[:100])

        env = s3_env(s3_server, s3_bucket)
        code, out, err = await hotline("migrate-media", "--from", str(folder), env=env)
        assert code == 0, err
        assert "copied 4, skipped 2, failed 0" in out
        assert await bucket.sizes() == wanted
        for key in wanted:
            expected = marker if key == photo_key(a) else await local.get(key)
            assert await bucket.get(key) == expected, key

        code, out, err = await hotline("migrate-media", "--from", str(folder), env=env)
        assert code == 0, err
        assert "copied 0, skipped 6, failed 0" in out
    finally:
        await bucket.close()

    # Only into a bucket.
    local_env = {**env, "HOTLINE_MEDIA_URL": str(tmp_path / "elsewhere")}
    code, out, err = await hotline("migrate-media", "--from", str(folder), env=local_env)
    assert code == 2 and "s3://bucket/prefix" in err and "copied" not in out


async def test_migrate_media_resumes_after_an_interrupted_run(
    s3_server: MotoS3, s3_bucket: str, tmp_path: Path, hotline: Hotline
) -> None:
    folder = tmp_path / "media"
    local = LocalStore(folder)
    await local.start()
    for n in range(40):
        data = n.to_bytes(2, "big") * 32_000
        await local.put(key_of(data), data)
    bucket = s3_store(s3_server, s3_bucket)
    await bucket.start()
    try:
        # A copy one object at a time, stopped part way as an operator's Ctrl-C would.
        copying = asyncio.create_task(copy_store(local, bucket, jobs=1))
        while len(await bucket.sizes()) < 5:
            assert not copying.done()
            await asyncio.sleep(0.01)
        copying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await copying
        done = len(await bucket.sizes())
        assert 5 <= done < 39

        env = s3_env(s3_server, s3_bucket)
        code, out, err = await hotline("migrate-media", "--from", str(folder), env=env)
        assert code == 0, err
        # (The one upload in flight at the stop may have landed after the count.)
        found = re.search(r"copied (\d+), skipped (\d+), failed 0", out)
        assert found is not None, out
        copied, skipped = int(found[1]), int(found[2])
        assert copied + skipped == 40 and done <= skipped <= done + 1
        assert await bucket.sizes() == await local.sizes()
    finally:
        await bucket.close()


async def test_a_copy_stops_when_the_target_fails_object_after_object(tmp_path: Path) -> None:
    source = LocalStore(tmp_path / "media")
    for n in range(FAILURES_IN_A_ROW + 10):
        data = n.to_bytes(2, "big")
        await source.put(key_of(data), data)
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # a file where the target's folder should be
    copied = await copy_store(source, LocalStore(blocked), jobs=1)
    assert (copied.copied, copied.skipped) == (0, 0)
    assert (copied.failed, copied.left) == (FAILURES_IN_A_ROW, 10)


async def test_a_bucket_that_does_not_answer_fails_cleanly_and_soon(
    tmp_path: Path, hotline: Hotline
) -> None:
    server = MotoS3()
    server.start()
    try:
        server.create_bucket("outage")
        store = s3_store(server, "outage")
        await store.start()
        stored = await store_photo(store, image_bytes("JPEG"), LIMIT)
        folder = tmp_path / "media"
        local = LocalStore(folder)
        await store_photo(local, image_bytes("PNG"), LIMIT)
        server.stop()

        key = photo_key(stored.sha256)
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: read_photo(store, stored.sha256),
            lambda: store.get(key),
            lambda: store.size(key),
            lambda: store.put(key, b"photo"),
            lambda: store.sizes(),
            lambda: store_photo(store, image_bytes("JPEG", color="blue"), LIMIT),
        ]
        for attempt in attempts:
            began = time.monotonic()
            with pytest.raises(MediaUnavailable, match="S3"):
                async with asyncio.timeout(60):
                    await attempt()
            assert time.monotonic() - began < 15
        await store.close()

        code, out, err = await hotline(
            "migrate-media", "--from", str(folder), env=s3_env(server, "outage")
        )
        assert code == 1 and "did not answer" in err and "nothing copied" in err
        assert "copied" not in out
    finally:
        server.stop()
