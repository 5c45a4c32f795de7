"""systemd/edge.service under a real systemd manager (tests/support/unit_sandbox.py): Type=notify start waits for
the node's READY=1, the watchdog receives its pings, and `systemctl reload edge` applies a new config in the
running process or refuses a broken one, without a restart."""

from __future__ import annotations

import time

import pytest
import yaml
from support.servers import free_port
from support.unit_sandbox import UnitSandbox, unavailable
from support.units import service_settings

from conftest import REPO, loop_clip

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"no sandboxed systemd: {unavailable()}")


def test_the_unit_is_type_notify_with_a_watchdog_and_a_reload_command():
    one = {key: values[-1] for key, values in service_settings(REPO / "systemd" / "edge.service").items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) >= 10  # a stuck worker is declared after node.worker_stall_s (30 s)
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"


def _wait_log(tmp_path, text: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (tmp_path / "edge.log").read_text(errors="replace"):
            return True
        time.sleep(0.3)
    return False


def test_systemctl_reload_applies_a_new_config_in_the_same_process_and_refuses_a_broken_one(sim_clip, tmp_path):
    clip = sim_clip("throw", 1)
    long = loop_clip(clip / "scene.mp4", 12, tmp_path / "long.mp4")  # 96 s: the camera is still on at the end
    config = yaml.safe_load((clip / "config.yaml").read_text())
    config["storage"] = {"dir": "/var/lib/edge"}
    config["mqtt"] = {"enabled": False}
    config["node"] = {**config.get("node", {}), "metrics": {"listen": f"127.0.0.1:{free_port()}"}}  # not 9108
    config["cameras"]["sim"]["source"] = "/etc/edge/clip.mp4"
    etc_edge = {
        "edge.yaml": (yaml.safe_dump(config).encode(), 0o644),
        "clip.mp4": (long.read_bytes(), 0o644),
        "mqtt.pw": (b"\n", 0o600),
    }
    with UnitSandbox(tmp_path, (REPO / "systemd" / "edge.service").read_text(), etc_edge, REPO) as sb:
        # The shipped WatchdogSec=60 made short, so that a missing ping would show within the test.
        sb.path("/run/sbx/units/edge.service.d/watchdog-test.conf").write_text("[Service]\nWatchdogSec=3\n")
        sb.systemctl("daemon-reload")
        sb.systemctl("start", "edge.service")  # Type=notify: returns once the node said READY=1
        started = sb.show("edge.service", "ActiveState", "MainPID", "StatusText")
        assert started["ActiveState"] == "active", (tmp_path / "edge.log").read_text()
        assert started["StatusText"].startswith("1 cameras started"), started
        first_ping = sb.show("edge.service", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]

        config["cameras"]["sim"]["fall"] = {"min_fall_floors": 1.5}
        sb.path("/etc/edge/edge.yaml").write_text(yaml.safe_dump(config))
        sb.systemctl("reload", "edge.service")
        assert _wait_log(tmp_path, "config reloaded: new settings for sim"), (tmp_path / "edge.log").read_text()

        sb.path("/etc/edge/edge.yaml").write_text(yaml.safe_dump(config) + "bogus: 1\n")
        sb.systemctl("reload", "edge.service")
        assert _wait_log(tmp_path, "config reload refused, the running config is kept"), (
            tmp_path / "edge.log"
        ).read_text()
        # Pings stamped more than one WatchdogSec after the first: the node lived past it on its pings.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pinged = sb.show("edge.service", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
            if int(pinged) - int(first_ping) > 3_000_000:
                break
            time.sleep(0.5)
        after = sb.show("edge.service", "ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        sb.systemctl("stop", "edge.service")
        stopped = sb.show("edge.service", "Result")
    assert after["ActiveState"] == "active" and after["MainPID"] == started["MainPID"], after
    assert after["NRestarts"] == "0"
    # systemd stamps each WATCHDOG=1 it receives: later pings came, and without them WatchdogSec=3 would
    # have killed the node long before (Result=watchdog).
    assert int(after["WatchdogTimestampMonotonic"]) - int(first_ping) > 3_000_000, (first_ping, after)
    assert stopped["Result"] == "success"
