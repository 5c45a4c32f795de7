"""Reload (issue 16): SIGHUP to `edge run` applies new settings without reconnecting a camera, a camera added or
removed starts or stops alone, and a config that is not valid, or not appliable live, is refused and the
running one kept."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.servers import RtspServer, free_port, wait_for

from edge.capture.camera import CameraState
from edge.config import config_hash, load_config, parse_config
from edge.node import Node

from conftest import REPO, loop_clip, sim_facade


@pytest.fixture(scope="module")
def clip(sim_clip, tmp_path_factory):
    folder = sim_clip("throw", 1)
    return loop_clip(folder / "scene.mp4", 12, tmp_path_factory.mktemp("rtsp") / "loop.mp4"), sim_facade(folder)


@pytest.fixture
def server(clip):
    srv = RtspServer(clip[0]).start()
    yield srv
    srv.kill()


def _config(tmp_path: Path, cameras: dict, port: int | None = None) -> dict:
    return {
        "version": 1,
        "node": {"id": "reload", "metrics": {"listen": f"127.0.0.1:{port}" if port else None}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": {"enabled": False},
        "cameras": cameras,
    }


def _camera(url: str, facade: dict | None = None) -> dict:
    return {
        "source": url,
        "facade": facade,
        "capture": {"reconnect_max_s": 1.0},
        "record": {"pre_s": 2, "post_s": 1, "buffer_s": 10},
    }


def _metrics(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _manifest_hashes(store: Path) -> set[str]:
    return {
        json.loads(p.read_text())["manifest"]["config_sha256"]
        for p in store.glob("events/*/manifest.json")
        if p.stat().st_size
    }


CAM = (("camera", "cam"),)


def test_sighup_applies_a_new_threshold_without_a_reconnect_and_refuses_a_broken_config(tmp_path, server, clip):
    port = free_port()
    config = _config(tmp_path, {"cam": _camera(server.url, clip[1])}, port)
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    before = config_hash(load_config(path))
    log = (tmp_path / "edge.log").open("w")
    node = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(path)], cwd=REPO, stdout=log, stderr=log
    )
    try:
        assert wait_for(lambda: _up(port), 30), (tmp_path / "edge.log").read_text()

        changed = copy.deepcopy(config)
        changed["cameras"]["cam"]["fall"] = {"min_fall_floors": 1.5}  # a threshold
        changed["cameras"]["cam"]["masks"] = {"shield": [[[0.0, 0.9], [0.1, 0.9], [0.1, 1.0]]]}
        path.write_text(yaml.safe_dump(changed))
        after = config_hash(load_config(path))
        node.send_signal(signal.SIGHUP)
        assert wait_for(lambda: _metrics(port).get(("edge_config_reloads_total", (("result", "ok"),))) == 1, 20)
        # The new settings reached the camera's pipeline: evidence made after the reload records their hash.
        assert wait_for(lambda: after in _manifest_hashes(tmp_path / "store"), 60, 0.5), (
            tmp_path / "edge.log"
        ).read_text()
        m = _metrics(port)
        assert m[("edge_camera_reconnects_total", CAM)] == 0 and m[("edge_camera_up", CAM)] == 1
        assert before != after

        path.write_text(yaml.safe_dump(changed) + "bogus: 1\n")  # an unknown key: not a valid config
        node.send_signal(signal.SIGHUP)
        assert wait_for(lambda: _metrics(port).get(("edge_config_reloads_total", (("result", "refused"),))), 20)
        m = _metrics(port)
        assert m[("edge_camera_reconnects_total", CAM)] == 0 and m[("edge_camera_up", CAM)] == 1
        assert node.poll() is None
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(60)
        log.close()
    text = (tmp_path / "edge.log").read_text()
    assert node.returncode == 0, text
    assert "config reloaded: new settings for cam" in text
    assert f"config reload refused, the running config is kept: {path}:" in text and "bogus: unknown key" in text
    assert "offline" not in text  # the camera was never dropped


def _up(port: int) -> bool:
    try:
        m = _metrics(port)
    except OSError:
        return False
    return m.get(("edge_camera_up", CAM)) == 1 and m.get(("edge_camera_frames_total", CAM), 0) > 0


def test_a_camera_added_or_removed_starts_or_stops_alone(tmp_path, server, clip):
    # Each camera its own server: a second client of one mount makes the test server jump the first one's
    # timestamps, which reconnects it for reasons that have nothing to do with a reload.
    other = RtspServer(clip[0]).start()
    one = _config(tmp_path, {"a": _camera(server.url)})
    two = _config(tmp_path, {"a": _camera(server.url), "b": _camera(other.url)})
    node = Node(parse_config(yaml.safe_dump(one)))
    node.start()
    try:
        assert wait_for(lambda: node.status("a").state == CameraState.ONLINE, 20)
        a = node.cameras["a"]
        assert node.reload(parse_config(yaml.safe_dump(two)))
        assert wait_for(lambda: node.status("b").state == CameraState.ONLINE, 20)
        b = node.cameras["b"]
        assert node.cameras["a"] is a and a.capture.session == 1 and a.alive  # untouched
        assert node.reload(parse_config(yaml.safe_dump(_config(tmp_path, {"b": _camera(other.url)}))))
        assert list(node.cameras) == ["b"] and not a.alive and not a.capture.is_alive()
        assert node.cameras["b"] is b and b.capture.session == 1 and b.alive
        assert "a" not in json.loads((tmp_path / "store" / "status.json").read_text())
        assert node.reloads == {"ok": 2, "refused": 0}
    finally:
        node.stop()
        other.kill()


def test_a_reload_that_needs_a_restart_is_refused_and_the_running_config_kept(tmp_path):
    config = _config(tmp_path, {"a": _camera(f"rtsp://127.0.0.1:{free_port()}/x")})
    node = Node(parse_config(yaml.safe_dump(config)))
    running = node.config
    moved = copy.deepcopy(config)
    moved["storage"]["dir"] = str(tmp_path / "elsewhere")
    assert not node.reload(parse_config(yaml.safe_dump(moved)))
    assert node.config is running and node.reloads == {"ok": 0, "refused": 1}
    tuned = copy.deepcopy(config)  # the control: a storage setting that can change live
    tuned["storage"]["evidence_days"] = 60
    assert node.reload(parse_config(yaml.safe_dump(tuned)))
    assert node.retention.policy.evidence_s == 60 * 86400


def test_a_camera_started_again_by_a_reload_gives_its_events_ids_no_earlier_worker_had(tmp_path):
    # A new worker counts its falls and problems from 1 again: under an old prefix its first event would take an
    # earlier event's id, and overwrite its evidence folder.
    config = _config(tmp_path, {"a": _camera(f"rtsp://127.0.0.1:{free_port()}/x")})
    config["cameras"]["b"] = _camera(f"rtsp://127.0.0.1:{free_port()}/y")
    node = Node(parse_config(yaml.safe_dump(config)))
    node.start()
    try:
        a, b = node.cameras["a"], node.cameras["b"]
        seen = {b.pipeline.id_prefix}
        for _ in range(2):  # twice within about a second: each gets its own prefix all the same
            config["cameras"]["a"] = _camera(f"rtsp://127.0.0.1:{free_port()}/x")  # a new source: reconnected
            assert node.reload(parse_config(yaml.safe_dump(config)))
            assert node.cameras["a"] is not a and node.cameras["a"].pipeline.id_prefix not in seen
            a = node.cameras["a"]
            seen.add(a.pipeline.id_prefix)
        assert node.cameras["b"] is b and b.pipeline.id_prefix == node.run_id  # the control: untouched
    finally:
        node.stop()


def _new_events_after(store: Path, t: float) -> list[dict]:
    path = store / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["type"] == "new" and _utc(r["alert_utc"]) > t]


def _utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_reloaded_threshold_decides_the_falls_that_follow(tmp_path, server, clip):
    config = _config(tmp_path, {"cam": _camera(server.url, clip[1])})
    node = Node(parse_config(yaml.safe_dump(config)))
    store = tmp_path / "store"
    node.start()
    try:
        began = time.time()
        assert wait_for(lambda: _new_events_after(store, began), 30, 0.5)  # throws alert as configured
        strict = copy.deepcopy(config)
        strict["cameras"]["cam"]["fall"] = {"min_fall_floors": 50.0}  # taller than the simulated building
        assert node.reload(parse_config(yaml.safe_dump(strict)))
        reloaded, frames = time.time(), node.cameras["cam"].frames
        # 20 s of the stream through detection (the clip throws twice every 8 s: five throws), however long a
        # loaded machine takes to get through them.
        assert wait_for(lambda: node.cameras["cam"].frames > frames + 500, 120, 0.5)
        assert node.cameras["cam"].capture.session == 1
        assert _new_events_after(store, reloaded + 1.0) == []  # (a fall decided in the reload's instant aside)
        assert node.reload(parse_config(yaml.safe_dump(config)))  # the control: back, and they alert again
        restored = time.time()
        assert wait_for(lambda: _new_events_after(store, restored), 30, 0.5)
    finally:
        node.stop()


@contextmanager
def _broker(tmp_path):
    """A broker with the node `reload` and an observer `monitor`, and the node's mqtt: settings for it."""
    from support.broker import Broker

    broker = Broker(tmp_path / "broker", {"reload": "pw-r", "monitor": "pw-m"}).start()
    try:
        login = {"username": "reload", "password": "pw-r", "tls": {"ca_file": str(broker.ca)}}
        yield broker, {"host": "127.0.0.1", "port": broker.port, **login}
    finally:
        broker.stop()


