"""systemd/edge.service, unchanged, started by a real systemd manager: the node runs under every sandbox
setting of the unit (seccomp, MemoryDenyWriteExecute=, no capabilities, private users, device ACL,
credentials), detects, writes private files and stops cleanly. See tests/support/unit_sandbox.py for how
systemd runs here without being PID 1 of the machine, and what differs from a real install."""

import json
import time

import pytest
import yaml
from support.servers import free_port
from support.unit_sandbox import UnitSandbox, unavailable

from conftest import REPO

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"no sandboxed systemd: {unavailable()}")


def _status(sb: UnitSandbox) -> dict:
    path = sb.path("/var/lib/edge/status.json")
    return json.loads(path.read_text()) if path.exists() else {}


def test_the_node_runs_under_the_units_sandbox(sim_clip, tmp_path):
    clip = sim_clip("throw", 1, duration_s=6.0)
    config = yaml.safe_load((clip / "config.yaml").read_text())
    config["storage"] = {"dir": "/var/lib/edge"}
    config["node"] = {**config.get("node", {}), "metrics": {"listen": f"127.0.0.1:{free_port()}"}}  # not 9108
    config["cameras"]["sim"]["source"] = "/etc/edge/clip.mp4"
    config["cameras"]["usb"] = {"source": "/dev/video0"}
    # The broker password as the README has it: a systemd credential. Nothing listens on port 1, so
    # every message stays in the outbox.
    config["mqtt"] = {"port": 1, "username": "sim", "password_file": "${CREDENTIALS_DIRECTORY}/mqtt"}
    etc_edge = {
        "edge.yaml": (yaml.safe_dump(config).encode(), 0o644),
        "clip.mp4": ((clip / "scene.mp4").read_bytes(), 0o644),
        "secrets.env": (b"CAM_PW=not-used\n", 0o600),
        "mqtt.pw": (b"s3cret\n", 0o600),
    }
    unit = (REPO / "systemd" / "edge.service").read_text()
    with UnitSandbox(tmp_path, unit, etc_edge, REPO) as sb:
        sb.systemctl("start", "edge.service")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _status(sb).get("sim", {}).get("state") != "ended":
            time.sleep(0.5)
        running = sb.show("edge.service", "ActiveState", "MainPID")
        assert running["ActiveState"] == "active", (tmp_path / "edge.log").read_text()
        proc = dict(
            line.split(":\t", 1)
            for line in sb.path(f"/proc/{running['MainPID']}/status").read_text().splitlines()
            if ":\t" in line
        )
        # the sandbox is in force on the node itself
        assert proc["Uid"].split()[0] != "0" and proc["CapEff"] == proc["CapBnd"] == "0000000000000000"
        assert proc["NoNewPrivs"] == "1" and proc["Seccomp"] == "2"
        status = _status(sb)
        events = sb.path("/var/lib/edge/events.jsonl").read_text()
        modes = {
            str(p.relative_to(sb.path("/var/lib/edge"))): p.stat().st_mode & 0o777
            for p in sb.path("/var/lib/edge").rglob("*")
        }
        root_mode = sb.path("/var/lib/edge").stat().st_mode & 0o777
        sb.systemctl("stop", "edge.service")
        stopped = sb.show("edge.service", "Result", "ExecMainStatus", "NRestarts")
    log = (tmp_path / "edge.log").read_text()
    assert stopped == {"Result": "success", "ExecMainStatus": "0", "NRestarts": "0"}, log
    assert status["sim"]["state"] == "ended"
    rows = [json.loads(line) for line in events.splitlines() if line.strip()]
    assert sum(row["type"] == "new" for row in rows) == 2, log  # the scene's two throws, decided
    # Files: UMask=0077 and StateDirectoryMode=0700. The node itself makes each original clip read-only
    # for everyone (0444); the 0700 storage dir is what keeps other users out of it.
    assert root_mode == 0o700
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077 and not name.endswith("/original.ts")}
    assert not loose, loose
    assert modes["keys/node_ed25519.pem"] == 0o600 and modes["outbox.sqlite"] == 0o600
    # No video4linux driver on a test machine: the device ACL has nothing to allow, so the open is refused
    # (a camera with its driver loaded is what the ACL admits; that is not shown here).
    assert status["usb"]["state"] == "offline"
    assert "Operation not permitted" in log or "Permission denied" in status["usb"]["reason"]


def test_a_config_the_node_refuses_is_not_restarted_and_a_crash_is(sim_clip, tmp_path):
    clip = sim_clip("throw", 1, duration_s=6.0)
    config = yaml.safe_load((clip / "config.yaml").read_text())
    config["storage"] = {"dir": "/var/lib/edge"}
    config["node"] = {**config.get("node", {}), "metrics": {"listen": None}}
    config["cameras"]["sim"]["source"] = "rtsp://cam:${CAM_PW}@127.0.0.1:1/live"
    config["mqtt"] = {"enabled": False}
    etc_edge = {"edge.yaml": (yaml.safe_dump(config).encode(), 0o644), "mqtt.pw": (b"\n", 0o600)}  # CAM_PW unset
    unit = (REPO / "systemd" / "edge.service").read_text()
    with UnitSandbox(tmp_path, unit, etc_edge, REPO) as sb:
        # The sandbox's drop-in says Restart=no: the unit's own policy back, sooner than its 5 s.
        sb.path("/run/sbx/units/edge.service.d/zz-restart.conf").write_text(
            "[Service]\nRestart=on-failure\nRestartSec=1\n"
        )
        sb.systemctl("daemon-reload")
        sb.systemctl("start", "--no-block", "edge.service")
        refused = _wait_for(sb, lambda shown: shown["ActiveState"] == "failed")
        time.sleep(3)  # three restart delays: a restart, had there been one, has happened
        refused_later = sb.show("edge.service", "ActiveState", "NRestarts")
        # Positive control: a node that dies of something a restart may mend (no free disk, a lost file) is
        # restarted. SIGKILL stands in for any such death.
        sb.path("/etc/edge/secrets.env").write_text("CAM_PW=pw\n")
        sb.systemctl("reset-failed", "edge.service")
        sb.systemctl("start", "edge.service")
        sb.systemctl("kill", "--signal=SIGKILL", "edge.service")
        crashed = _wait_for(sb, lambda shown: int(shown["NRestarts"]) >= 1)
        sb.systemctl("stop", "edge.service")
    log = (tmp_path / "edge.log").read_text(errors="replace")
    assert refused["ExecMainStatus"] == "78" and "CAM_PW" in log, (refused, log[-2000:])
    assert refused_later == {"ActiveState": "failed", "NRestarts": "0"}, (refused_later, log[-2000:])
    assert int(crashed["NRestarts"]) >= 1, (crashed, log[-2000:])


def _wait_for(sb: UnitSandbox, done, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        shown = sb.show("edge.service", "ActiveState", "NRestarts", "ExecMainStatus", "Result")
        if done(shown) or time.monotonic() > deadline:
            return shown
        time.sleep(0.3)
