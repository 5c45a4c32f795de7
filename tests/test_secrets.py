"""Camera and broker passwords stay out of logs, status, manifests and the config hash (issue 11 item 7)."""

from __future__ import annotations

import json

import pytest

from edge import config as edge_config
from edge.capture.source import redact
from edge.config import config_hash, parse_config

CONFIG = """
version: 1
node: {id: garden3-east}
storage: {dir: /tmp/edge}
mqtt: {username: garden3-east, password: "${MQTT_PW}"}
cameras:
  east:
    source: rtsp://admin:${CAM_PW}@192.0.2.10/stream1
    record: {post_s: 3}
  west:
    source: "http://192.0.2.11/video.cgi?user=admin&pwd=${WEST_PW}&channel=1"
"""


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:Pw@S3cr3t@192.0.2.10/stream1", "rtsp://admin:***@192.0.2.10/stream1"),
        ("rtsp://admin:a@b@c@192.0.2.10:554/s?x=1", "rtsp://admin:***@192.0.2.10:554/s?x=1"),
        ("rtsp://admin:S3cr3t@192.0.2.10", "rtsp://admin:***@192.0.2.10"),
        ("rtsp://t0ken-only@192.0.2.10/s", "rtsp://***@192.0.2.10/s"),
        (
            "rtsp://192.0.2.10/s?user=admin&password=S3cr3t&channel=1",
            "rtsp://192.0.2.10/s?user=admin&password=***&channel=1",
        ),
        (
            "http://h/v.cgi?PWD=S3cr3t&Token=S3cr3t&api_key=S3cr3t&auth=S3cr3t",
            "http://h/v.cgi?PWD=***&Token=***&api_key=***&auth=***",
        ),
        ("http://h/v.cgi?passwd=S3cr3t;secret=S3cr3t#frag", "http://h/v.cgi?passwd=***;secret=***#frag"),
        ("rtsp://192.0.2.10/Streaming/Channels/101?transportmode=unicast", None),
        ("/var/footage/east@2024.mp4", None),
        ("/dev/video0", None),
    ],
)
def test_redact_hides_every_password(url, shown):
    assert redact(url) == (shown or url)
    assert "S3cr3t" not in redact(url) and "Pw@" not in redact(url)


def _cfg(monkeypatch, text=CONFIG, cam="c-pw", west="w-pw", mqtt="m-pw"):
    monkeypatch.setenv("CAM_PW", cam)
    monkeypatch.setenv("WEST_PW", west)
    monkeypatch.setenv("MQTT_PW", mqtt)
    return parse_config(text)


def test_the_config_hash_does_not_depend_on_passwords(monkeypatch):
    one = _cfg(monkeypatch)
    other = _cfg(monkeypatch, cam="another", west="different", mqtt="changed")
    assert one.cameras["east"].source != other.cameras["east"].source  # the node still gets the real password
    assert config_hash(one) == config_hash(other)


def test_the_config_hash_changes_with_a_real_setting(monkeypatch):
    one = _cfg(monkeypatch)
    assert config_hash(one) != config_hash(_cfg(monkeypatch, CONFIG.replace("post_s: 3", "post_s: 4")))
    assert config_hash(one) != config_hash(_cfg(monkeypatch, CONFIG.replace("192.0.2.10", "192.0.2.12")))


def test_passwords_written_in_the_file_do_not_reach_the_hash_either(monkeypatch):
    text = CONFIG.replace("${CAM_PW}", "Pw@S3cr3t").replace("${WEST_PW}", "S3cr3t").replace("${MQTT_PW}", "S3cr3t")
    cfg = _cfg(monkeypatch, text)
    dumped = json.dumps(edge_config.redacted_config(cfg))
    assert "S3cr3t" not in dumped and "rtsp://admin:***@192.0.2.10/stream1" in dumped
    assert config_hash(cfg) == config_hash(_cfg(monkeypatch, text.replace("S3cr3t", "0ther")))


def test_values_from_the_environment_are_hashed_as_their_reference(monkeypatch):
    text = CONFIG.replace("username: garden3-east", "username: '${MQTT_USER}'")
    monkeypatch.setenv("MQTT_USER", "alice")
    one = _cfg(monkeypatch, text)
    dumped = json.dumps(edge_config.redacted_config(one))
    assert "alice" not in dumped and "c-pw" not in dumped and "w-pw" not in dumped and "m-pw" not in dumped
    assert "${MQTT_USER}" in dumped and "${CAM_PW}" not in dumped  # a URL password is masked as a password
    monkeypatch.setenv("MQTT_USER", "bob")
    assert config_hash(one) == config_hash(_cfg(monkeypatch, text))
