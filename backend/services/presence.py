"""Which server processes are alive, and which one holds each duty.

Every process writes a beat every BEAT seconds. A lease (an outbox row being sent, a
chat's events being handled, a job) names its owner and lasts as long as the owner
beats. A process that has not beaten for DEAD_AFTER seconds is dead: its leases and
duties go to the others. So a lease never ends under a live owner, however long that
owner waits on a platform's retry_after, and a crash frees its work within seconds.

A process takes over another's work only after it has itself beaten without a gap for
DEAD_AFTER. After a database outage every beat is old; the live owners then get that long
to record what they did before anyone else takes their work.

The clocks of the machines must agree to well under a second (NTP): beats are stamped
by the process that writes them.

On SQLite there is one process (see DESIGN.md): it holds every duty, any lease another
owner left is a dead process's, and nothing is written for a beat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, false, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from backend.models import Duty, ProcessBeat, utcnow
from backend.services.quiet import Quiet
from backend.services.upsert import insert_for

log = logging.getLogger(__name__)

BEAT = 2.0
DEAD_AFTER = 6.0
# A beat row older than this is no process's any more, and is deleted.
FORGET_AFTER = timedelta(days=1)


class Presence:
    """This process's beat, and the duties it holds."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        beat: float = BEAT,
        dead_after: float = DEAD_AFTER,
        clock: Callable[[], float] = time.monotonic,
        alone: bool | None = None,
    ) -> None:
        """alone: the only process there can be (by default, on SQLite)."""
        self.id = secrets.token_hex(8)
        self._sessions = sessions
        self._beat = beat
        self._dead_after = dead_after
        self._clock = clock
        self._wanted: set[str] = set()
        self._held: frozenset[str] = frozenset()
        self._last_ok: float | None = None
        self._steady_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._quiet = Quiet("presence")
        self._started_at = utcnow()
        if alone is None:
            bind = sessions.kw.get("bind")
            alone = bind is not None and bind.dialect.name == "sqlite"
        self._alone = alone

    # --- what the others ask ---------------------------------------------------------------

    def want(self, duty: str) -> None:
        """Ask for a duty: it is taken at the next beat when free (or its holder dead)."""
        self._wanted.add(duty)

    def alive(self) -> bool:
        """Whether the others still count this process as alive (with a beat to spare):
        a process that is not must not start work under its leases."""
        return (
            self._last_ok is not None
            and self._clock() - self._last_ok < self._dead_after - self._beat
        )

    def may_work(self) -> bool:
        """Whether this process may start work under its own leases now (alone, or
        alive in the others' eyes)."""
        return self._alone or self.alive()

    def holds(self, duty: str) -> bool:
        if self._alone:
            return duty in self._wanted
        return duty in self._held and self.alive()

    def may_take_over(self) -> bool:
        """Whether this process has beaten long enough without a gap to judge others dead."""
        if self._alone:
            return True
        return (
            self.alive()
            and self._steady_since is not None
            and self._clock() - self._steady_since >= self._dead_after
        )

    def free_for_me(self, owner: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
        """SQL: the row's lease (its owner column) is free for this process: no owner,
        this process, or (once it may take over) an owner that is dead."""
        if self._alone:
            return true()
        mine = or_(owner.is_(None), owner == self.id)
        if not self.may_take_over():
            return mine
        alive = select(ProcessBeat.id).where(ProcessBeat.seen_at > self.alive_after())
        return or_(mine, owner.not_in(alive))

    def alive_after(self) -> datetime:
        """Beats after this time are of live processes."""
        return utcnow() - timedelta(seconds=self._dead_after)

    async def changed(self) -> None:
        """Wait until the duties held change."""
        await self._changed.wait()
        self._changed.clear()

    # --- the beat --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence")

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                self._quiet.recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.failed(exc)
            await asyncio.sleep(self._beat)

    async def beat(self) -> None:
        """Show this process is alive; take the wanted duties that are free; learn which
        duties it holds."""
        if self._alone:
            return
        take_over = self.may_take_over()
        # The beat counts from before its transaction: the row says `now` however long
        # the commit takes, and this process must not think itself alive for longer
        # than the others do.
        began = self._clock()
        now = utcnow()
        async with self._sessions() as session, session.begin():
            seen = await session.execute(
                update(ProcessBeat)
                .where(ProcessBeat.id == self.id)
                .values(seen_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(seen, "rowcount", 0) == 0:
                session.add(
                    ProcessBeat(
                        id=self.id,
                        host=socket.gethostname()[:255],
                        pid=os.getpid(),
                        started_at=self._started_at,
                        seen_at=now,
                    )
                )
            if self._wanted:
                wanted = sorted(self._wanted)
                await session.execute(
                    insert_for(session, Duty)
                    .values([{"name": name, "owner": None, "since": now} for name in wanted])
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                dead = (
                    Duty.owner.not_in(
                        select(ProcessBeat.id).where(
                            ProcessBeat.seen_at > now - timedelta(seconds=self._dead_after)
                        )
                    )
                    if take_over
                    else false()
                )
                await session.execute(
                    update(Duty)
                    .where(Duty.name.in_(wanted), or_(Duty.owner.is_(None), dead))
                    .values(owner=self.id, since=now)
                    .execution_options(synchronize_session=False)
                )
            held = frozenset(await session.scalars(select(Duty.name).where(Duty.owner == self.id)))
            await session.execute(
                delete(ProcessBeat).where(ProcessBeat.seen_at < now - FORGET_AFTER)
            )
        if self._last_ok is None or began - self._last_ok >= self._dead_after:
            self._steady_since = began
        self._last_ok = began
        if held != self._held:
            for duty in sorted(held - self._held):
                log.info("this process now holds the duty %s", duty)
            self._held = held
            self._changed.set()

    async def stop(self) -> None:
        """Stop beating and hand the duties back at once, so another process takes them
        at its next beat rather than after DEAD_AFTER."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._held = frozenset()
        if self._alone:
            return
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(Duty)
                    .where(Duty.owner == self.id)
                    .values(owner=None)
                    .execution_options(synchronize_session=False)
                )
                await session.execute(delete(ProcessBeat).where(ProcessBeat.id == self.id))
        except Exception as exc:
            log.warning("could not hand back the duties at stop (%s)", type(exc).__name__)
