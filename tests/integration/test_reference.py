"""Reference data changed by one process (a deadline file edited on its machine, ward
boundaries imported) reaches the other processes within seconds, without a restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import shapely
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.db import create_engine
from backend.services.boundaries import import_boundaries
from backend.services.deadlines import Policies
from backend.services.reference import Reference
from backend.services.units import WardIndex

BIM_SON = (20.0740, 105.9120)

MakeProcess = Callable[..., Reference]


@pytest.fixture
async def process(database_url: str) -> AsyncIterator[MakeProcess]:
    """A process's reference data, on an engine of its own, looked at every 0.1 s."""
    made: list[tuple[Reference, AsyncEngine]] = []

    def make(deadlines_file: Path | None = None) -> Reference:
        engine = create_engine(database_url)
        reference = Reference(
            async_sessionmaker(engine, expire_on_commit=False),
            WardIndex([]),
            Policies.load(deadlines_file),
            deadlines_file=deadlines_file,
            interval=0.1,
        )
        made.append((reference, engine))
        return reference

    yield make
    for reference, engine in made:
        await reference.stop()
        await engine.dispose()


async def until(check: Callable[[], bool], within: float = 3.0) -> None:
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time allowed")


def write(path: Path, text: str, stamp: float) -> None:
    path.write_text(text, "utf-8")
    os.utime(path, (stamp, stamp))


async def test_a_deadline_file_changed_on_one_machine_reaches_the_others(
    process: MakeProcess, tmp_path: Path
) -> None:
    policy = tmp_path / "deadlines.toml"
    write(policy, "[province.38]\nanswer_working_days_normal = 2\n", 1_000_000)
    a = process(policy)
    b = process()  # another machine, without the file
    assert b.policies.for_province("38").answer_working_days_normal == 3
    await a.start()
    await b.start()
    assert b.policies.for_province("38").answer_working_days_normal == 2
    policies_b = b.policies  # held by its workers: changed in place

    write(policy, "[province.38]\nanswer_working_days_normal = 5\n", 1_000_100)
    await until(lambda: policies_b.for_province("38").answer_working_days_normal == 5)
    assert a.policies.for_province("38").answer_working_days_normal == 5
    assert b.policies.for_province("01").answer_working_days_normal == 3

    # A broken file is refused where it was written; everyone keeps the last good one.
    write(policy, "[province.38]\nanswer_working_days_normall = 1\n", 1_000_200)
    await asyncio.sleep(0.5)
    assert policies_b.for_province("38").answer_working_days_normal == 5
    assert a.policies.for_province("38").answer_working_days_normal == 5


async def test_imported_boundaries_reach_a_running_process(
    process: MakeProcess, sessions: async_sessionmaker[AsyncSession]
) -> None:
    running = process()
    await running.start()
    wards = running.wards
    assert len(wards) > 3000
    assert wards.boundaries is None or len(wards.boundaries) == 0
    assert wards.place(*BIM_SON).ward is None  # no boundary: the resident is asked

    square = shapely.box(BIM_SON[1] - 0.02, BIM_SON[0] - 0.02, BIM_SON[1] + 0.02, BIM_SON[0] + 0.02)
    async with sessions() as session, session.begin():
        await import_boundaries(session, [("14812", square)])
    await until(lambda: wards.place(*BIM_SON).ward is not None)
    place = wards.place(*BIM_SON)
    assert place.ward is not None and place.ward.code == "14812"
