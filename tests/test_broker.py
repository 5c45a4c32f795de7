"""The shipped broker (configs/mosquitto/) starts as shipped, and holds what README, "The broker", promises.

Every test runs a real Mosquitto loaded from the shipped mosquitto.conf and acl; only paths and the port differ."""

from __future__ import annotations

import re

import pytest
from support.broker import SHIPPED, Broker
from support.servers import wait_for

USERS = {"garden-a": "pw-a", "garden-b": "pw-b", "center": "pw-center", "monitor": "pw-monitor"}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", USERS).start()
    yield b
    b.stop()


def test_the_shipped_config_has_no_end_of_line_comments():
    # Mosquitto takes everything after the option name as its value: "password_file /x  # y" opens "/x  # y".
    for n, line in enumerate((SHIPPED / "mosquitto.conf").read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" not in line, f"mosquitto.conf:{n}: a comment after a value is part of the value: {line!r}"


def test_the_broker_under_test_is_the_shipped_config_with_only_paths_and_port_changed(broker):
    shipped = (SHIPPED / "mosquitto.conf").read_text().splitlines()
    running = broker.shipped.read_text().splitlines()
    assert len(running) == len(shipped)
    changed = {a.split()[0] for a, b in zip(shipped, running, strict=True) if a != b}
    assert changed == {"password_file", "acl_file", "listener", "cafile", "certfile", "keyfile"}
    for a, b in zip(shipped, running, strict=True):
        if a != b:  # only the first value differs
            assert re.sub(r"^(\S+\s+)\S+", r"\1", a) == re.sub(r"^(\S+\s+)\S+", r"\1", b).replace(" 127.0.0.1", "")
    assert wait_for(lambda: broker.proc.poll() is None, 1)  # it started from them, and runs
