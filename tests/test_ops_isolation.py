"""Multi-camera isolation (issue 16): a camera whose worker dies, or whose stream makes the decoder raise, never
stalls the others. Two cameras on real RTSP servers, one made to fail through a real code path: a sink that
raises SystemExit once (it escapes every per-item guard and ends the worker's thread), or an H.264 stream with
garbage NAL units spliced in (PyAV raises InvalidDataError while decoding it)."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.servers import RtspServer, free_port, wait_for
from test_ops_watchdog import NotifySocket

from edge import supervisor
from edge.capture.camera import CameraState
from edge.config import parse_config
from edge.node import Node
from edge.sdnotify import Notifier

from conftest import loop_clip, sim_facade


class Recorder:
    """A sink keeping every event update and status change, with when it came."""

    def __init__(self):
        self.updates: list[tuple[float, str, str]] = []  # (time, camera, event id)
        self.states: list[tuple[str, CameraState, str]] = []  # (camera, state, reason)

    def on_update(self, kind, record) -> None:
        self.updates.append((time.time(), record["camera"], record["id"]))

    def on_evidence(self, record, files) -> None:
        """Evidence is not what these tests follow."""

    def on_status(self, camera, status) -> None:
        self.states.append((camera, status.state, status.reason))

    def events_of(self, camera: str, after: float = 0.0) -> set[str]:
        return {i for t, c, i in list(self.updates) if c == camera and t > after}


class Tripwire:
    """A sink that raises SystemExit at the first event of one camera: a BaseException no guard catches."""

    def __init__(self, camera: str | None):
        self.camera = camera
        self.fired_at: float | None = None

    def on_update(self, kind, record) -> None:
        if record["camera"] == self.camera and self.fired_at is None:
            self.fired_at = time.time()
            raise SystemExit("injected by the test's sink")

    def on_evidence(self, record, files) -> None:
        """Evidence is not where it trips."""

    def on_status(self, camera, status) -> None:
        """Status comes from the capture thread, not the worker."""


class StatusTripwire:
    """A sink that raises SystemExit in the capture thread of one camera, when it first reports it online."""

    def __init__(self, camera: str):
        self.camera = camera
        self.fired_at: float | None = None

    def on_update(self, kind, record) -> None:
        """Events are not where it trips."""

    def on_evidence(self, record, files) -> None:
        """Nor evidence."""

    def on_status(self, camera, status) -> None:
        in_capture = threading.current_thread().name == f"capture-{camera}"  # not the node's status reports
        if camera == self.camera and in_capture and status.state == CameraState.ONLINE and self.fired_at is None:
            self.fired_at = time.time()
            raise SystemExit("injected in the capture thread")


@pytest.fixture(scope="module")
def throw_clip(sim_clip, tmp_path_factory):
    """A throw clip (two throws) played four times over, and the folder with its facade calibration."""
    folder = sim_clip("throw", 1)
    return loop_clip(folder / "scene.mp4", 4, tmp_path_factory.mktemp("iso") / "loop.mp4"), folder


def _annexb(clip: Path, out: Path) -> bytes:
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy", "-bsf:v", "h264_mp4toannexb"]
    subprocess.run([*cmd, "-f", "h264", str(out)], check=True)
    return out.read_bytes()


def _spliced(stream: bytes, seed: int) -> bytes:
    """`stream` with a fake NAL unit (start code, a parameter-set or slice header, random bytes) every few
    hundred bytes: what a camera with failing memory or a broken link might send."""
    rng, out, i = random.Random(seed), bytearray(), 0
    while i < len(stream):
        n = rng.randint(100, 800)
        out += stream[i : i + n] + b"\x00\x00\x00\x01" + bytes([rng.choice([0x67, 0x68, 0x65, 0x41, 0x06])])
        out += rng.randbytes(rng.randint(5, 300))
        i += n
    return bytes(out)


@pytest.fixture(scope="module")
def corrupt_clip(throw_clip, tmp_path_factory):
    """The throw clip, then the same clip with garbage spliced in, then the clip again, as one mp4."""
    folder = tmp_path_factory.mktemp("corrupt")
    good = _annexb(throw_clip[1] / "scene.mp4", folder / "good.h264")
    (folder / "mix.h264").write_bytes(good + _spliced(good, 1) + good)
    out = folder / "corrupt.mp4"
    cmd = ["ffmpeg", "-loglevel", "quiet", "-y", "-r", "25", "-i", str(folder / "mix.h264"), "-c", "copy"]
    subprocess.run([*cmd, str(out)], check=True)
    return out


@pytest.fixture
def servers(throw_clip):
    """Two RTSP cameras showing the throw clip; each replays it from the start when its only client returns."""
    srvs = [RtspServer(throw_clip[0]).start() for _ in range(2)]
    yield srvs
    for s in srvs:
        s.kill()


def _node(tmp_path, urls: dict[str, str], facade: dict, sinks: list, **kwargs) -> Node:
    config = {
        "version": 1,
        "node": {"id": "iso", "metrics": {"listen": f"127.0.0.1:{free_port()}"}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": {"enabled": False},
        "defaults": {
            "facade": facade,
            "capture": {"reconnect_max_s": 1.0},
            "record": {"pre_s": 2, "post_s": 1, "buffer_s": 10},
        },
        "cameras": {name: {"source": url} for name, url in urls.items()},
    }
    return Node(parse_config(yaml.safe_dump(config)), sinks=sinks, **kwargs)


def _restart_counts(node: Node) -> dict[str, float]:
    url = f"http://127.0.0.1:{node.server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {
        s.labels["camera"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "edge_camera_worker_restarts_total"
    }


class Running:
    """A node's run_forever() in a thread (its main loop supervises the workers), stopped at the end."""

    def __init__(self, node: Node):
        self.node = node
        self.thread = threading.Thread(target=node.run_forever, daemon=True)

    def __enter__(self) -> Node:
        self.thread.start()
        return self.node

    def __exit__(self, *exc) -> None:
        self.node.request_stop()
        self.thread.join(10)
        self.node.stop()


