"""The systemd watchdog (issue 16): READY=1 once every camera is started, then WATCHDOG=1 pings only while the
main loop and every camera worker are alive. Checked against a NOTIFY_SOCKET this test listens on, with a worker
hung in a real code path (a sink that blocks when the camera's first event comes)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest
import yaml
from support.servers import RtspServer, free_port, wait_for

from edge.config import parse_config
from edge.node import Node
from edge.sdnotify import Notifier

from conftest import loop_clip


class NotifySocket:
    """A datagram socket standing in for systemd's notification socket; keeps every message received."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def count(self, line: str, since: int = 0) -> int:
        return sum(line in m.split("\n") for m in self.messages[since:])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Gate:
    """A sink whose on_update blocks until released: the camera worker that reports an event hangs in it."""

    def __init__(self):
        self.entered, self.released = threading.Event(), threading.Event()

    def on_update(self, kind, record) -> None:
        self.entered.set()
        self.released.wait()

    def on_evidence(self, record, files) -> None:
        """Evidence is not what hangs here."""

    def on_status(self, camera, status) -> None:
        """Status comes from the capture thread, not the worker."""


@pytest.fixture(scope="module")
def looped(sim_clip, tmp_path_factory):
    """A throw clip four times over (32 s), made once for the module."""
    return loop_clip(sim_clip("throw", 1) / "scene.mp4", 4, tmp_path_factory.mktemp("rtsp") / "loop.mp4")


@pytest.fixture
def camera(looped):
    """A camera of its own per test: the server's shared stream plays once, from its first client on."""
    srv = RtspServer(looped).start()
    yield srv
    srv.kill()


