"""`hotline serve` processes on one database, as an operator runs them: started, killed
with -9, started again on the same port, spool and logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.scaleout.postgres import HOTLINE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int, *, group: bool = False) -> float:
    """User and system CPU seconds of a live process and its children, or (group) of
    the live processes of its process group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            own = int(stat.parent.name)
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        # After the command: state, ppid, pgrp, …; utime is the 12th, stime the 13th.
        ppid, pgrp = int(fields[1]), int(fields[2])
        if (group and pgrp == pid) or (not group and pid in (own, ppid)):
            total += int(fields[11]) + int(fields[12])
        if own == pid:  # and its children that have ended
            total += int(fields[13]) + int(fields[14])
    return total / ticks


# What no healthy run writes to a log.
DEADLOCK = re.compile(r"deadlock", re.IGNORECASE)


@dataclass
class Server:
    """One `hotline serve` process: its port, environment, spool and log stay the same
    across restarts; each start appends to the log."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    kills: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"==== start {self.starts} of {self.name} ====\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                str(HOTLINE),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                env=self.env,
                stdout=log,
                stderr=log,
                # Its own process group: a kill takes its photo workers too, as a crash
                # of the container would.
                start_new_session=True,
            )

    async def ready(self, within: float = 60.0) -> None:
        """Wait until /readyz says the database and every channel are up."""
        deadline = time.monotonic() + within
        last = "no answer"
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}"
                    )
                try:
                    async with http.get(f"{self.url}/readyz") as r:
                        body = await r.json()
                        if r.status == 200 and not body.get("channels_down"):
                            return
                        last = str(body)
                except (aiohttp.ClientError, ValueError) as exc:
                    last = type(exc).__name__
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {within:g} s ({last}):\n{self.tail()}")

    def kill(self) -> None:
        """kill -9, the whole process group."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.kills.append(time.monotonic())

    async def wait_dead(self) -> None:
        if self.proc is not None:
            await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 15 s); then whatever is left of its group."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """CPU time used so far by its process group (the server and its photo workers)."""
        if self.proc is None:
            return 0.0
        return cpu_seconds(self.proc.pid, group=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        """The last lines of its log, but for the access log and each send's line."""
        kept = [
            line
            for line in self.log_text().splitlines()
            if '"route": ' not in line and not ("outbox row" in line and " sent on " in line)
        ]
        return "\n".join(kept[-lines:])


class Cluster:
    """n servers on one database, each with its own spool and log under workdir."""

    def __init__(self, workdir: Path, env: dict[str, str], n: int = 3) -> None:
        self.servers: list[Server] = []
        for i in range(n):
            port = free_port()
            own = {
                **env,
                "HOTLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "HOTLINE_SPOOL_DIR": str(workdir / f"spool-{i}"),
            }
            self.servers.append(Server(f"serve-{i}", port, own, workdir / f"serve-{i}.log"))

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    async def start(self) -> None:
        for server in self.servers:
            await server.start()
        await asyncio.gather(*(s.ready() for s in self.servers))

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers))

    def by_pid(self, pid: int) -> Server | None:
        return next((s for s in self.servers if s.pid == pid), None)

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {s.name} (last {lines} lines) ---\n{s.tail(lines)}" for s in self.servers
        )
