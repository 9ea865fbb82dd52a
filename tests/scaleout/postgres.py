"""A PostgreSQL server of the test's own (scripts/pg.sh), which it may crash and start
again, and its databases."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PG_SH = ROOT / "scripts" / "pg.sh"
# The project's console scripts, beside the interpreter that runs the tests.
BIN = Path(sys.executable).parent
HOTLINE = BIN / "hotline"
BASH = shutil.which("bash") or "/bin/bash"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def _bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin")):
        if (candidate / "pg_ctl").exists():
            return candidate
    raise RuntimeError("PostgreSQL's pg_ctl not found (scripts/pg.sh installs it)")


def _as_owner(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: its tools run as the postgres user then."""
    return [RUNUSER, "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


class OwnPostgres:
    """scripts/pg.sh's server on a port of its own, then (durable) started again with
    every commit written before the client hears of it (synchronous_commit on), so that
    a crash of the server loses nothing it acknowledged, as on a production server;
    fsync stays off (a crash of the server process, not of the machine, is what the
    tests make). It logs lock waits over a second, deadlocks and slow statements."""

    def __init__(self, port: int, *, durable: bool = True) -> None:
        """durable=False: scripts/pg.sh's settings as they are (commits acknowledged
        before they are on disk), as the benchmarks run."""
        self.port = port
        self.durable = durable
        # Not a TemporaryDirectory: the postgres user must reach it; pg.sh removes it.
        self.datadir = Path(tempfile.mkdtemp(prefix="hotline-scaleout-pg."))

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        pg_sh = [BASH, str(PG_SH)]
        subprocess.run([*pg_sh, "start", str(self.datadir), str(self.port)], check=True)  # noqa: S603
        if self.durable:
            self._pg_ctl("stop", "-m", "fast")
            self.start_again()

    def start_again(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.datadir} "
            "-c fsync=off -c full_page_writes=off -c max_connections=300 "
            # What the test reads back: lock waits over deadlock_timeout (1 s), deadlocks
            # (always logged), statements slower than a second.
            "-c log_lock_waits=on -c log_min_duration_statement=1000 "
            "-c log_line_prefix='%m [%p] %d '"
        )
        self._pg_ctl("start", "-l", str(self.datadir / "server.log"), "-t", "60", "-o", options)

    def crash(self) -> None:
        """Stop at once, as a crash would: no checkpoint, clients cut off mid-query."""
        self._pg_ctl("stop", "-m", "immediate")

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_text(self) -> str:
        try:
            return (self.datadir / "server.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        subprocess.run([BASH, str(PG_SH), "stop", str(self.datadir)], check=False)  # noqa: S603

    def _pg_ctl(self, *args: str) -> None:
        # Looked up now: scripts/pg.sh installs PostgreSQL when it is missing.
        argv = _as_owner([str(_bindir() / "pg_ctl"), "-D", str(self.datadir), "-w", *args])
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our own

    async def execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def build_template(self, name: str) -> float:
        """A database with the schema and every unit, made by the commands an operator
        runs (`hotline migrate`, `hotline import-units`); returns the seconds it took."""
        began = time.monotonic()
        await self.execute(f"CREATE DATABASE {name}")
        env = {**os.environ, "HOTLINE_DATABASE_URL": self.url(name)}
        for command in ("migrate", "import-units"):
            done = await asyncio.create_subprocess_exec(
                str(HOTLINE),
                command,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await done.communicate()
            if done.returncode != 0:
                raise RuntimeError(f"hotline {command} failed:\n{out.decode()[-3000:]}")
        return time.monotonic() - began

    async def copy(self, template: str, name: str) -> str:
        """A fresh database copied from the template; its URL."""
        await self.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)
