"""The data key: values sealed with AES-GCM under a key id, look-ups by keyed hash, a
clear refusal of a missing or wrong key, and `hotline rotate-data-key` run beside the
service, killed with -9 half-way and run again."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import String, delete, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.crypto import (
    DataKeyError,
    Keyring,
    agree,
    install,
    key_id,
    keyring_from,
    keys,
    new_key,
    parse_key,
    sealed_id,
)
from backend.models import (
    Conversation,
    InboundEvent,
    InstanceSecret,
    OutboxMessage,
    Photo,
    ReporterIdentity,
    utcnow,
)
from backend.services.rekey import left, sealed_columns
from backend.services.reporters import create_phone_reporter
from tests.factories import add_waiting_updates, chat_key, make_ticket

HOTLINE = str(Path(sys.executable).with_name("hotline"))


def test_a_sealed_value_opens_only_under_its_key_and_in_its_column() -> None:
    ring = keyring_from(new_key())
    one, two = ring.seal("+84912345678", "a.phone"), ring.seal("+84912345678", "a.phone")
    assert one != two and "912345678" not in one
    assert sealed_id(one) == ring.current_id
    assert ring.open(one, "a.phone") == "+84912345678"
    with pytest.raises(DataKeyError, match="does not open"):
        ring.open(one, "b.phone")  # moved to another column
    kid, _, body = one.partition(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DataKeyError, match="does not open"):
        ring.open(f"{kid}.{flipped}", "a.phone")
    with pytest.raises(DataKeyError, match="HOTLINE_DATA_KEY_PREVIOUS"):
        keyring_from(new_key()).open(one, "a.phone")
    # The previous key still opens what it sealed; new values go under the current one.
    rotated = keyring_from(new_key(), [new_key(), "", ring_key(ring)])
    assert rotated.open(one, "a.phone") == "+84912345678"
    assert sealed_id(rotated.seal("x", "a.phone")) == rotated.current_id != ring.current_id
    # Look-ups: the same for the same chat, different across channels and purposes.
    assert ring.chat_key("telegram", "42") == ring.chat_key("telegram", "42")
    assert ring.chat_key("telegram", "42") != ring.chat_key("zalo_oa", "42")
    assert ring.phone_key("42") != ring.chat_key("telegram", "42")


def ring_key(ring: Keyring) -> str:
    return base64.b64encode(ring.current).decode()


def test_a_sealed_column_is_never_compared_in_sql() -> None:
    with pytest.raises(TypeError, match="keyed look-up"):
        _ = ReporterIdentity.phone == "+84912345678"
    with pytest.raises(TypeError, match="keyed look-up"):
        _ = OutboxMessage.address.in_(["1"])
    assert ReporterIdentity.phone.is_not(None) is not None


@pytest.mark.parametrize("bad", ["", "changeme", "c2hvcnQ=", "not base64 at all!"])
def test_a_malformed_key_is_refused_at_start(bad: str) -> None:
    with pytest.raises(DataKeyError, match="32 random bytes"):
        parse_key(bad)
    with pytest.raises(ValidationError, match="HOTLINE_DATA_KEY"):
        Settings(environment="test", data_key=SecretStr(bad or " "))


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="HOTLINE_DATA_KEY is not set"):
        Settings(environment="production", data_key=None)
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", data_key=SecretStr("changeme"))
    # A development key file is for development only.
    key_file = tmp_path / "data.key"
    key_file.write_text(new_key() + "\n")
    dev = Settings(environment="development", data_key=None, data_key_file=key_file)
    assert dev.keyring().current_id == key_id(parse_key(key_file.read_text()))
    with pytest.raises(DataKeyError, match="make run"):
        Settings(environment="test", data_key=None, data_key_file=key_file).keyring()
    with pytest.raises(DataKeyError, match="make run"):
        Settings(data_key=None, data_key_file=tmp_path / "none.key").keyring()


async def hotline(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        HOTLINE,
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_a_wrong_or_missing_key_stops_every_command_with_what_to_do(
    database_url: str, tmp_path: Path
) -> None:
    base = {"HOTLINE_ENVIRONMENT": "test", "HOTLINE_DATABASE_URL": database_url}
    wrong = {**base, "HOTLINE_DATA_KEY": new_key()}
    for args in (("link-code", "--unit", "W14812"), ("serve", "--port", "1"), ("migrate",)):
        code, _, err = await hotline(*args, env=wrong)
        assert code == 2, (args, err)
        assert "is not the key this database is sealed under" in err, (args, err)
        assert "HOTLINE_DATA_KEY_PREVIOUS" in err
    code, _, err = await hotline(
        "serve", env={**base, "HOTLINE_ENVIRONMENT": "production", "HOTLINE_DATA_KEY": ""}
    )
    assert code == 2 and "HOTLINE_DATA_KEY" in err, err
    env = {k: v for k, v in os.environ.items() if k != "HOTLINE_DATA_KEY"}
    proc = await asyncio.create_subprocess_exec(
        HOTLINE,
        "link-code",
        "--unit",
        "W14812",
        env={**env, **base, "HOTLINE_DATA_KEY_FILE": str(tmp_path / "none.key")},
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    _, err_bytes = await proc.communicate()
    assert proc.returncode == 2 and "no data key" in err_bytes.decode()
    # With the right key the same command works.
    code, printed, err = await hotline("link-code", "--unit", "W14812", env=base)
    assert code == 0 and printed.strip(), err


@contextmanager
def installed(ring: Keyring) -> Iterator[Keyring]:
    """Run as a process with these keys would (the test's own keys come back after)."""
    before = keys()
    install(ring)
    try:
        yield ring
    finally:
        install(before)


async def seed(sessions: async_sessionmaker[AsyncSession], n: int) -> dict[str, set[str]]:
    """n chat reporters with a conversation, an outbox row and a stored update each, and
    n phone callers; returns the plaintexts."""
    chats, phones = set(), set()
    async with sessions() as s, s.begin():
        for i in range(n):
            chat = str(810_000_000 + i)
            photo = {
                "sha256": f"{i:064x}",
                "content_type": "image/jpeg",
                "width": 1,
                "height": 1,
                "size_bytes": 1,
                "gps": (20.07 + i / 1000, 105.91),
                "taken_at": "2026-11-30T07:00:00",
            }
            await make_ticket(s, chat_id=chat, photo=photo)
            await s.execute(
                update(Conversation)
                .where(Conversation.chat_key == chat_key("telegram", chat))
                .values(data={"phone": f"+8491{i:07d}"})
            )
            s.add(OutboxMessage.to("telegram", chat, {"type": "reply", "text": f"#{i}"}))
            phone = f"+8497{i:07d}"
            await create_phone_reporter(s, f"Người gọi {i}", phone, None)
            chats.add(chat)
            phones.add(phone)
        add_waiting_updates(s, "zalo_oa", [1] * n, utcnow())
    return {"chats": chats, "phones": phones}


async def everything(sessions: async_sessionmaker[AsyncSession]) -> dict[str, object]:
    """Every sealed value, opened."""
    async with sessions() as s:
        return {
            "identities": sorted(
                (i.channel or "", i.chat_id or "", i.phone or "", i.display_name or "")
                for i in await s.scalars(select(ReporterIdentity))
            ),
            "drafts": {c.id: c.data for c in await s.scalars(select(Conversation))},
            "outbox": sorted(
                (o.address or "", str(o.payload)) for o in await s.scalars(select(OutboxMessage))
            ),
            "updates": sorted(
                (e.address, str(e.body)) for e in await s.scalars(select(InboundEvent))
            ),
            "exif": sorted(str(p.exif) for p in await s.scalars(select(Photo))),
        }


async def raw_ids(engine: AsyncEngine) -> set[str]:
    """The key ids of every sealed value as stored."""
    found = set()
    async with engine.connect() as conn:
        for col in sealed_columns():
            raw = type_coerce(col.column, String)
            for value in await conn.scalars(select(raw).where(col.column.is_not(None))):
                found.add(sealed_id(str(value)))
    return found


async def test_rotation_killed_half_way_and_run_again_loses_nothing(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    seeded = await seed(sessions, 60)
    before = await everything(sessions)
    old = keys()
    new = new_key()
    new_id = key_id(parse_key(new))
    assert await raw_ids(engine) == {old.current_id}
    env = {
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_DATA_KEY": new,
        "HOTLINE_DATA_KEY_PREVIOUS": ring_key(old),
    }
    proc = await asyncio.create_subprocess_exec(
        HOTLINE,
        "rotate-data-key",
        "--batch",
        "1",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    progress = 0
    while progress < 20:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, await proc.stderr.read() if proc.stderr else b""
        if ": " in line and line.rsplit(": ", 1)[1].strip().isdigit():
            progress += 1
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # Until the rotation is done, a process with the new key alone is refused at start.
    with pytest.raises(DataKeyError, match="is not the key this database is sealed under"):
        async with engine.begin() as conn:
            await conn.run_sync(agree, keyring_from(new))

    both = keyring_from(new, [ring_key(old)])
    async with engine.begin() as conn:
        await conn.run_sync(agree, both)
    with installed(both):
        # Half-way: some values under each key, every one still readable, and the
        # service (the new key first, the old one previous) changes some meanwhile.
        assert await raw_ids(engine) == {old.current_id, new_id}
        assert await left(engine, both)
        assert await everything(sessions) == before
        async with sessions() as s, s.begin():
            moved = list(
                await s.scalars(
                    select(ReporterIdentity).where(ReporterIdentity.phone_key.is_not(None)).limit(3)
                )
            )
            for identity in moved:
                identity.phone = "+84900000001"
                identity.phone_key = both.phone_key("+84900000001")
        # Run again to the end while the service keeps writing drafts (under the new
        # key): a value it wrote is never put back to what the rotation had read.
        rotation = asyncio.create_task(hotline("rotate-data-key", "--batch", "2", env=env))
        async with sessions() as s:
            drafts = list(await s.scalars(select(Conversation.id)))
        written: dict[int, dict[str, int]] = {}
        n = 0
        while not rotation.done():
            n += 1
            conv_id = drafts[n % len(drafts)]
            async with sessions() as s, s.begin():
                await s.execute(
                    update(Conversation).where(Conversation.id == conv_id).values(data={"n": n})
                )
            written[conv_id] = {"n": n}
            await asyncio.sleep(0.005)
        code, out, err = await rotation
        assert code == 0, err
        assert "every value is under the new key" in out
        assert await left(engine, both) == {}
        assert n > 20, "the rotation ended before the service wrote much"
        async with sessions() as s:
            for conv in await s.scalars(select(Conversation).where(Conversation.id.in_(written))):
                assert conv.data == written[conv.id]
    assert await raw_ids(engine) == {new_id}

    # The new key alone now opens everything, and the look-ups still find the chats.
    alone = keyring_from(new)
    async with engine.begin() as conn:
        await conn.run_sync(agree, alone)
    assert alone.lookup_key == old.lookup_key
    with installed(alone):
        after = await everything(sessions)
        async with sessions() as s:
            phones = {i.phone for i in await s.scalars(select(ReporterIdentity))}
    changed = {i.reporter_id for i in moved}
    assert "+84900000001" in phones
    assert len(phones & seeded["phones"]) == len(seeded["phones"]) - len(changed)
    assert after["drafts"] == {
        conv_id: written.get(conv_id, data)
        for conv_id, data in before["drafts"].items()  # type: ignore[attr-defined]
    }
    assert after["outbox"] == before["outbox"]
    assert after["updates"] == before["updates"]
    assert after["exif"] == before["exif"]
    # The old key alone is refused, with what to do.
    with pytest.raises(DataKeyError, match="HOTLINE_DATA_KEY_PREVIOUS"):
        async with engine.begin() as conn:
            await conn.run_sync(agree, keyring_from(ring_key(old)))


async def test_a_database_without_its_look_up_key_is_refused(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        await make_ticket(s)
        await s.execute(delete(InstanceSecret))
    with pytest.raises(DataKeyError, match="restore that row"):
        async with engine.begin() as conn:
            await conn.run_sync(agree, keyring_from(ring_key(keys())))
