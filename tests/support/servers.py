"""Real servers for the tests, started on free loopback ports and stopped afterwards."""

from __future__ import annotations

import functools
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python, which has python3-gi for GStreamer


PORTS_FROM = 10000  # test servers' ports start here, below the kernel's ephemeral range (where port 0 draws)


def _port_slice() -> range:
    """This pytest-xdist worker's own share of the ports below the ephemeral range: a port handed out but not
    yet bound (a server started seconds later) cannot be taken by another worker or an outgoing connection."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    me = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (low - PORTS_FROM) // max(workers, 1)
    return range(PORTS_FROM + me * size, PORTS_FROM + (me + 1) * size)


@functools.cache
def _candidates() -> tuple[int, Iterator[int]] | None:
    """This process's ports to offer, round and round from a place of its own (a port handed out is not
    offered again until the slice is used up); None on an unusual ephemeral range too small to split."""
    ports = _port_slice()
    if len(ports) < 200:
        return None
    start = os.getpid() % len(ports)
    return len(ports), itertools.cycle([*ports[start:], *ports[:start]])


def free_port() -> int:
    """A loopback port nothing listens on, from this worker's own slice (see _port_slice)."""
    found = _candidates()
    if found is None:  # the kernel's choice, as before slices
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    count, ports = found
    for port in itertools.islice(ports, count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in this worker's slice")


class RtspServer:
    """GStreamer's RTSP server serving one H.264 mp4 at rtsp://127.0.0.1:PORT/stream."""

    def __init__(self, clip: Path, port: int | None = None):
        self.clip = clip
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self, timeout: float = 15.0) -> RtspServer:
        self.proc = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                str(HERE.parent.parent / "scripts" / "rtsp_server.py"),
                str(self.port),
                str(self.clip),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"RTSP server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


def wait_for(predicate, timeout: float, step: float = 0.1):
    """Poll until predicate() is truthy; returns its value, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None