def test_ready_then_pings_which_stop_while_a_worker_hangs_and_resume_when_it_is_free(camera, tmp_path, caplog):
    listener = NotifySocket(f"@edge-test-{uuid.uuid4().hex}")  # systemd's own kind of address: abstract
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    config = {
        "version": 1,
        "node": {"id": "wd", "worker_stall_s": 1.0, "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": {"enabled": False},
        "cameras": {"cam": {"source": camera.url}, "idle": {"source": f"rtsp://127.0.0.1:{free_port()}/none"}},
    }
    gate = Gate()
    node = Node(parse_config(yaml.safe_dump(config)), sinks=[gate], notifier=Notifier(env))
    main = threading.Thread(target=node.run_forever, daemon=True)
    main.start()
    try:
        assert wait_for(lambda: listener.count("READY=1"), 20), listener.messages
        ready = next(i for i, m in enumerate(listener.messages) if "READY=1" in m.split("\n"))
        assert listener.count("WATCHDOG=1", since=0) - listener.count("WATCHDOG=1", since=ready) == 0
        # Pings while all is well; an offline camera ("idle") is no reason to stop them: its worker is alive.
        assert wait_for(lambda: listener.count("WATCHDOG=1", since=ready) >= 3, 20), listener.messages

        assert gate.entered.wait(60), "the clip's throw never reached the sinks"
        logged = len(caplog.records)  # (a loaded machine may have made the worker late once before: not this)
        assert wait_for(lambda: "cam" in node.stuck_workers(), 10)
        time.sleep(1.0)  # a ping already decided before the check may still be on its way
        hung = len(listener.messages)
        time.sleep(2.0)  # five ping intervals
        assert listener.count("WATCHDOG=1", since=hung) == 0, listener.messages[hung:]
        assert "idle" not in node.stuck_workers()
        stuck_lines = [
            r for r in caplog.records[logged:] if "camera cam: its worker has been stuck" in r.getMessage()
        ]
        assert len(stuck_lines) == 1, stuck_lines  # said once, not at every tick while it lasts

        gate.released.set()  # the control: the same worker free again, the pings come back
        assert wait_for(lambda: listener.count("WATCHDOG=1", since=hung) >= 2, 20), listener.messages[hung:]
    finally:
        gate.released.set()
        node.request_stop()
        main.join(10)
        node.stop()
        listener.close()
    assert listener.count("STOPPING=1")


def test_the_notifier_speaks_to_a_path_socket_and_only_to_its_own_watchdog(tmp_path):
    listener = NotifySocket(str(tmp_path / "notify"))
    try:
        env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
        mine = Notifier(env)
        assert mine.watchdog_s == 5.0 and mine.ping() and mine.ready("2 cameras started")
        assert wait_for(lambda: listener.count("WATCHDOG=1") and listener.count("READY=1"), 5), listener.messages
        assert "STATUS=2 cameras started" in listener.messages[-1].split("\n")
        # A WATCHDOG_PID naming another process (a parent's, inherited): the watchdog is not this one's.
        assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_s is None
    finally:
        listener.close()
    outside = Notifier({})  # not started by systemd: nothing to tell, and no error
    assert not outside.enabled and outside.watchdog_s is None and not outside.ping()


def test_a_ping_is_never_due_for_longer_than_a_quarter_of_its_interval_whatever_the_watchdog_asks():
    for usec in (100_000, 400_000, 1_000_000, 3_000_000, 60_000_000):  # WatchdogSec=100ms ... 60
        notifier = Notifier({"WATCHDOG_USEC": str(usec), "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_s == usec / 2e6  # pings at half WatchdogSec=
        # However long the main loop would sleep, it looks at the clock this often: a due ping waits at most that.
        assert notifier.wake_s(float("inf")) <= notifier.watchdog_s / 4, usec
        assert notifier.wake_s(0.01) == 0.01  # a loop that wakes more often anyway keeps its own pace
    assert Notifier({}).wake_s(0.5) == 0.5  # the control: no watchdog, no change


class CaptureGate:
    """A status sink that blocks the camera's capture thread when the camera first comes online: the capture hangs
    (as in a decoder deadlock) with the camera reported online, while its worker, idle, still comes round."""

    def __init__(self, camera: str):
        self.camera = camera
        self.entered, self.released = threading.Event(), threading.Event()

    def on_update(self, kind, record) -> None:
        """Events are not what hangs here."""

    def on_evidence(self, record, files) -> None:
        """Nor evidence."""

    def on_status(self, camera, status) -> None:
        in_capture = threading.current_thread().name == f"capture-{camera}"  # not the node's status reports
        if camera == self.camera and in_capture and status.state == "online" and not self.entered.is_set():
            self.entered.set()
            self.released.wait()


def test_a_capture_hung_while_online_is_unhealthy_and_stops_the_pings_until_it_delivers_again(camera, tmp_path):
    listener = NotifySocket(f"@edge-test-{uuid.uuid4().hex}")
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    config = {
        "version": 1,
        "node": {"id": "wd", "worker_stall_s": 1.0, "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": {"enabled": False},
        "cameras": {
            "cam": {"source": camera.url, "capture": {"stall_s": 1.0}},
            "idle": {"source": f"rtsp://127.0.0.1:{free_port()}/none", "capture": {"stall_s": 1.0}},
        },
    }
    gate = CaptureGate("cam")
    node = Node(parse_config(yaml.safe_dump(config)), sinks=[gate], notifier=Notifier(env))
    main = threading.Thread(target=node.run_forever, daemon=True)
    main.start()
    try:
        assert gate.entered.wait(30), "cam never came online"
        assert node.status("cam").state == "online" and node.cameras["cam"].alive  # what status and metrics say
        # Nothing comes from it any more: past its own stall watchdog and the worker's limit, it is stuck.
        assert wait_for(lambda: "cam" in node.stuck_workers(), 20), node.stuck_workers()
        assert "capture" in node.stuck_workers()["cam"], node.stuck_workers()
        health = node.health()
        assert not health.ok and any(p.startswith("camera cam: its capture") for p in health.problems), health
        time.sleep(1.0)  # a ping already decided before the check may still be on its way
        hung = len(listener.messages)
        time.sleep(2.0)  # five ping intervals
        assert listener.count("WATCHDOG=1", since=hung) == 0, listener.messages[hung:]
        assert "idle" not in node.stuck_workers()  # offline, never online: not stuck

        gate.released.set()  # the control: the same capture free again, nothing is stuck and the pings come back
        assert wait_for(lambda: "cam" not in node.stuck_workers(), 20), node.stuck_workers()
        assert wait_for(lambda: listener.count("WATCHDOG=1", since=hung) >= 2, 20), listener.messages[hung:]
    finally:
        gate.released.set()
        node.request_stop()
        main.join(10)
        node.stop()
        listener.close()
