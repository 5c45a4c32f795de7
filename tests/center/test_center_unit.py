"""`edge-center run` under systemd's Type=notify: READY=1 once its schema is current and its API listens,
STOPPING=1 on SIGTERM, then exit 0."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from centerkit import center_cmd, center_env, write_center
from support.servers import free_port


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
