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
    """Bring the database at `url` to `revision` (creating it, for SQLite). An SQLite database with a schema is
    copied first (keep_copy): the migrations cannot be undone by the package before them."""
    at = current(url)
    refuse_newer(at)
    if at is not None and url.startswith("sqlite:///") and at != _revision_id(revision):
        keep_copy(Path(url.removeprefix("sqlite:///")), at)
    command.upgrade(alembic_config(url), revision)


def keep_copy(path: Path, at: str) -> Path:
    """Copy an SQLite database (with what its WAL holds, through SQLite's online backup) to
    <path>.at-<revision>.<UTC time>, beside it: what the package that made it can run on again."""
    import datetime as dt
    import sqlite3

    copy = path.with_name(f"{path.name}.at-{at}.{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    src, dst = sqlite3.connect(path), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return copy


def _revision_id(revision: str) -> str:
    return head() if revision == "head" else revision


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
            "newer edge-center; run that one again, or put back the copy it kept before migrating (SQLite: "
            f"<data_dir>/center.db.at-{head()}.<time>)"
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
