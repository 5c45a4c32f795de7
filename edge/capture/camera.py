"""A live camera that never gives up: reconnects with backoff, watches for stalls, reports its status."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edge.capture.packets import PacketRing
from edge.capture.source import CapturedFrame, SourceError, SourceOptions, VideoSource, redact
from edge.config import CaptureConfig

log = logging.getLogger(__name__)


@dataclass
class CameraStatus:
    """What the rest of the node knows of a camera."""

    state: str = "starting"  # starting | online | offline
    reason: str = "starting"
    since: float = field(default_factory=time.time)
    fps: float = 0.0
    frames: int = 0
    dropped: int = 0
    reconnects_last_hour: int = 0
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    calibrated: bool = True  # the camera has a facade calibration
    warning: str | None = None  # a standing problem of its setup, such as no calibration

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class Backoff:
    """Exponential backoff with jitter: first retry within `first`, doubling up to `cap`."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return base * self.rng.uniform(0.5, 1.0)  # jitter: cameras rebooting together do not retry together

    def reset(self) -> None:
        self.failures = 0


@dataclass
class FrameQueue:
    """Bounded hand-over from capture to detection; a full queue drops the frame and counts it."""

    maxsize: int
    q: queue.Queue = field(init=False)
    dropped: int = 0

    def __post_init__(self) -> None:
        self.q = queue.Queue(self.maxsize)

    def put(self, item) -> bool:
        try:
            self.q.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def get(self, timeout: float):
        return self.q.get(timeout=timeout)


class CameraCapture(threading.Thread):
    """Reads one source forever in its own thread: packets to the ring, frames to the queue."""

    def __init__(
        self,
        name: str,
        url: str,
        cfg: CaptureConfig,
        ring: PacketRing,
        frames: FrameQueue,
        on_status: Callable[[str, CameraStatus], None] | None = None,
        is_file: bool = False,
    ):
        super().__init__(name=f"capture-{name}", daemon=True)
        self.camera, self.url, self.cfg = name, url, cfg
        self.ring, self.frames = ring, frames
        self.on_status = on_status
        self.status = CameraStatus()
        self.backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._stop = threading.Event()
        self._reconnects: deque[float] = deque()
        self._opts = SourceOptions(
            cfg.transport, cfg.open_timeout_s, cfg.stall_s, "wall", realtime=is_file and cfg.realtime_files
        )
        self._recent: deque[float] = deque(maxlen=50)
        self.stream_rate: float | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            source = VideoSource(self.url, self._opts)
            try:
                params = source.open()
                self.status.width, self.status.height, self.status.codec = (
                    params.width,
                    params.height,
                    params.codec,
                )
                self._read(source)
            except SourceError as exc:
                self._offline(str(exc))
            except Exception as exc:  # a bug must not kill the camera thread: report it and retry
                log.exception("camera %s: unexpected failure", self.camera)
                self._offline(f"internal error: {exc}")
            finally:
                source.close()
            if self._stop.is_set():
                break
            delay = self.backoff.next_delay()
            log.info("camera %s: retrying in %.2f s", self.camera, delay)
            self._stop.wait(delay)

    def _read(self, source: VideoSource) -> None:
        last_pts_s = None
        last_frame = time.monotonic()
        for pkt, frames in source.packets():
            if self._stop.is_set():
                return
            if pkt is not None:
                self.ring.add(pkt)
            now = time.monotonic()
            if frames:
                last_frame = now
            elif now - last_frame > self.cfg.stall_s:
                raise SourceError(f"stalled: data but no decodable frame for {self.cfg.stall_s:.0f} s")
            for frame in frames:
                if last_pts_s is not None and frame.pts_s is not None:
                    jump = frame.pts_s - last_pts_s
                    if abs(jump) > self.cfg.max_pts_jump_s:
                        raise SourceError(f"timestamps jumped by {jump:+.1f} s")
                if frame.pts_s is not None:
                    last_pts_s = frame.pts_s
                self._deliver(frame)

    def _deliver(self, frame: CapturedFrame) -> None:
        if self.status.state != "online":
            self.backoff.reset()
            self._set("online", "receiving frames")
        self.status.frames += 1
        self._recent.append(frame.t)
        if len(self._recent) > 1:
            span = self._recent[-1] - self._recent[0]
            self.status.fps = (len(self._recent) - 1) / span if span > 0 else 0.0
        self.frames.put(frame)
        self.status.dropped = self.frames.dropped

    def _offline(self, reason: str) -> None:
        now = time.time()
        self._reconnects.append(now)
        while self._reconnects and self._reconnects[0] < now - 3600:
            self._reconnects.popleft()
        self.status.reconnects_last_hour = len(self._reconnects)
        self.status.fps = 0.0
        if self.status.state != "offline" or self.status.reason != reason:
            log.warning("camera %s (%s) offline: %s", self.camera, redact(self.url), reason)
            self._set("offline", reason)

    def _set(self, state: str, reason: str) -> None:
        self.status.state, self.status.reason, self.status.since = state, reason, time.time()
        if self.on_status:
            self.on_status(self.camera, self.status)