def test_new_mqtt_settings_apply_without_dropping_the_camera(tmp_path, server, clip):
    from test_ops_retention import _client

    with _broker(tmp_path) as (broker, mqtt_cfg):
        config = {**_config(tmp_path, {"cam": _camera(server.url, clip[1])}), "mqtt": mqtt_cfg}
        _, seen = _client(broker, "monitor", "pw-m", "edge/reload/events")
        node = Node(parse_config(yaml.safe_dump(config)))
        node.start()
        try:
            assert wait_for(lambda: _alerts(seen), 30, 0.5)
            first = node.publisher
            changed = copy.deepcopy(config)
            changed["mqtt"]["keepalive_s"] = 20
            changed["mqtt"]["drain_rate_per_s"] = 100.0
            assert node.reload(parse_config(yaml.safe_dump(changed)))
            assert node.publisher is not first and node.publisher.cfg.keepalive_s == 20
            assert node.publisher.outbox is first.outbox  # the same open file: a reload leaks no connection
            assert node.publisher.connected.wait(10)
            after = len(seen)
            assert wait_for(lambda: _alerts(seen[after:]), 30, 0.5)  # alerts flow through the new connection
            assert node.cameras["cam"].capture.session == 1 and node.cameras["cam"].capture.reconnects == 0
        finally:
            node.stop()


