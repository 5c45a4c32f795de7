"""Fixtures of the center's tests: a real Mosquitto, SQLite and a throwaway PostgreSQL.

Not a conftest.py: a second conftest module (tests/ has no packages) would take the name `conftest` from
tests/conftest.py, which the node's tests import from. Each test module imports the fixtures it uses."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from centerkit import USERS
from support.broker import Broker

from center.pgcluster import Cluster, why_not

__all__ = ["broker", "db_url", "pg_cluster"]

_CLUSTER: list[Cluster] = []  # one cluster for the session, whichever module asks first


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster for the whole session (each importing module shares the first one's).

    Its folder is not under pytest's base folder: each pytest session that starts makes that folder private
    again (mode 700), which would lock the `postgres` user out of a cluster another session is starting."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    if _CLUSTER:
        yield _CLUSTER[0]
        return
    folder = Path(tempfile.mkdtemp(prefix="center-test-pg-"))
    try:
        _CLUSTER.append(Cluster(folder).start())
        yield _CLUSTER[0]
        _CLUSTER.pop().stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each test that takes it runs on SQLite (WAL) and on PostgreSQL, in a fresh database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'center.db'}"
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", USERS).start()
    yield b
    b.stop()
