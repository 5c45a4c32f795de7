"""systemd/edge-center.service, the unit installers copy for the center: valid for systemd, sandboxed (rated OK by
`systemd-analyze security`), started when the center says READY=1 (its schema current, its API listening), run
by a real systemd manager under every sandbox setting (tests/support/unit_sandbox.py), stopped cleanly by
SIGTERM, and restarted on failure except for a config that restarting cannot mend (exit 78)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from centerkit import REPO, ROSTER, center_cmd, center_env, write_center
from support.servers import free_port
from support.unit_sandbox import UnitSandbox, unavailable
from support.units import service_settings

UNIT = REPO / "systemd" / "edge-center.service"
NAME = "edge-center"
no_sandbox = pytest.mark.skipif(unavailable() is not None, reason=f"no sandboxed systemd: {unavailable()}")


def test_the_center_unit_passes_systemd_analyze_verify(tmp_path):
    # Pointed at this checkout's `edge-center`, so systemd can check the command it would run.
    center = Path(sys.executable).parent / "edge-center"
    unit = UNIT.read_text().replace("/opt/edge-center/.venv/bin/edge-center", str(center))
    assert str(center) in unit
    (tmp_path / UNIT.name).write_text(unit)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / UNIT.name)], capture_output=True, text=True
    )
    problems = [line for line in proc.stderr.splitlines() if UNIT.name in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_the_center_unit_rates_ok_in_systemd_analyze_security():
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for edge-center\.service: (\d+\.\d+) (\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match[1]) <= 2.0 and match[2] == "OK", match[0]


def test_the_center_unit_runs_as_its_own_user_with_root_only_secrets_and_no_restart_on_a_bad_config():
    unit = service_settings(UNIT)
    one = {key: values[-1] for key, values in unit.items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "User": NAME,
        "Group": NAME,
        "ExecStart": "/opt/edge-center/.venv/bin/edge-center run --config /etc/edge-center/center.yaml",
        "EnvironmentFile": "-/etc/edge-center/secrets.env",
        "StateDirectory": NAME,
        "StateDirectoryMode": "0700",
        "UMask": "0077",
        "ProtectSystem": "strict",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "NoNewPrivileges": "yes",
        "MemoryDenyWriteExecute": "yes",
    }
    assert {key: one.get(key) for key in expected} == expected
    assert "78" in one["RestartPreventExitStatus"].split()  # EX_CONFIG, center/cli.py
    assert "ReadWritePaths" not in unit  # StateDirectory= alone: /etc/edge-center (and its secrets) stay read-only


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)  # a bound on a hang only: the messages come within seconds
    return sock


def test_run_says_ready_once_its_api_listens_and_stopping_on_sigterm(tmp_path):
    port = free_port()
    config = write_center(tmp_path, api={"host": "127.0.0.1", "port": port}, mqtt={"host": "127.0.0.1", "port": 1})
    sock = _notify_socket(tmp_path / "notify")
    env = {**center_env(), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = subprocess.Popen(
        center_cmd("run", "--config", str(config)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        ready = sock.recv(4096).decode()
        # READY=1 is sent only now: the API answers at once (the schema was migrated before it listened).
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        proc.send_signal(signal.SIGTERM)
        stopping = sock.recv(4096).decode()
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert ready.splitlines() == ["READY=1", f"STATUS=center-1: API on 127.0.0.1:{port}, broker 127.0.0.1:1"]
    assert stopping == "STOPPING=1"
    assert proc.returncode == 0, err
    assert (tmp_path / "data" / "center.db").exists()


# -- under a real systemd manager ----------------------------------------------------------------------------


def _center_yaml(api_port: int, **over) -> bytes:
    """/etc/edge-center/center.yaml as the README installs it: secrets as ${NAME}, the roster in the data dir
    (edited on the roster page). Nothing listens on port 1: the broker is away and the center keeps retrying."""
    cfg = {
        "version": 1,
        "instance": "office",
        "data_dir": "/var/lib/edge-center",
        "roster": "/var/lib/edge-center/roster.yaml",
        "mqtt": {"host": "127.0.0.1", "port": 1, "username": "center", "password": "${CENTER_MQTT_PASSWORD}"},
        "notify": {"webhooks": [{"url": "http://127.0.0.1:1/hook", "secret": "${WEBHOOK_SECRET}"}]},
        "api": {"host": "127.0.0.1", "port": api_port},
        **over,
    }
    return yaml.safe_dump(cfg, allow_unicode=True).encode()


def _etc(api_port: int, **over) -> dict[str, tuple[bytes, int]]:
    return {
        "center.yaml": (_center_yaml(api_port, **over), 0o640),
        "roster.yaml": (yaml.safe_dump(ROSTER, allow_unicode=True).encode(), 0o640),
        "secrets.env": (b"CENTER_MQTT_PASSWORD=pw-center\nWEBHOOK_SECRET=s3cret\n", 0o600),
    }


def _install_roster(sb: UnitSandbox) -> None:
    """The README's step: the roster into the data dir, the center's own."""
    sb.run("install", "-d", "-m", "0700", "-o", NAME, "-g", NAME, "/var/lib/edge-center")
    sb.run("install", "-m", "0600", "-o", NAME, "-g", NAME, "/etc/edge-center/roster.yaml", "/var/lib/edge-center")


def _wait_state(sb: UnitSandbox, *states: str, timeout: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        shown = sb.show("edge-center.service", "ActiveState", "SubState", "MainPID", "StatusText", "NRestarts")
        if shown["ActiveState"] in states or time.monotonic() > deadline:
            return shown
        time.sleep(0.3)


@no_sandbox
def test_the_center_runs_under_its_units_sandbox_and_stops_cleanly(tmp_path):
    port = free_port()
    unit = UNIT.read_text()
    with UnitSandbox(tmp_path, unit, _etc(port), REPO, name=NAME, entry="center.cli") as sb:
        _install_roster(sb)
        # --no-block: started only by the center's READY=1; without it the unit would stay "activating".
        sb.systemctl("start", "--no-block", "edge-center.service")
        running = _wait_state(sb, "active", "failed")
        log = lambda: (tmp_path / "edge-center.log").read_text(errors="replace")  # noqa: E731
        assert running["ActiveState"] == "active", log()
        assert running["StatusText"] == f"office: API on 127.0.0.1:{port}, broker 127.0.0.1:1"
        api = sb.run("/opt/edge-center/.venv/bin/python", "-c", _GET_ME.format(port=port), check=False)
        proc = dict(
            line.split(":\t", 1)
            for line in sb.path(f"/proc/{running['MainPID']}/status").read_text().splitlines()
            if ":\t" in line
        )
        data = sb.path("/var/lib/edge-center")
        modes = {str(p.relative_to(data)): p.stat().st_mode & 0o777 for p in [data, *data.rglob("*")]}
        sb.systemctl("stop", "edge-center.service")
        stopped = sb.show("edge-center.service", "Result", "ExecMainStatus", "NRestarts", "ActiveState")
        out = log()
    assert api.stdout.strip() == "401", api.stdout + api.stderr  # the API listens, and wants a token
    # the sandbox is in force on the center itself
    assert proc["Uid"].split()[0] != "0" and proc["CapEff"] == proc["CapBnd"] == "0000000000000000"
    assert proc["NoNewPrivs"] == "1" and proc["Seccomp"] == "2"
    # the secrets came from the root-only secrets.env (the center itself could not read it)
    assert "CENTER_MQTT_PASSWORD" not in out and "WEBHOOK_SECRET" not in out, out
    # its files: the schema migrated into the data dir, nothing there readable by another user
    assert modes["."] == 0o700 and modes["center.db"] == 0o600 and modes["roster.yaml"] == 0o600, modes
    assert not {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    clean = {"Result": "success", "ExecMainStatus": "0", "NRestarts": "0", "ActiveState": "inactive"}
    assert stopped == clean, out


_GET_ME = """
import urllib.error, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:{port}/api/me", timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


