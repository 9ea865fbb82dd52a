"""What the database benchmarks share: a data key for the run, a value as SQLite stores
it, the bare driver's DSN, and a throw-away PostgreSQL server. Kept light: measuring
children import it."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from backend.crypto import install, keyring_from, new_key

ROOT = Path(__file__).resolve().parent.parent

# A throw-away data key for the run; the servers it starts inherit it.
os.environ.setdefault("HOTLINE_DATA_KEY", new_key())
install(keyring_from(os.environ["HOTLINE_DATA_KEY"]))


def sqlite_text(value: Any) -> Any:
    """A value as SQLAlchemy stores it in SQLite (naive UTC text for timestamps)."""
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        )
    return value


def pg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a DSN for asyncpg itself."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def quiet_migrations() -> None:
    """Alembic's INFO lines would bury the figures."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextmanager
def throwaway_postgres(port: int) -> Iterator[str]:
    """A PostgreSQL server started for the benchmark (scripts/pg.sh); yields its URL."""
    # Not under a TemporaryDirectory: the postgres user must reach it (pg.sh removes it).
    pgdir = tempfile.mkdtemp(prefix="hotline-bench-pg.")
    script = str(ROOT / "scripts" / "pg.sh")
    subprocess.run(["bash", script, "start", pgdir, str(port)], check=True)
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["bash", script, "stop", pgdir], check=False)
