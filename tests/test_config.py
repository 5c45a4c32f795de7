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


def test_check_config_warns_when_the_broker_user_is_not_the_node_id(tmp_path):
    env = {**os.environ, "CAM_PW": "x"}
    mqtt = "mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge}"
    other = GOOD.replace(mqtt, "mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge, username: garden3}")
    proc = run_edge("check-config", _write(tmp_path, other), env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr  # another broker may map users otherwise
    assert "warning: mqtt.username 'garden3' is not node.id 'garden3-east'" in proc.stderr
    assert "acknowledged and dropped" in proc.stderr
    same = GOOD.replace(mqtt, "mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge, username: garden3-east}")
    proc = run_edge("check-config", _write(tmp_path, same), env=env)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_check_config_warns_of_a_named_reference_still_that_is_not_there(tmp_path):
    env = {**os.environ, "CAM_PW": "x"}
    named = GOOD.replace(
        "    record: {post_s: 3}\n", f"    record: {{post_s: 3}}\n    health: {{reference: {tmp_path}/east.jpg}}\n"
    )
    proc = run_edge("check-config", _write(tmp_path, named), env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr  # the node runs without it: not refused
    assert f"warning: cameras.east.health.reference {tmp_path}/east.jpg: there is no such file" in proc.stderr
    (tmp_path / "east.jpg").write_bytes(b"\xff\xd8\xff")  # the control: the still is there
    proc = run_edge("check-config", _write(tmp_path, named), env=env)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_check_config_warns_of_facade_points_outside_the_image_size_they_were_measured_on(tmp_path):
    env = {**os.environ, "CAM_PW": "x"}
    points = "      ground_floor: 1\n"
    typo = GOOD.replace(points, points + "      image_size: [1280, 720]\n")  # measured on a 1920x1080 still
    proc = run_edge("check-config", _write(tmp_path, typo), env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr  # a survey's points may lie outside the view
    assert "warning: cameras.east.facade: points [0, 1, 2] lie outside image_size [1280, 720]" in proc.stderr
    right = GOOD.replace(points, points + "      image_size: [1920, 1080]\n")  # the control
    proc = run_edge("check-config", _write(tmp_path, right), env=env)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


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
    (tmp_path / "pw").write_text("b\n")
    text = f"version: 1\nnode: {{id: n}}\nmqtt: {{password: a, password_file: {tmp_path / 'pw'}}}\n"
    text += "cameras:\n  c: {source: a.mp4}\n"
    assert "not both" in _error(text).why


# Issue 11 item 6: hostile or careless input is refused with exit 78 and `file:line: key.path: why`, quickly.

_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "version: 1\nnode: {id: n}\ncameras: {c: {source: a.mp4}}\n"
)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("version: 1\nnode: &n {id: n, x: *n}\ncameras: {c: {source: a.mp4}}\n", 2, "anchors and aliases"),
        (_BOMB, 1, "anchors and aliases"),
        ("version: 1\nnode: {id: n}\nx: " + "[" * 20000 + "]" * 20000 + "\n", 3, "nested deeper than"),
        ("version: 1\nnode: {id: n, status_interval_s: " + "9" * 5000 + "}\n", 2, "node.status_interval_s: "),
        ("version: 1\nnode: {id: n}\nnode: {id: m}\ncameras: {c: {source: a.mp4}}\n", 3, "duplicate key 'node'"),
        (
            "version: 1\nnode: {id: n}\ncameras:\n  c: {source: a.mp4, fps: 5, fps: 6}\n",
            4,
            "cameras.c.fps: duplicate",
        ),
        ("version: 1\nnode: {id: n}\ncameras: {c: {source: a.mp4}}\n" + "#" * 300_000 + "\n", None, "too large"),
        ("version: 1\nnode: {id: n}\ncameras: {c: {source: a.mp4}}\nwhen: 2024-13-45\n", 4, "when"),
    ],
    ids=["recursive-alias", "bomb", "deep", "long-int", "dup-top", "dup-nested", "too-large", "bad-date"],
)
def test_hostile_yaml_exits_78_quickly_with_file_line_and_path(tmp_path, text, line, words):
    proc = run_edge("check-config", _write(tmp_path, text), timeout=20)
    assert proc.returncode == 78, (proc.returncode, proc.stderr[-500:])
    assert "Traceback" not in proc.stderr and words in proc.stderr, proc.stderr[-500:]
    assert f"site.yaml:{line}: " in proc.stderr if line else "site.yaml: " in proc.stderr


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (
            ("      ground_floor: 1\n", "      ground_floor: 1\n      extent_m: [.nan, .inf]\n"),
            "facade.extent_m[0]",
        ),
        (("[233.7, 899.0], facade: [7.2", "[.inf, 899.0], facade: [7.2"), "facade.points[0].image[0]"),
        (("floor_height_m: 3.0", "floor_height_m: .nan"), "facade.floor_height_m"),
    ],
)
def test_non_finite_numbers_are_refused(monkeypatch, edit, path):
    monkeypatch.setenv("CAM_PW", "x")
    err = _error(GOOD.replace(*edit))
    assert err.path == f"cameras.east.{path}" and "finite" in err.why, str(err)