_SAVE_ROSTER = """
import re, sys, httpx
base, password, path = sys.argv[1:]
jar = {}
def go(method, url, **kw):
    # The cookies are Secure (for browsers behind the TLS proxy): sent by hand over this loopback http.
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    r = httpx.request(method, base + url, headers={"Cookie": cookie}, timeout=30, **kw)
    for c in r.headers.get_list("set-cookie"):
        k, _, v = c.split(";", 1)[0].partition("=")
        jar[k] = v
    return r
csrf = lambda html: re.search(r'name="csrf" value="([^"]+)"', html)[1]
r = go("GET", "/login")
r = go("POST", "/login", data={"name": "admin", "password": password, "csrf": csrf(r.text), "next": "/roster"})
r = go("GET", "/roster")
r = go("POST", "/roster", data={"text": open(path, encoding="utf-8").read(), "csrf": csrf(r.text)})
print(r.status_code)
"""


@no_sandbox
def test_an_admin_saves_the_roster_on_its_page_under_the_unit(tmp_path):
    # ProtectSystem=strict: the roster must be where the center may write (the README puts it in the data dir).
    port = free_port()
    etc = _etc(port)
    roster = {**ROSTER, "office": {**ROSTER["office"], "phone": "021-5555-0199"}}
    etc["roster-new.yaml"] = (yaml.safe_dump(roster, allow_unicode=True).encode(), 0o640)
    etc["admin.pw"] = (b"correct horse battery\n", 0o640)
    with UnitSandbox(tmp_path, UNIT.read_text(), etc, REPO, name=NAME, entry="center.cli") as sb:
        _install_roster(sb)
        sb.systemctl("start", "--no-block", "edge-center.service")
        assert _wait_state(sb, "active", "failed")["ActiveState"] == "active"
        # An admin with a password, added as the center's user (the sandbox has no D-Bus for the README's
        # systemd-run; its venv needs what the drop-in gives the unit: tests/support/unit_sandbox.py).
        added = sb.run(
            *("setpriv", f"--reuid={NAME}", f"--regid={NAME}", "--clear-groups", "env", "-i"),
            *("CENTER_MQTT_PASSWORD=x", "WEBHOOK_SECRET=x", f"PYTHONPATH={REPO}", "LD_LIBRARY_PATH=/opt/py/lib"),
            "/opt/edge-center/.venv/bin/edge-center",
            *("user", "add", "admin", "--role", "admin", "--password-file", "/etc/edge-center/admin.pw"),
            *("--config", "/etc/edge-center/center.yaml"),
            check=False,
        )
        saved = sb.run(
            "/opt/edge-center/.venv/bin/python",
            "-c",
            _SAVE_ROSTER,
            f"http://127.0.0.1:{port}",
            "correct horse battery",
            "/etc/edge-center/roster-new.yaml",
            check=False,
        )
        on_disk = sb.path("/var/lib/edge-center/roster.yaml").read_text(encoding="utf-8")
        sb.systemctl("stop", "edge-center.service")
    log = (tmp_path / "edge-center.log").read_text(errors="replace")
    assert added.returncode == 0, added.stdout + added.stderr
    assert saved.stdout.strip() == "200", saved.stdout + saved.stderr + log[-2000:]
    assert "021-5555-0199" in on_disk