def test_a_camera_removed_with_new_mqtt_settings_has_its_retained_status_emptied(tmp_path, server, clip):
    from test_ops_retention import _client

    with _broker(tmp_path) as (broker, mqtt_cfg):
        cameras = {"cam": _camera(server.url, clip[1]), "gone": _camera(f"rtsp://127.0.0.1:{free_port()}/x")}
        config = {**_config(tmp_path, cameras), "mqtt": mqtt_cfg}
        node = Node(parse_config(yaml.safe_dump(config)))
        node.start()
        try:
            statuses = "edge/reload/+/status"
            before, seen = _client(broker, "monitor", "pw-m", statuses)
            assert wait_for(lambda: {t for t, p in seen if p} >= {"edge/reload/gone/status"}, 30, 0.5)
            changed = copy.deepcopy(config)
            del changed["cameras"]["gone"]
            changed["mqtt"]["keepalive_s"] = 20  # a new publisher too
            assert node.reload(parse_config(yaml.safe_dump(changed)))
            assert wait_for(lambda: ("edge/reload/gone/status", b"") in seen, 20, 0.2)  # emptied, live
            before.disconnect()
            after, retained = _client(broker, "monitor", "pw-m", statuses)
            assert wait_for(lambda: "edge/reload/cam/status" in {t for t, _ in retained}, 10)  # control
            time.sleep(1.0)  # retained messages come together on subscribing
            after.disconnect()
            assert [p for t, p in retained if t == "edge/reload/gone/status" and p] == []
        finally:
            node.stop()


