"""Logs (issue 16): one JSON object per line when stderr is not a terminal, readable lines on one, and never a
password: the secrets of the config and the passwords of URLs are masked in every record, exception text too."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml
from support.servers import free_port, wait_for

from edge import logs
from edge.config import parse_config

from conftest import REPO


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level, hook, main_hook = list(root.handlers), root.level, threading.excepthook, sys.excepthook
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    threading.excepthook = hook
    sys.excepthook = main_hook


def _log_from_camera_thread(message: str, *args) -> None:
    def work() -> None:
        try:
            raise ValueError(f"decoder said no to {args[-1] if args else 'it'}")
        except ValueError:
            logging.getLogger("edge.capture.camera").exception(message, *args)

    t = threading.Thread(target=work, name="capture-east")
    t.start()
    t.join()


def test_records_are_json_lines_with_time_level_logger_message_camera_and_exception(restore_logging):
    out = io.StringIO()  # not a terminal: auto means JSON
    logs.setup("auto", logging.INFO, out)
    _log_from_camera_thread("camera east: unexpected failure after %d frames", 42)
    logging.getLogger("edge.node").warning("config reloaded: %s", "nothing changed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "ERROR" and first["logger"] == "edge.capture.camera" and first["camera"] == "east"
    assert first["message"] == "camera east: unexpected failure after 42 frames"
    assert first["time"].endswith("Z") and first["time"][:2] == "20"
    assert "Traceback" in first["exception"] and "ValueError: decoder said no to 42" in first["exception"]
    assert second["message"] == "config reloaded: nothing changed" and "camera" not in second
    assert "exception" not in second


def test_a_terminal_gets_readable_lines_and_the_flag_overrides_auto(restore_logging):
    tty = Terminal()
    logs.setup("auto", logging.INFO, tty)
    logging.getLogger("edge.node").warning("camera %s: detection switched OFF", "east")
    line = tty.getvalue().strip()
    assert line.endswith("WARNING edge.node: camera east: detection switched OFF")
    with pytest.raises(ValueError):
        json.loads(line)
    forced = Terminal()
    logs.setup("json", logging.INFO, forced)  # --log-format json on a terminal
    logging.getLogger("edge.node").warning("x")
    assert json.loads(forced.getvalue())["message"] == "x"
    piped = io.StringIO()
    logs.setup("text", logging.INFO, piped)  # --log-format text into a pipe
    logging.getLogger("edge.node").warning("y")
    assert piped.getvalue().strip().endswith("WARNING edge.node: y")


def test_url_passwords_are_masked_in_messages_and_exception_text(restore_logging):
    out = io.StringIO()
    logs.setup("json", logging.INFO, out)
    _log_from_camera_thread("opening %s failed", "rtsp://admin:Hunter2-pw@10.0.0.7:554/live?token=abc")
    record = json.loads(out.getvalue())
    assert "Hunter2-pw" not in out.getvalue() and "no to rtsp://admin:***@10.0.0.7" in record["exception"]
    assert record["message"] == "opening rtsp://admin:***@10.0.0.7:554/live?token=*** failed"  # user, host kept
    assert logs.mask("see rtsp://u:p%40ss@h/x and http://a:b@c") == "see rtsp://u:***@h/x and http://a:***@c"
    assert logs.mask("GET /x?size=2&api_key=9f8e&user=bob") == "GET /x?size=2&api_key=***&user=bob"
    logging.getLogger("edge").warning("%d frames from rtsp://u:Hunter2-pw@h/x", "many")  # a bad call: no raise
    assert "Hunter2-pw" not in out.getvalue() and "rtsp://u:***@h/x" in out.getvalue()


def test_every_secret_the_config_holds_is_masked_wherever_it_appears(restore_logging, tmp_path, monkeypatch):
    monkeypatch.setenv("EAST_TOKEN", "Tok-from-env-77")
    text = {
        "version": 1,
        "node": {"id": "logs"},
        "mqtt": {"username": "logs", "password": "Lit3ral-mqtt-pw"},
        "cameras": {"east": {"source": "rtsp://10.0.0.7/live?sess=${EAST_TOKEN}"}},
    }
    logs.protect(parse_config(yaml.safe_dump(text)))
    out = io.StringIO()
    logs.setup("json", logging.INFO, out)
    log = logging.getLogger("edge.publish.mqtt")
    log.warning("broker refused user logs with Lit3ral-mqtt-pw, token Tok-from-env-77 (for %s)", "east")
    message = json.loads(out.getvalue())["message"]
    assert message == "broker refused user logs with ***, token *** (for east)"


def _config(tmp_path, rtsp_port: int, mqtt_port: int) -> dict:
    return {
        "version": 1,
        "node": {"id": "logs", "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "username": "logs", "password": "${MQTT_PW}"},
        "cameras": {
            # Passwords from the environment, one with the `@` and `/` an installer may paste in unencoded.
            "east": {"source": f"rtsp://admin:${{CAM_PW}}@127.0.0.1:{rtsp_port}/stream"},
            "west": {"source": f"rtsp://viewer:W3st-literal-pw@127.0.0.1:{rtsp_port}/other?token=Tok-3xyz"},
        },
    }


SECRETS = {"MQTT_PW": "Mqtt-S3cret-42", "CAM_PW": "East@Pa55/word"}


def _failing_run(tmp_path, *flags: str) -> tuple[list[str], int]:
    """`edge run` (with `flags`) on cameras and a broker nobody answers for, until both cameras are reported
    offline, then SIGTERM: its stderr lines (a pipe, not a terminal) and its exit status."""
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, free_port(), free_port())))
    env = {**os.environ, **SECRETS, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "edge", "-v", "run", "--config", str(config), *flags]  # -v: debug lines too
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:

        def offline(camera: str) -> bool:
            return any(f"camera {camera} (" in line and "offline" in line for line in list(lines))

        assert wait_for(lambda: offline("east") and offline("west"), 60), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    return lines, proc.returncode


def test_a_failing_edge_run_never_logs_a_password(tmp_path):
    lines, status = _failing_run(tmp_path)
    text = "".join(lines)
    records = [json.loads(line) for line in lines]  # stderr is a pipe: every line is one JSON object
    for secret in [*SECRETS.values(), "W3st-literal-pw", "Tok-3xyz", "Pa55/word"]:
        assert secret not in text, secret
    # The control: what is not secret is still there to read.
    assert "rtsp://admin:***@127.0.0.1" in text and "rtsp://viewer:***@127.0.0.1" in text
    about_east = [r for r in records if r["message"].startswith("camera east (")]
    assert about_east and all(r["camera"] == "east" for r in about_east)
    assert records[-1]["message"] == "stopped" and status == 0


def test_log_format_text_gives_readable_lines_even_into_a_pipe(tmp_path):
    lines, status = _failing_run(tmp_path, "--log-format", "text")
    offline = [line for line in lines if " WARNING edge.capture.camera: camera east (rtsp://admin:***@" in line]
    assert offline and not any(line.startswith("{") for line in lines) and status == 0
    assert not any(secret in "".join(lines) for secret in SECRETS.values())


def test_an_error_that_ends_the_main_thread_is_a_masked_json_record_not_a_raw_traceback():
    """An error no handler catches in the main thread (edge run's start-up, its main loop) ends the command: its
    traceback goes through the same path as every record, as one JSON object, masked."""
    script = (
        "import logging\n"
        "from edge import logs\n"
        "logs.setup('auto', logging.INFO)\n"
        "logging.getLogger('edge.node').info('starting')\n"
        "raise RuntimeError('cannot open rtsp://admin:Hunter22@10.0.0.7:554/stream')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode != 0  # it still ends the command, as a failure
    assert "Hunter22" not in proc.stderr, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # stderr is a pipe: JSON lines only
    assert records[0]["message"] == "starting"  # the control: an ordinary record, the same way
    died = records[-1]
    assert died["level"] == "CRITICAL"
    assert "RuntimeError: cannot open rtsp://admin:***@10.0.0.7" in died["exception"]
