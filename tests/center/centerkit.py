"""Helpers of the center's tests: the test roster, a center.yaml written for a test, the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from support.broker import Broker
from support.servers import wait_for

from center.config import load_center_config
from center.roster import Roster
from center.yamlfile import load_model

REPO = Path(__file__).resolve().parents[2]
NODES = ("garden3-east", "garden3-west", "garden5")
USERS = {**{n: f"pw-{n}" for n in NODES}, "center": "pw-center", "center-2": "pw-center-2", "monitor": "pw-mon"}

ROSTER = {
    "version": 1,
    "office": {"name": "社区办公室", "phone": "021-5555-0100", "email": "office@example.org"},
    "grids": {
        "g1": {
            "workers": {
                "zhang": {
                    "name": "张伟",
                    "phone": "13800000001",
                    "wecom_user": "zhangwei",
                    "email": "zhang@example.org",
                }
            },
            "leader": {"name": "王强", "phone": "13800000009", "email": "leader@example.org"},
        },
        "g2": {
            "workers": {"chen": {"name": "陈静", "phone": "13800000003", "duty": ["00:00-24:00"]}},
            "leader": {"name": "赵敏", "phone": "13800000008"},
        },
    },
    "buildings": {
        "b3": {
            "name": "3号楼",
            "address": "幸福里3号楼",
            "floors": 26,
            "grid": "g1",
            "facades": {
                "east": [{"node": "garden3-east", "camera": "east"}],
                "west": [{"node": "garden3-west", "camera": "west"}, {"node": "garden3-east", "camera": "north"}],
            },
        },
        "b5": {
            "name": "5号楼",
            "floors": 18,
            "grid": "g2",
            "facades": {"south": [{"node": "garden5", "camera": "south"}]},
        },
    },
}


def write_center(tmp_path: Path, db_url: str | None = None, broker: Broker | None = None, **over) -> Path:
    """center.yaml and roster.yaml in tmp_path; returns the config's path."""
    roster = over.pop("roster", ROSTER)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "roster.yaml").write_text(yaml.safe_dump(roster, allow_unicode=True))
    cfg = {
        "version": 1,
        "instance": over.pop("instance", "center-1"),
        "data_dir": str(tmp_path / "data"),
        "roster": "roster.yaml",
        "timezone": "Asia/Shanghai",
        "api": {"enabled": False},
    }
    if db_url:
        cfg["database"] = {"url": db_url}
    if broker:
        user = over.pop("mqtt_user", "center")
        cfg["mqtt"] = {
            "host": "127.0.0.1",
            "port": broker.port,
            "username": user,
            "password": USERS[user],
            "tls": {"ca_file": str(broker.ca)},
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        }
    cfg.update(over)
    path = tmp_path / f"center-{cfg['instance']}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def load(path: Path):
    cfg = load_center_config(path)
    return cfg, load_model(cfg.roster, Roster)


def center_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "center", *args]


def center_env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


class CenterProcess:
    """`edge-center run` as a real process, its output in files beside the config."""

    def __init__(self, config: Path):
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.log = config.with_suffix(".log")

    def start(self, timeout: float = 30.0) -> CenterProcess:
        """Start, and return once its subscriptions are in place (what is published after is for it)."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            center_cmd("-v", "run", "--config", str(self.config)), stdout=out, stderr=out, env=center_env()
        )
        out.close()
        ready = "center.receiver: subscribed to"
        if not wait_for(lambda: ready in self.output() or self.proc.poll() is not None, timeout):
            raise RuntimeError(f"edge-center did not start: {self.output()[-2000:]}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"edge-center exited {self.proc.returncode}: {self.output()[-2000:]}")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None


def node_client(broker: Broker, node: str) -> mqtt.Client:
    """A connected paho client logged in as a node, as edge/publish/mqtt.py connects."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=node, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(broker.ca))
    client.username_pw_set(node, USERS[node])
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(center_cmd(*args), capture_output=True, text=True, env=center_env(), timeout=120)
