"""Camera and broker passwords stay out of logs, status, manifests and the config hash (issue 11 item 7)."""

from __future__ import annotations

import pytest

from edge.capture.source import redact

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
