"""GET /metrics (Prometheus text, read back by prometheus_client's own parser) and GET /healthz of a running
node watching a real RTSP camera (issue 16: health and metrics)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.broker import Broker
from support.servers import RtspServer, free_port, wait_for

from edge import health
from edge.capture.camera import CameraState
from edge.config import ConfigError, parse_config
from edge.node import Node

from conftest import REPO, loop_clip


@pytest.fixture(scope="module")
def looped(sim_clip, tmp_path_factory):
    """A throw clip four times over (32 s), made once for the module."""
    return loop_clip(sim_clip("throw", 1) / "scene.mp4", 4, tmp_path_factory.mktemp("rtsp") / "loop.mp4")


@pytest.fixture
def camera(looped):
    """A real RTSP camera of its own for each test: the server plays its shared stream once, from the first
    client on, so one camera for the module ended mid-module when its tests ran slowly (other work beside)."""
    srv = RtspServer(looped).start()
    yield srv
    srv.kill()


def _node(tmp_path, cameras: dict[str, str], port: int, mqtt: dict | None = None) -> Node:
    config = {
        "version": 1,
        "node": {"id": "ops", "metrics": {"listen": f"127.0.0.1:{port}", "outbox_stall_s": 5}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": mqtt or {"enabled": False},
        "cameras": {name: {"source": url, "capture": {"reconnect_max_s": 1.0}} for name, url in cameras.items()},
    }
    return Node(parse_config(yaml.safe_dump(config)))


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as parsed by prometheus_client: (name, sorted labels) -> value."""
    status, body = _get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def test_metrics_carry_real_per_camera_and_node_values(camera, tmp_path):
    port = free_port()
    # MQTT to a port where nothing listens: every message waits in the outbox, which shows in the metrics.
    node = _node(tmp_path, {"cam": camera.url}, port, mqtt={"host": "127.0.0.1", "port": free_port()})
    node.start()
    try:
        cam = (("camera", "cam"),)
        assert wait_for(lambda: node.cameras["cam"].frames > 50, 30)
        m = _samples(port)
        assert m[("edge_camera_up", cam)] == 1
        assert 15 < m[("edge_camera_fps", cam)] < 35  # the stream's 25 fps
        assert m[("edge_camera_frames_total", cam)] > 50
        assert m[("edge_camera_decoded_frames_total", cam)] > 50
        assert m[("edge_camera_decode_seconds_total", cam)] > 0
        assert m[("edge_camera_detect_seconds_total", cam)] > 0
        assert m[("edge_camera_reconnects_total", cam)] == 0 and m[("edge_camera_dropped_frames_total", cam)] >= 0
        assert m[("edge_outbox_messages", ())] > 0 and m[("edge_mqtt_connected", ())] == 0
        assert m[("edge_storage_used_bytes", ())] > 0 and m[("edge_disk_free_bytes", ())] > 0
        assert m[("edge_storage_level", (("level", "ok"),))] == 1
        assert m[("process_resident_memory_bytes", ())] > 50e6  # numpy, OpenCV, FFmpeg and frames are resident
        assert m[("process_cpu_seconds_total", ())] > 0
        # A throw in the clip: counted by its level, its evidence timed (stage original, then complete).
        assert wait_for(lambda: any(k[0] == "edge_events_total" for k in _samples(port)), 40, 0.5)
        m = wait_for(lambda: _evidence_count(s := _samples(port)) and s, 40, 0.5)
        assert m, "no evidence write time"
        levels = {dict(k[1])["level"] for k, v in m.items() if k[0] == "edge_events_total" and v > 0}
        assert levels <= {"suspected", "confirmed"} and levels
        # The shipped dashboard and alert rules ask only for series this node exposes.
        status, body = _get(port, "/metrics")
        families = list(text_string_to_metric_families(body.decode()))
        exposed = {f.name + ("_total" if f.type == "counter" else "") for f in families}  # also with no sample
        exposed |= {s.name for f in families for s in f.samples}
        for doc in (GRAFANA, ALERTS):
            asked = set(re.findall(r"\b(?:edge|process)_[a-z_]+", doc.read_text()))
            assert asked and asked <= exposed, (doc.name, asked - exposed)
    finally:
        node.stop()


GRAFANA = REPO / "docs" / "grafana" / "edge-node.json"
ALERTS = REPO / "docs" / "ops" / "prometheus-alerts.yml"


