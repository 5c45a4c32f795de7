"""Schema migrations with Alembic, driven from code (`edge-center db upgrade`): no alembic.ini to ship."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError

SCRIPTS = Path(__file__).resolve().parent / "alembic"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolates %
    return cfg


class SchemaAhead(Exception):
    """The database was migrated by a newer edge-center (an upgrade undone): this code must not touch it."""


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating it, for SQLite)."""
    refuse_newer(current(url))
    command.upgrade(alembic_config(url), revision)


def refuse_newer(at: str | None) -> None:
    """Raise SchemaAhead when the database is at a revision these migrations do not have."""
    from alembic.script import ScriptDirectory

    if at is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(at)
    except CommandError:  # "Can't locate revision identified by ..."
        raise SchemaAhead(
            f"the database is at revision {at}, newer than this edge-center's {head()}: it was migrated by a "
            "newer edge-center; run that one again, or restore the database's backup taken before the upgrade"
        ) from None


def current(url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    from center.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
