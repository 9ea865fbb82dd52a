"""Reference data every process keeps in memory, reloaded when any process changes it.

The ward names and boundaries and the deadline policy are read once at start and used on
every update. A change (`hotline import-boundaries`, `hotline import-units`, or a
deadline file edited on one machine) bumps a version row in the database; every process
looks at the versions every few seconds and reloads what changed, without a restart.

The deadline policy itself is kept in the database too, so that a file changed on one
machine reaches the processes on the others: a process whose HOTLINE_DEADLINES_FILE
differs from the stored policy (at start, or when the file changes) stores its own.
The last one stored holds for all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.db import write_retrying
from backend.models import ReferenceVersion
from backend.services.deadlines import Policies
from backend.services.quiet import Quiet
from backend.services.units import WardIndex
from backend.services.versions import DEADLINES, WARDS, bump

log = logging.getLogger(__name__)


class Reference:
    """Keeps this process's wards and deadline policy in step with the database. The
    objects are changed in place, so every holder of them sees the new data."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        wards: WardIndex,
        policies: Policies,
        *,
        served_provinces: Iterable[str] = (),
        deadlines_file: Path | None = None,
        interval: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self.wards = wards
        self.policies = policies
        self._served = tuple(served_provinces)
        self._file = deadlines_file
        self._file_stamp: float | None = None
        self._interval = interval
        self._seen: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._quiet = Quiet("reference data")

    async def start(self) -> None:
        """Publish this process's deadline file if it is not the stored policy, take the
        stored policy, then look for changes every interval."""
        await self.check()
        self._task = asyncio.create_task(self._run(), name="reference")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
                self._quiet.recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.failed(exc)

    async def check(self) -> None:
        """One look: publish a changed deadline file, reload what another changed."""
        await self._publish_file()
        async with self._sessions() as session:
            rows = {
                name: (version, content)
                for name, version, content in await session.execute(
                    select(
                        ReferenceVersion.name, ReferenceVersion.version, ReferenceVersion.content
                    )
                )
            }
            wards_version = rows.get(WARDS, (0, None))[0]
            if self._seen.get(WARDS, 0) != wards_version:
                fresh = await WardIndex.load(session, self._served)
                if WARDS in self._seen:
                    log.info("ward data changed (version %d): reloaded", wards_version)
                self.wards.replace_with(fresh)
                self._seen[WARDS] = wards_version
        version, content = rows.get(DEADLINES, (0, None))
        if self._seen.get(DEADLINES, 0) != version:
            if content is not None:
                self.policies.replace_with(Policies.from_text(content, "the stored policy"))
                log.info("deadline policy version %d in use", version)
            self._seen[DEADLINES] = version

    async def _publish_file(self) -> None:
        path = self._file
        if path is None:
            return
        stamp = (await asyncio.to_thread(path.stat)).st_mtime
        if stamp == self._file_stamp:
            return
        content = await asyncio.to_thread(path.read_text, "utf-8")
        Policies.from_text(content, str(path))  # refuse a bad file before storing it

        async def attempt() -> None:
            async with self._sessions() as session, session.begin():
                stored = await session.scalar(
                    select(ReferenceVersion.content).where(ReferenceVersion.name == DEADLINES)
                )
                if stored != content:
                    await bump(session, DEADLINES, content)
                    log.info("deadline policy from %s stored for every process", path.name)

        await write_retrying(attempt)
        self._file_stamp = stamp
