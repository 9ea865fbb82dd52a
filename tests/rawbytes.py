"""What a copy of the database holds, byte for byte: for the tests that no plaintext
identity is stored."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine


def forms(value: str) -> list[bytes]:
    """The ways a value could be written down: as is, JSON-escaped, and for a phone
    number its national and bare forms."""
    found = {value, json.dumps(value)[1:-1]}
    if value.startswith("+84"):
        found |= {"0" + value[3:], value[3:]}
    return [f.encode() for f in found]


def raw_sqlite(database_url: str) -> bytes:
    path = Path(str(make_url(database_url).database))
    return b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )


async def raw_postgres(engine: AsyncEngine, since: float, *, wal: bool = True) -> bytes:
    """The database's files as the server wrote them (after a checkpoint), and the WAL
    written since `since`; and every row of every table as text too."""
    async with engine.connect() as conn:
        await conn.execute(text("CHECKPOINT"))
        directory = Path(str(await conn.scalar(text("SHOW data_directory"))))
        oid = await conn.scalar(
            text("SELECT oid FROM pg_database WHERE datname = current_database()")
        )
        tables = list(
            await conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        )
        dumps = [
            await conn.scalar(
                text(f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{name}\" t")  # noqa: S608
            )
            for name in tables
        ]
    files = [p for p in (directory / "base" / str(oid)).iterdir() if p.is_file()]
    if wal:
        files += [
            p
            for p in (directory / "pg_wal").iterdir()
            if p.is_file() and p.stat().st_mtime >= since
        ]
    assert files, "no database files to search"
    return b"".join(map(_read_if_there, files)) + "\n".join(map(str, dumps)).encode()


def _read_if_there(path: Path) -> bytes:
    """A file's bytes; nothing for one the server removed meanwhile (its relation cache,
    pg_internal.init, is dropped and written again at any time: it holds no rows)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def raw_database(
    database_url: str, engine: AsyncEngine, since: float, *, wal: bool = True
) -> bytes:
    """The database's bytes; PostgreSQL's WAL written since `since` with `wal`."""
    if database_url.startswith("sqlite"):
        return raw_sqlite(database_url)
    return await raw_postgres(engine, since, wal=wal)


def named(raw: bytes, secrets: list[str]) -> list[tuple[str, bytes]]:
    """The secrets found in raw, each with what surrounds it."""
    found = []
    for secret in secrets:
        for form in forms(secret):
            at = raw.find(form)
            if at >= 0:
                found.append((secret, raw[max(0, at - 120) : at + len(form) + 60]))
                break
    return found