def test_a_worker_killed_by_a_sink_is_restarted_alone_and_alerts_again(servers, throw_clip, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    listener = NotifySocket(f"@edge-test-{uuid.uuid4().hex}")
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    recorder, tripwire = Recorder(), Tripwire("trip")
    urls = {"trip": servers[0].url, "steady": servers[1].url}
    node = _node(tmp_path, urls, sim_facade(throw_clip[1]), [recorder, tripwire], notifier=Notifier(env))
    try:
        with Running(node):
            assert wait_for(lambda: "steady" in node.cameras and node.server is not None, 20)
            steady, trip = node.cameras["steady"], node.cameras["trip"]
            assert wait_for(lambda: tripwire.fired_at, 60), "trip's first event never came"
            died, pings = tripwire.fired_at, len(listener.messages)
            # Replaced by a new worker for the same camera, which alerts again: its event ids are new ones.
            assert wait_for(lambda: node.cameras["trip"] is not trip, 30), node.stuck_workers()
            before = recorder.events_of("trip")
            assert wait_for(lambda: recorder.events_of("trip", died) - before, 60), recorder.updates
            # The other camera went on alerting, with the same worker, and the watchdog went on pinging.
            assert wait_for(lambda: recorder.events_of("steady", died), 60), recorder.updates
            assert node.cameras["steady"] is steady and steady.alive
            assert wait_for(lambda: listener.count("WATCHDOG=1", since=pings) >= 3, 20), listener.messages[pings:]
            # Reported: an ERROR line saying why, the count in stats and in /metrics.
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert any("camera trip: its worker died: SystemExit: injected" in m for m in errors), errors
            assert any("camera trip: its worker died" in m and "restarting it in" in m for m in errors), errors
            assert not any("camera steady" in m for m in errors), errors
            cams = node.stats()["cameras"]
            assert cams["trip"]["worker_restarts"] >= 1 and cams["steady"]["worker_restarts"] == 0
            counts = _restart_counts(node)
            assert counts["trip"] >= 1 and counts["steady"] == 0
    finally:
        listener.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the very death injected
def test_a_dead_capture_thread_takes_only_its_camera_which_is_restarted(servers, throw_clip, tmp_path, caplog):
    recorder, tripwire = Recorder(), StatusTripwire("trip")
    urls = {"trip": servers[0].url, "steady": servers[1].url}
    node = _node(tmp_path, urls, sim_facade(throw_clip[1]), [recorder, tripwire])
    with Running(node):
        assert wait_for(lambda: "steady" in node.cameras and node.server is not None, 20)
        steady, trip = node.cameras["steady"], node.cameras["trip"]
        assert wait_for(lambda: tripwire.fired_at, 30), "trip never came online"
        assert wait_for(lambda: node.cameras["trip"] is not trip, 30), node.stuck_workers()
        assert not trip.capture.is_alive() and trip.death is None  # the worker itself ended cleanly
        assert wait_for(lambda: recorder.events_of("trip", tripwire.fired_at), 60), recorder.updates
        assert node.cameras["steady"] is steady and node.supervisor.restarts == {"trip": 1}
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(m.startswith("camera trip: its capture thread ended") for m in errors), errors


def test_nothing_is_restarted_when_nothing_fails(servers, throw_clip, tmp_path, caplog):
    recorder = Recorder()
    urls = {"trip": servers[0].url, "steady": servers[1].url}
    node = _node(tmp_path, urls, sim_facade(throw_clip[1]), [recorder, Tripwire(None)])
    with Running(node):
        assert wait_for(lambda: "steady" in node.cameras and node.server is not None, 20)
        workers = dict(node.cameras)
        assert wait_for(lambda: recorder.events_of("trip") and recorder.events_of("steady"), 60), recorder.updates
        assert node.cameras == workers and all(w.alive for w in workers.values())
        assert node.supervisor.restarts == {} and node.stuck_workers() == {}
        assert _restart_counts(node) == {"trip": 0, "steady": 0}
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_stream_the_decoder_rejects_reconnects_alone_while_the_other_camera_alerts(
    servers, throw_clip, corrupt_clip, tmp_path
):
    bad = RtspServer(corrupt_clip).start()
    recorder = Recorder()
    urls = {"corrupt": bad.url, "steady": servers[1].url}
    node = _node(tmp_path, urls, sim_facade(throw_clip[1]), [recorder])
    try:
        with Running(node):
            assert wait_for(lambda: "corrupt" in node.cameras and node.server is not None, 20)
            corrupt = node.cameras["corrupt"]

            def rejected():
                return [s for s in list(recorder.states) if s[0] == "corrupt" and s[1] == CameraState.OFFLINE]

            # The garbage makes PyAV raise (InvalidDataError): the camera goes offline and reconnects.
            lost = wait_for(rejected, 60)
            assert lost and "Invalid data" in lost[0][2], recorder.states
            since = time.time()
            assert wait_for(lambda: node.status("corrupt").state == CameraState.ONLINE, 30), recorder.states
            # The server starts the clip over for the returning camera: its throws alert again.
            assert wait_for(lambda: recorder.events_of("corrupt", since), 60), recorder.updates
            assert wait_for(lambda: recorder.events_of("steady", since), 60), recorder.updates
            # Recovered by its own capture's reconnect: the same worker, never restarted, nor the other's.
            assert node.cameras["corrupt"] is corrupt and corrupt.alive and corrupt.capture.reconnects >= 1
            assert node.supervisor.restarts == {}
    finally:
        bad.kill()


class _DeadCapture:
    """The capture of a dead worker: ended, a live camera (not a file)."""

    is_file = False
    status = type("Status", (), {"state": CameraState.OFFLINE, "reason": "stopped"})()

    def is_alive(self) -> bool:
        return False


class _DeadWorker:
    """A camera worker whose thread died of `why`, after having been started at monotonic time `started`."""

    def __init__(self, started: float, why: str = "SystemExit: injected"):
        self.ran, self.alive, self.asked_to_stop = True, False, False
        self.death, self.started, self.capture = why, started, _DeadCapture()

    def stop(self) -> None:
        self.asked_to_stop = True


def test_a_camera_that_cannot_be_remade_is_retried_ever_less_often_with_the_same_log_line(monkeypatch, caplog):
    """A worker that ran for hours dies, and its camera cannot be remade (its verifier model deleted): the retries
    back off to one a minute, not one every second or two for ever, and the reason does not grow at each one."""
    clock = [10_000.0]
    monkeypatch.setattr(supervisor, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    made: list[str] = []

    def make(name: str):
        made.append(name)
        raise FileNotFoundError("models/verifier.onnx")

    sup = supervisor.Supervisor(make, lambda name, worker: None)
    cameras = {"east": _DeadWorker(started=0.0)}  # ran for hours: the first restart comes at once
    sup.check(cameras)
    first_delay = sup._pending["east"].due - clock[0]
    assert first_delay <= supervisor.RESTART_FIRST_S  # the control: a death after a long run starts over
    delays, reasons = [], []
    for _ in range(20):
        clock[0] = sup._pending["east"].due
        sup.check(cameras)
        delays.append(sup._pending["east"].due - clock[0])
        reasons.append(sup.waiting()["east"])
    assert len(made) == 20
    assert min(delays[-5:]) >= supervisor.RESTART_MAX_S / 2, delays  # capped, jitter halves it at most
    assert all(b >= a / 2 for a, b in zip(delays, delays[1:], strict=False)), delays  # never back to the start
    assert "models/verifier.onnx" in reasons[-1] and "SystemExit: injected" in reasons[-1]
    assert len(reasons[-1]) <= len(reasons[0]) + 4, reasons[-1]  # only the seconds left may change
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert max(map(len, lines)) < 2 * min(map(len, lines)), lines[-1]
