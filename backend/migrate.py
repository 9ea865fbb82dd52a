"""Run the Alembic migrations programmatically (used by `hotline migrate` and tests)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# The migration that sealed identities held in the clear before it.
SEALING_REVISION = "0013"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at url to revision. Blocking: call it from a thread."""
    command.upgrade(alembic_config(url), revision)


@cache
def head_revision() -> str | None:
    """The newest migration this code brings."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