def test_a_non_finite_number_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    monkeypatch.setenv("EXTENT_FROM", "nan")
    err = _error(
        GOOD.replace("      ground_floor: 1\n", "      ground_floor: 1\n      extent_m: ['${EXTENT_FROM}', 9]\n")
    )
    assert err.path == "cameras.east.facade.extent_m[0]" and "finite" in err.why, str(err)


def test_a_duplicate_key_names_both_lines(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    err = _error(GOOD.replace("    record: {post_s: 3}\n", "    record: {post_s: 3}\n    record: {post_s: 4}\n"))
    assert (err.line, err.path) == (12, "cameras.east.record") and "first at line 11" in err.why, str(err)


@pytest.mark.parametrize(
    ("mqtt", "path"),
    [
        ("mqtt: {tls: {ca_file: MISSING/ca.pem}}", "mqtt.tls.ca_file"),
        ("mqtt: {tls: {ca_file: CA, cert_file: MISSING/c.pem, key_file: CA}}", "mqtt.tls.cert_file"),
        ("mqtt: {tls: {ca_file: CA, cert_file: CA, key_file: MISSING/k.pem}}", "mqtt.tls.key_file"),
        ("mqtt: {username: n, password_file: MISSING/pw}", "mqtt.password_file"),
        ("mqtt: {tls: {ca_file: DIR}}", "mqtt.tls.ca_file"),
    ],
)
def test_files_the_config_names_must_exist_at_check_config(tmp_path, mqtt, path):
    (tmp_path / "ca.pem").write_text("not checked as a certificate here\n")
    mqtt = mqtt.replace("MISSING", str(tmp_path / "nope")).replace("CA", str(tmp_path / "ca.pem"))
    mqtt = mqtt.replace("DIR", str(tmp_path))
    text = f"version: 1\nnode: {{id: n}}\n{mqtt}\ncameras: {{c: {{source: a.mp4}}}}\n"
    proc = run_edge("check-config", _write(tmp_path, text))
    assert proc.returncode == 78 and f"site.yaml:3: {path}: " in proc.stderr, proc.stderr
    assert (
        str(tmp_path / "nope") in proc.stderr or str(tmp_path) in proc.stderr
    ) and "Traceback" not in proc.stderr


def test_a_storage_dir_that_cannot_be_a_directory_is_refused_at_check_config(tmp_path):
    (tmp_path / "afile").write_text("x")
    for where in (tmp_path / "afile", tmp_path / "afile" / "store"):
        text = f"version: 1\nnode: {{id: n}}\nstorage: {{dir: {where}}}\ncameras: {{c: {{source: a.mp4}}}}\n"
        proc = run_edge("check-config", _write(tmp_path, text))
        assert proc.returncode == 78 and "site.yaml:3: storage.dir: " in proc.stderr, proc.stderr
        assert str(tmp_path / "afile") in proc.stderr and "not a directory" in proc.stderr


def test_run_with_an_unwritable_storage_dir_exits_73_naming_it(tmp_path):
    where = "/sys/edge-storage-test"  # sysfs refuses mkdir, also to root
    if os.path.exists(where):
        pytest.skip("needs a place nobody may create a directory in")
    text = f"version: 1\nnode: {{id: n}}\nstorage: {{dir: {where}}}\nmqtt: {{enabled: false}}\n"
    text += "cameras: {c: {source: a.mp4}}\n"
    proc = run_edge("run", "--config", _write(tmp_path, text), timeout=60)
    assert proc.returncode == 73, (proc.returncode, proc.stderr)
    assert f"storage.dir {where}: " in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("added", "words"),
    [
        # The facade measured from its right-hand end: [from, to] written the wrong way round put every
        # origin outside [36, 0], so every fall was ignored; the check said OK.
        ("      ground_floor: 1\n      extent_m: [36.0, 0.0]\n", "extent_m"),
        ("      ground_floor: 1\n      extent_m: [5.0, 5.0]\n", "extent_m"),
        # Heights measured from floor 12 (a podium), the roof typed as 11: a roof at 0 m ignored every fall.
        ("      ground_floor: 12\n      top_floor: 11\n", "top_floor"),
    ],
)
def test_facade_bounds_that_would_ignore_every_fall_are_refused(tmp_path, added, words):
    text = GOOD.replace("      ground_floor: 1\n", added)
    proc = run_edge("check-config", _write(tmp_path, text), env={**os.environ, "CAM_PW": "x"})
    assert proc.returncode == 78, proc.stdout
    assert "site.yaml:" in proc.stderr and "cameras.east.facade" in proc.stderr and words in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("section", ["capture", "mqtt"])