@no_sandbox
def test_a_bad_config_is_not_restarted_and_a_database_away_is(tmp_path):
    port = free_port()
    etc = _etc(port)
    etc["secrets.env"] = (b"CENTER_MQTT_PASSWORD=pw-center\n", 0o600)  # WEBHOOK_SECRET forgotten
    with UnitSandbox(tmp_path, UNIT.read_text(), etc, REPO, name=NAME, entry="center.cli") as sb:
        _install_roster(sb)
        # The sandbox's drop-in says Restart=no; the unit's own restart policy back, sooner than 5 s.
        sb.path(f"/run/sbx/units/{NAME}.service.d/zz-restart.conf").write_text(
            "[Service]\nRestart=on-failure\nRestartSec=1\n"
        )
        sb.systemctl("daemon-reload")
        sb.systemctl("start", "--no-block", "edge-center.service")
        bad = _wait_state(sb, "failed")
        bad.update(sb.show("edge-center.service", "ExecMainStatus", "Result"))
        # Positive control: the config mended, the database away (exit 1) is retried.
        sb.path("/etc/edge-center/center.yaml").write_bytes(
            _center_yaml(port, notify={}, database={"url": "postgresql+psycopg://c:p@127.0.0.1:1/c"})
        )
        sb.systemctl("reset-failed", "edge-center.service")
        sb.systemctl("start", "--no-block", "edge-center.service")
        deadline = time.monotonic() + 90
        while int(sb.show("edge-center.service", "NRestarts")["NRestarts"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        away = sb.show("edge-center.service", "NRestarts")
        sb.systemctl("stop", "edge-center.service")
    log = (tmp_path / "edge-center.log").read_text(errors="replace")
    assert bad["ActiveState"] == "failed" and bad["ExecMainStatus"] == "78" and bad["NRestarts"] == "0", bad
    assert "WEBHOOK_SECRET" in log
    assert int(away["NRestarts"]) >= 2 and "the database cannot be used: " in log, (away, log[-3000:])
    assert "Traceback" not in log  # a clear line, not a stack: the operator reads the journal
