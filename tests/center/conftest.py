"""Fixtures of the center's tests: a real Mosquitto, SQLite and a throwaway PostgreSQL."""

from __future__ import annotations

import pytest
from centerkit import USERS
from support.broker import Broker

from center.pgcluster import Cluster, why_not


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(tmp_path_factory.mktemp("pg")).start()
    yield cluster
    cluster.stop()


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