def test_a_reconnect_backoff_whose_first_wait_exceeds_its_longest_is_refused(monkeypatch, section):
    monkeypatch.setenv("CAM_PW", "x")
    where = (
        "    record: {post_s: 3}\n"
        if section == "capture"
        else "mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge}"
    )
    swapped = {"capture": "    record: {post_s: 3}\n    capture: {reconnect_min_s: 50, reconnect_max_s: 1}\n",
               "mqtt": "mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: edge, reconnect_min_s: 50, "
                       "reconnect_max_s: 1}"}[section]  # fmt: skip
    error = _error(GOOD.replace(where, swapped))
    assert "reconnect_min_s (50.0) exceeds reconnect_max_s (1.0)" in str(error)
    ordered = swapped.replace("reconnect_max_s: 1}", "reconnect_max_s: 60}")  # the control
    assert parse_config(GOOD.replace(where, ordered), "site.yaml")


def test_facade_bounds_in_order_are_accepted(monkeypatch):
    monkeypatch.setenv("CAM_PW", "x")
    bounds = "      ground_floor: 3\n      top_floor: 3\n      extent_m: [0, 36]\n"
    text = GOOD.replace("      ground_floor: 1\n", bounds)
    facade = parse_config(text, "site.yaml").cameras["east"].facade
    assert facade.top_floor == 3 and facade.extent_m == (0.0, 36.0)


# -- relative paths: the config file's folder, not the working directory ---------------------------------


def _site_with_relative_paths(folder) -> str:
    """A config in `folder` naming its CA, password file and storage relative to itself."""
    (folder / "certs").mkdir()
    (folder / "certs" / "ca.pem").write_text("not checked as a certificate here\n")
    (folder / "mqtt.pw").write_text("secret\n")
    text = (
        "version: 1\nnode: {id: n}\nstorage: {dir: store}\n"
        "mqtt: {username: n, password_file: mqtt.pw, tls: {ca_file: certs/ca.pem}}\n"
        "cameras: {c: {source: clips/east.mp4, health: {reference: east.jpg}}, d: {source: rtsp://192.0.2.1/s}}\n"
    )
    path = folder / "site.yaml"
    path.write_text(text)
    return text


def test_relative_paths_in_a_config_file_are_read_beside_it(tmp_path, monkeypatch):
    from edge.config import load_config

    _site_with_relative_paths(tmp_path)
    monkeypatch.chdir("/")  # as a service runs: its working directory has nothing to do with the file
    cfg = load_config(tmp_path / "site.yaml")
    assert cfg.storage.dir == tmp_path / "store"
    assert cfg.mqtt.tls.ca_file == tmp_path / "certs" / "ca.pem"
    assert cfg.mqtt.password_file == tmp_path / "mqtt.pw"
    assert cfg.cameras["c"].source == str(tmp_path / "clips" / "east.mp4")
    assert cfg.cameras["c"].health.reference == tmp_path / "east.jpg"


def test_streams_devices_and_absolute_paths_are_taken_as_written(tmp_path):
    from edge.config import load_config

    (tmp_path / "site.yaml").write_text(
        f"version: 1\nnode: {{id: n}}\nstorage: {{dir: {tmp_path / 'abs'}}}\n"
        "cameras: {c: {source: /dev/video0}, d: {source: rtsp://192.0.2.1/s}, e: {source: 'pipe:0'}}\n"
    )
    cfg = load_config(tmp_path / "site.yaml")
    assert cfg.storage.dir == tmp_path / "abs"
    assert cfg.cameras["c"].source == "/dev/video0" and cfg.cameras["d"].source == "rtsp://192.0.2.1/s"
    assert cfg.cameras["e"].source == "pipe:0"


def test_a_config_given_by_a_relative_name_is_read_beside_it_too(tmp_path, monkeypatch):
    from edge.config import load_config

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "site.yaml").write_text(
        "version: 1\nnode: {id: n}\nstorage: {dir: store}\ncameras: {c: {source: a.mp4}}\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("etc/site.yaml")
    assert cfg.storage.dir == tmp_path / "etc" / "store" and cfg.storage.dir.is_absolute()


def test_check_config_finds_files_named_relative_to_the_config_from_anywhere(tmp_path):
    _site_with_relative_paths(tmp_path)
    proc = run_edge("check-config", str(tmp_path / "site.yaml"), cwd="/")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "mqtt.pw").unlink()  # the control: the same file, its password file gone
    proc = run_edge("check-config", str(tmp_path / "site.yaml"), cwd="/")
    assert proc.returncode == 78 and str(tmp_path / "mqtt.pw") in proc.stderr, proc.stderr


def test_text_without_a_file_keeps_relative_paths_as_written():
    cfg = parse_config("version: 1\nnode: {id: n}\nstorage: {dir: store}\ncameras: {c: {source: a.mp4}}\n")
    assert str(cfg.storage.dir) == "store" and cfg.cameras["c"].source == "a.mp4"
