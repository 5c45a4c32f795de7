"""The config file is a user-facing contract: strict keys, clear errors with file, line and key path."""

from __future__ import annotations

import json
import os

import pytest

from edge.config import ConfigError, parse_config

from conftest import REPO, run_edge

GOOD = """
version: 1
node: {id: garden3-east}
storage: {dir: /tmp/edge}
mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge}
defaults:
  record: {pre_s: 5, post_s: 2}
cameras:
  east:
    source: rtsp://user:${CAM_PW}@192.0.2.10/stream1
    record: {post_s: 3}
    facade:
      floor_height_m: 3.0
      ground_floor: 1
      points:
        - {image: [233.7, 899.0], facade: [7.2, 18.0]}
        - {image: [1686.3, 899.0], facade: [28.8, 18.0]}
        - {image: [1500.1, 80.6], facade: [36.0, 54.0]}
        - {image: [419.9, 80.6], facade: [0.0, 54.0]}
    masks:
      shield: [[[0, 0.8], [0.2, 0.8], [0.2, 1.0]]]
"""


def _error(text: str, monkeypatch=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.yaml")
    return info.value


def test_good_config_validates_with_defaults_merged(monkeypatch):
    monkeypatch.setenv("CAM_PW", "s3cret")
    cfg = parse_config(GOOD)
    cam = cfg.cameras["east"]
    assert cam.source == "rtsp://user:s3cret@192.0.2.10/stream1"
    assert (cam.record.pre_s, cam.record.post_s) == (5, 3)
    assert cam.masks.shield[0].points[2] == (0.2, 1.0)


def test_unset_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("CAM_PW", raising=False)
    err = _error(GOOD)
    assert err.path == "cameras.east.source" and "CAM_PW" in err.why and err.line == 10


def test_unknown_key_is_rejected_with_its_path_and_line(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    err = _error(GOOD.replace("    record: {post_s: 3}", "    recrod: {post_s: 3}"))
    assert err.path == "cameras.east.recrod" and "unknown key" in err.why and err.line == 11


def test_missing_camera_source_is_rejected(monkeypatch):
    err = _error(GOOD.replace("    source: rtsp://user:${CAM_PW}@192.0.2.10/stream1\n", ""))
    assert err.path == "cameras.east.source" and "missing" in err.why


def test_three_facade_points_are_rejected(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    err = _error(GOOD.replace("        - {image: [419.9, 80.6], facade: [0.0, 54.0]}\n", ""))
    assert err.path == "cameras.east.facade.points" and "at least 4 points" in err.why


def test_collinear_facade_points_are_rejected(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    text = GOOD.replace("[1500.1, 80.6], facade: [36.0, 54.0]", "[1000.0, 899.0], facade: [20.0, 18.0]")
    text = text.replace("[419.9, 80.6], facade: [0.0, 54.0]", "[1200.0, 899.0], facade: [24.0, 18.0]")
    assert "not on one line" in _error(text).why


def test_bad_value_from_defaults_points_at_the_defaults_line(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    err = _error(GOOD.replace("record: {pre_s: 5, post_s: 2}", "record: {pre_s: -1, post_s: 2}"))
    assert err.path == "cameras.east.record.pre_s" and err.line == 7 and err.value == -1


@pytest.mark.parametrize(
    ("text", "expect"),
    [("", "empty"), ("version: 1\nnode: {id: [\n", "not valid YAML"), ("- a\n- b\n", "mapping")],
)
def test_unusable_files_are_explained(text, expect):
    assert expect in _error(text).why


def _write(tmp_path, text: str):
    p = tmp_path / "site.yaml"
    p.write_text(text)
    return str(p)


def test_check_config_exits_zero_on_a_good_file(tmp_path):
    proc = run_edge("check-config", _write(tmp_path, GOOD), env={**os.environ, "CAM_PW": "x"})
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (("    record: {post_s: 3}", "    recrod: {post_s: 3}"), "cameras.east.recrod"),
        (("    source: rtsp://user:${CAM_PW}@192.0.2.10/stream1\n", ""), "cameras.east.source"),
        (("        - {image: [419.9, 80.6], facade: [0.0, 54.0]}\n", ""), "cameras.east.facade.points"),
    ],
)
def test_check_config_exits_78_naming_the_key_path(tmp_path, edit, path):
    proc = run_edge("check-config", _write(tmp_path, GOOD.replace(*edit)), env={**os.environ, "CAM_PW": "x"})
    assert proc.returncode == 78
    assert path in proc.stderr and "site.yaml:" in proc.stderr and "Traceback" not in proc.stderr


def test_check_config_on_an_empty_file_exits_78(tmp_path):
    proc = run_edge("check-config", _write(tmp_path, ""))
    assert proc.returncode == 78 and "empty" in proc.stderr and "Traceback" not in proc.stderr


def test_shipped_configs_are_valid():
    env = {**os.environ, "CAM_EAST_PW": "a", "CAM_SOUTH_PW": "b", "CAM_NORTH_PW": "c"}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("mosquitto"):
            continue
        proc = run_edge("check-config", str(path), env=env)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"


def test_config_schema_is_json_schema_with_descriptions():
    proc = run_edge("config-schema")
    schema = json.loads(proc.stdout)
    motion = schema["$defs"]["MotionConfig"]["properties"]
    assert proc.returncode == 0 and "cameras" in schema["properties"]
    assert all("description" in field for field in motion.values())


def test_the_mqtt_password_comes_from_a_file_and_is_never_shown(tmp_path):
    secret = tmp_path / "mqtt"
    secret.write_text("s3cret-pw\n")
    cfg = parse_config(
        GOOD.replace(
            "mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge}",
            f"mqtt: {{username: n1, password_file: {secret}}}",
        ).replace("${CAM_PW}", "x")
    )
    assert cfg.mqtt.secret() == "s3cret-pw"
    text = "version: 1\nnode: {id: n}\nmqtt: {username: n, password: hunter2}\ncameras:\n  c: {source: a.mp4}\n"
    cfg = parse_config(text)
    assert cfg.mqtt.secret() == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.model_dump_json()


def test_a_password_and_a_password_file_together_are_refused(tmp_path):
    text = "version: 1\nnode: {id: n}\nmqtt: {password: a, password_file: /x}\ncameras:\n  c: {source: a.mp4}\n"
    assert "not both" in _error(text).why