def test_new_mqtt_settings_on_a_node_without_mqtt_reload_and_the_cameras_go_on(tmp_path):
    cameras = {
        "a": _camera(f"rtsp://127.0.0.1:{free_port()}/x"),
        "b": _camera(f"rtsp://127.0.0.1:{free_port()}/y"),
    }
    config = {**_config(tmp_path, cameras), "mqtt": {"enabled": False}}
    node = Node(parse_config(yaml.safe_dump(config)))
    node.start()
    try:
        changed = copy.deepcopy(config)
        changed["mqtt"]["keepalive_s"] = 20  # an MQTT setting changed, MQTT still off
        del changed["cameras"]["b"]
        assert node.reload(parse_config(yaml.safe_dump(changed)))
        assert node.publisher is None and list(node.cameras) == ["a"]
    finally:
        node.stop()


def _alerts(seen: list) -> list[dict]:
    return [m for m in (json.loads(p) for _, p in seen) if m["type"] == "new"]


def test_a_config_that_fails_to_apply_is_refused_and_the_running_node_kept(tmp_path, caplog):
    # Valid on paper, but the new MQTT client cannot be made: its CA file is not a certificate.
    config = _config(tmp_path, {"a": _camera(f"rtsp://127.0.0.1:{free_port()}/x")})
    config["mqtt"] = {"host": "127.0.0.1", "port": free_port()}  # nothing listens: messages wait in the outbox
    node = Node(parse_config(yaml.safe_dump(config)))
    node.start()
    try:
        running, publisher, worker = node.config, node.publisher, node.cameras["a"]
        (tmp_path / "not-a-ca.pem").write_text("not a certificate\n")
        broken = copy.deepcopy(config)
        broken["mqtt"]["tls"] = {"ca_file": str(tmp_path / "not-a-ca.pem")}
        broken["cameras"]["b"] = _camera(f"rtsp://127.0.0.1:{free_port()}/y")
        assert not node.reload(parse_config(yaml.safe_dump(broken)))
        assert node.config is running and node.publisher is publisher and list(node.cameras) == ["a"]
        assert node.cameras["a"] is worker and worker.alive and node.reloads == {"ok": 0, "refused": 1}
        refused = [r.getMessage() for r in caplog.records if "config reload refused" in r.getMessage()]
        assert refused and "mqtt: cannot be applied" in refused[-1], refused
        tuned = copy.deepcopy(config)  # the control: a new MQTT setting that can be applied is
        tuned["mqtt"]["keepalive_s"] = 20
        assert node.reload(parse_config(yaml.safe_dump(tuned)))
        assert node.publisher is not publisher and node.publisher.cfg.keepalive_s == 20
    finally:
        node.stop()


def test_a_reload_after_edge_calibrate_checks_moved_against_the_new_reference_still(tmp_path):
    """The README's fix for a camera that moved and must stay: `edge calibrate` again (a new reference still
    beside the config), then `systemctl reload edge`. The moved check must compare with the new still, not
    keep raising `moved` against the old one until a restart."""
    import cv2
    import numpy as np

    from edge.calibrate.still import reference_paths

    path = tmp_path / "site.yaml"
    config = _config(tmp_path, {"a": _camera(f"rtsp://127.0.0.1:{free_port()}/x")})
    path.write_text(yaml.safe_dump(config))
    jpg = reference_paths(path, "a")[0]
    rng = np.random.default_rng(7)
    before, after = (rng.integers(0, 256, (90, 160), np.uint8) for _ in range(2))
    cv2.imwrite(str(jpg), before, [cv2.IMWRITE_JPEG_QUALITY, 100])
    node = Node(load_config(path), config_path=path)
    node.start()
    try:
        checks = node.cameras["a"].pipeline
        assert checks.problems is not None and checks.problems.reference is not None
        first = checks.problems.reference.copy()
        assert node.reload()  # the control: nothing changed, the same still stays
        time.sleep(0.5)
        assert np.array_equal(checks.problems.reference, first)
        cv2.imwrite(str(jpg), after, [cv2.IMWRITE_JPEG_QUALITY, 100])  # the page saved the same calibration
        assert node.reload()
        seen = wait_for(lambda: not np.array_equal(checks.problems.reference, first), 5.0)
        assert seen, "the moved check still compares with the reference still the node started with"
        want = cv2.imread(str(jpg), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(checks.problems.reference, want)
    finally:
        node.stop()
