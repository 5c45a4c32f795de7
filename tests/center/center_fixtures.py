"""Fixtures of the center's tests: a real Mosquitto, SQLite and a throwaway PostgreSQL.

Not a conftest.py: a second conftest module (tests/ has no packages) would take the name `conftest` from
tests/conftest.py, which the node's tests import from. Each test module imports the fixtures it uses."""

from __future__ import annotations

import pytest
from centerkit import USERS
from support.broker import Broker

from center.pgcluster import Cluster, why_not

__all__ = ["broker", "db_url", "pg_cluster"]

_CLUSTER: list[Cluster] = []  # one cluster for the session, whichever module asks first


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    """A PostgreSQL cluster for the whole session (each importing module shares the first one's)."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    if _CLUSTER:
        yield _CLUSTER[0]
        return
    _CLUSTER.append(Cluster(tmp_path_factory.mktemp("pg")).start())
    yield _CLUSTER[0]
    _CLUSTER.pop().stop()


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