def test_the_example_alert_rules_are_valid_and_fire_on_the_series_made_for_them():
    for args in (["check", "rules", ALERTS.name], ["test", "rules", "prometheus-alerts.test.yml"]):
        proc = subprocess.run(["promtool", *args], cwd=ALERTS.parent, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["panels"] and all(t["expr"] for p in dashboard["panels"] for t in p["targets"])


def _evidence_count(samples: dict) -> float:
    return sum(v for k, v in samples.items() if k[0] == "edge_evidence_write_seconds_count")


def test_healthz_is_200_only_when_every_camera_is_online(camera, looped, tmp_path):
    good_port, bad_port = free_port(), free_port()
    good = _node(tmp_path / "good", {"cam": camera.url}, good_port)
    # A camera of its own (the test server's shared stream, set up by two clients at once, has refused one and
    # ended for both; joined later, it sets the first client's times back), and one where no camera answers.
    other = RtspServer(looped).start()
    bad = _node(tmp_path / "bad", {"cam": other.url, "gone": f"rtsp://127.0.0.1:{free_port()}/x"}, bad_port)
    good.start()
    bad.start()
    try:
        assert wait_for(lambda: good.status("cam").state == CameraState.ONLINE, 20)
        assert wait_for(lambda: bad.status("cam").state == CameraState.ONLINE, 20)
        assert wait_for(lambda: bad.status("gone").state == CameraState.OFFLINE, 20)
        status, body = _get(good_port, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True
        status, body = _get(bad_port, "/healthz")
        health = json.loads(body)
        assert status == 503 and health["cameras"] == {"cam": "online", "gone": "offline"}
        assert any(p.startswith("camera gone is offline") for p in health["problems"]), health
        assert _get(bad_port, "/nothing")[0] == 404
    finally:
        good.stop()
        bad.stop()
        other.kill()


def test_healthz_is_503_once_the_outbox_stops_draining(camera, tmp_path):
    broker = Broker(tmp_path / "broker", {"ops": "pw-ops"}).start()
    port = free_port()
    mqtt = {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": "ops",
        "password": "pw-ops",
        "tls": {"ca_file": str(broker.ca)},
        "reconnect_max_s": 1.0,
    }
    node = _node(tmp_path, {"cam": camera.url}, port, mqtt=mqtt)
    node.start()
    try:
        assert wait_for(lambda: node.status("cam").state == CameraState.ONLINE, 20)
        assert wait_for(lambda: _get(port, "/healthz")[0] == 200, 20), _get(port, "/healthz")  # the control
        broker.stop()
        # Messages wait with the broker gone for longer than node.metrics.outbox_stall_s (5 s).
        found = wait_for(lambda: (r := _get(port, "/healthz"))[0] == 503 and r, 30, 0.5)
        assert found, _get(port, "/healthz")
        health = json.loads(found[1])
        assert health["cameras"] == {"cam": "online"} and health["outbox"]["connected"] is False
        assert any("outbox not draining" in p and "not connected" in p for p in health["problems"]), health
    finally:
        node.stop()
        broker.stop()


def test_the_metrics_address_is_checked_with_the_config_and_null_turns_it_off(tmp_path):
    def cfg(metrics: dict | None) -> str:
        node = {"id": "ops", **({"metrics": metrics} if metrics is not None else {})}
        return yaml.safe_dump({"version": 1, "node": node, "cameras": {"cam": {"source": "rtsp://x/y"}}})

    assert parse_config(cfg(None)).node.metrics.listen == "127.0.0.1:9108"
    assert parse_config(cfg({"listen": None})).node.metrics.listen is None
    assert parse_config(cfg({"listen": "[::1]:9200"})).node.metrics.listen == "[::1]:9200"
    text = "version: 1\nnode:\n  id: ops\n  metrics: {listen: '9108'}\ncameras: {cam: {source: rtsp://x/y}}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "edge.yaml")
    assert str(err.value).startswith("edge.yaml:4: node.metrics.listen: expected host:port"), str(err.value)


def test_the_readme_lists_every_storage_and_node_setting():
    from edge.config import MetricsConfig, NodeConfig, StorageConfig

    readme = (REPO / "README.md").read_text()
    keys = [f"storage.{k}" for k in StorageConfig.model_fields]
    keys += [f"node.{k}" for k in NodeConfig.model_fields if k not in ("id", "metrics")]
    keys += [f"node.metrics.{k}" for k in MetricsConfig.model_fields]
    assert [k for k in keys if f"| `{k}` |" not in readme] == []


def test_a_client_that_connects_and_says_nothing_is_let_go_quietly_and_scrapes_go_on(tmp_path, monkeypatch, capfd):
    """A port scanner, or a scrape whose peer vanished on a flaky link, holds a connection open and sends nothing:
    the server lets it go after a timeout (a thread and a descriptor each, else, for the node's lifetime), without
    a traceback on stderr, and answers real scrapes meanwhile."""
    monkeypatch.setattr(health, "REQUEST_TIMEOUT_S", 0.5)  # the real one is seconds; same code path
    node = _node(tmp_path, {"cam": f"rtsp://127.0.0.1:{free_port()}/none"}, free_port())
    server = health.MetricsServer(node, f"127.0.0.1:{free_port()}")
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        status, body = _get(server.port, "/healthz")  # the control: a scrape beside them is answered
        assert status == 503 and b"camera cam is starting" in body
        for sock in silent:
            sock.settimeout(30)  # only so that a server that never lets go fails the test instead of hanging it
            assert sock.recv(1) == b""  # closed by the server
        assert _get(server.port, "/metrics")[0] == 200
    finally:
        for sock in silent:
            sock.close()
        server.stop()
    assert "Traceback" not in capfd.readouterr().err
