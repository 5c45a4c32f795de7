"""A live camera that never gives up: reconnects with backoff, watches for stalls, reports its status."""

from __future__ import annotations

import logging
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from edge.capture.feed import Chunk, Feed, StreamStarted, StreamStopped
from edge.capture.packets import StreamParams
from edge.capture.reader import Demuxed, PacketReader
from edge.capture.source import (
    CapturedFrame,
    Clock,
    SourceError,
    SourceOptions,
    StreamEnded,
    VideoSource,
    redact,
)
from edge.config import CaptureConfig

log = logging.getLogger(__name__)


class CameraState(StrEnum):
    """Where a camera stands, as status reports it."""

    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"
    ENDED = "ended"  # a file source played to its end


@dataclass
class CameraStatus:
    """What the rest of the node knows of a camera."""

    state: CameraState = CameraState.STARTING
    reason: str = "starting"
    since: float = field(default_factory=time.time)
    fps: float = 0.0
    frames: int = 0
    dropped: int = 0
    reconnects_last_hour: int = 0  # times the stream came back after being lost, in the last hour
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    calibrated: bool = True  # the camera has a usable facade calibration at the size it sends
    warning: str | None = None  # a standing problem of its setup, such as no calibration

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


RATE_FRAMES = 8  # a stream's first frames, whose timestamps measure its frame rate
_RECONNECTS_OVER_S = 3600.0  # status counts the reconnects of the last hour
_RATE_AGREES = 0.05  # a declared rate within 5% of the measured one is taken as exact


def stream_rate(stamps: list[float | None], declared: float | None) -> float | None:
    """Frames per second from a stream's first frame timestamps; the declared rate when it agrees.

    RTSP streams often declare a field rate (50 for a 25 fps camera), and cameras do not always run at
    their nominal rate: the physics needs the real one.
    """
    known = sorted(s for s in stamps if s is not None)
    steps = [b - a for a, b in zip(known, known[1:], strict=False) if b > a]
    if not steps:
        return declared
    measured = 1.0 / statistics.median(steps)
    if declared and abs(declared / measured - 1.0) <= _RATE_AGREES:
        return declared
    if declared:
        log.info("stream declares %.2f fps, its timestamps say %.2f: using those", declared, measured)
    return round(measured, 3)


# The wall clock moving against the monotonic one by more than this between two packets was set (NTP stepping
# it at boot, a person): a slew of NTP moves both clocks alike, and reading the two takes microseconds, so
# this leaves room for a starved reader thread. A smaller step stays within the lateness stamps allow.
_CLOCK_STEP_S = 2.0
_BACKWARD_TOLERANCE_S = 0.2  # frames come in display order; a step back beyond jitter is a timestamp reset
_MAX_DOUBLINGS = 30  # far past any cap; 2**1024 would overflow a float after a night of retries


class Backoff:
    """Exponential backoff with jitter: first retry within `first`, doubling up to `cap`."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.first * 2 ** min(self.failures, _MAX_DOUBLINGS))
        self.failures += 1
        return base * self.rng.uniform(0.5, 1.0)  # jitter: cameras rebooting together do not retry together

    def reset(self) -> None:
        self.failures = 0


class CameraCapture(threading.Thread):
    """Reads one source in its own thread: stream starts, packets and frames to the feed, in order.

    A camera is reconnected forever with backoff; a file is read once, to its end.
    """

    def __init__(
        self,
        name: str,
        url: str,
        cfg: CaptureConfig,
        feed: Feed,
        on_status: Callable[[str, CameraStatus], None] | None = None,
        is_file: bool = False,
        options: SourceOptions | None = None,
    ):
        super().__init__(name=f"capture-{name}", daemon=True)
        self.camera, self.url, self.cfg = name, url, cfg
        self.feed = feed
        self.on_status = on_status
        self.is_file = is_file
        self.status = CameraStatus()
        self.backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._halt = threading.Event()
        self._reconnects: deque[float] = deque()
        self._opts = options or SourceOptions(
            cfg.transport,
            cfg.open_timeout_s,
            cfg.stall_s,
            Clock.WALL,
            realtime=is_file and cfg.realtime_files,
            probe_s=cfg.probe_s,
        )
        self._recent: deque[float] = deque(maxlen=50)
        self.session = 0
        self._rate: float | None = None  # the frame rate the current session was announced with
        self._online_sessions = 0
        self._announced_stop = 0  # the last session whose end the feed was told
        self.decode_s = 0.0  # time spent decoding (metrics: ms per frame)
        self.decoded = 0  # frames decoded

    @property
    def reconnects(self) -> int:
        """Times the stream came back after being lost, since the start."""
        return max(0, self._online_sessions - 1)

    def stop(self) -> None:
        self._halt.set()
        self.feed.close()  # a capture thread waiting for the worker to take a frame stops waiting

    def run(self) -> None:
        while not self._halt.is_set():
            source = VideoSource(self.url, self._opts)
            try:
                params = source.open()
                self.session += 1
                self.status.width, self.status.height, self.status.codec = (
                    params.width,
                    params.height,
                    params.codec,
                )
                self._read(source, params)
            except StreamEnded as exc:
                self._lost(str(exc), ended=self.is_file)
            except SourceError as exc:
                self._lost(str(exc))
            except Exception as exc:  # a bug must not kill the camera thread: report it and retry
                log.exception("camera %s: unexpected failure", self.camera)
                self._lost(f"internal error: {exc}")
            finally:
                source.close()
            if self._halt.is_set() or self.is_file:
                break  # a file is read once: its end, or a damaged part, does not change by retrying
            delay = self.backoff.next_delay()
            log.info("camera %s: retrying in %.2f s", self.camera, delay)
            self._halt.wait(delay)

    def _read(self, source: VideoSource, params: StreamParams) -> None:
        """Deliver the stream; its start is announced once its first frames have measured its rate."""
        declared = float(params.rate) if params.rate else None
        held: list[Chunk] = []

        def announce() -> None:
            stamps = [f.pts_s for c in held for f in c.frames]
            self._rate = stream_rate(stamps, declared)
            self.feed.put(StreamStarted(self.session, source.params, self._rate, source.announced_frames))
            for chunk in held:
                self.feed.put(chunk)
            held.clear()

        try:
            self._deliver(source, held, announce)
        finally:
            if held:
                announce()  # a stream shorter than the measurement still delivers what it had
        self._announce_stop("stopping")  # only reached when asked to stop: a stream ends by raising

    def _deliver(self, source: VideoSource, held: list[Chunk], announce: Callable[[], None]) -> None:
        # Packets are read in a thread of their own and decoded here, each once the worker has room for
        # its frames: a worker behind leaves packets waiting, not decoded frames (MBs each).
        reader = PacketReader(source, self.feed, self.feed.max_frames, f"read-{self.camera}")
        reader.start()
        try:
            self._decode(source, reader, held, announce)
        finally:
            reader.stop()
            reader.discard()  # what was read and not decoded goes: the feed's places kept for it are freed

    def _decode(
        self, source: VideoSource, reader: PacketReader, held: list[Chunk], announce: Callable[[], None]
    ) -> None:
        last: tuple[float | None, float] = (None, time.monotonic())  # the last frame's pts_s, and when it came
        announced = False
        params = source.params
        clock: float | None = None  # the wall clock minus the monotonic one when the last packet arrived
        for item in reader:
            if self._halt.is_set():
                reader.stop()  # nothing more is read; what was read still goes to the worker, as it did
            step, clock = self._clock_step(source, item, clock)
            if step:
                source.restamp(item.arrival)
                if announced:
                    way = "forward" if step > 0 else "back"
                    self._new_stream(f"the node's clock was set {way} by {abs(step):.0f} s", source)
            try:
                chunk, last = self._decoded(source, item, *last)
            except BaseException:
                if item.admitted:
                    self.feed.release(1)  # its place in the feed was kept for a frame that never comes
                raise
            if chunk.packet is not None and chunk.packet.params != params:
                params = chunk.packet.params
                self.status.width, self.status.height = params.width, params.height
                if announced:  # else the stream is announced with the size it has by then
                    self._new_stream(f"the picture changed to {params.width}x{params.height}", source)
                    chunk.session = self.session
            if announced:
                self.feed.put(chunk)
            else:
                held.append(chunk)
                if sum(len(c.frames) for c in held) >= RATE_FRAMES:
                    announce()
                    announced = True
            if chunk.frames:
                self._delivered(chunk.frames)

    def _decoded(
        self, source: VideoSource, item: Demuxed, last_pts_s: float | None, last_frame: float
    ) -> tuple[Chunk, tuple[float | None, float]]:
        """One packet decoded into its chunk, and the new (last pts_s, last frame time); raises SourceError
        on a stall or a timestamp jump."""
        began = time.perf_counter()
        pkt, frames = source.decode(item.packet, item.arrival)
        self.decode_s += time.perf_counter() - began
        self.decoded += len(frames)
        now = item.received  # not when decoded: decoding waits for the worker
        if frames:
            last_frame = now
        elif now - last_frame > self.cfg.stall_s:
            raise SourceError(f"stalled: data but no decodable frame for {self.cfg.stall_s:.0f} s")
        for frame in frames:
            if last_pts_s is not None and frame.pts_s is not None:
                jump = frame.pts_s - last_pts_s
                if abs(jump) > self.cfg.max_pts_jump_s or jump < -_BACKWARD_TOLERANCE_S:
                    # Backwards at all: the evidence clip could not carry on past it (its timestamps
                    # must rise), so the stream restarts and the clip in progress is saved as it is.
                    raise SourceError(f"timestamps jumped by {jump:+.2f} s")
            if frame.pts_s is not None:
                last_pts_s = frame.pts_s
        return Chunk(self.session, pkt, frames, item.admitted), (last_pts_s, last_frame)

    def _clock_step(
        self, source: VideoSource, item: Demuxed, last: float | None
    ) -> tuple[float | None, float | None]:
        """How far the node's wall clock was set since the last packet (None: it was not), and the new offset.

        Only for a live camera stamped on the wall clock: a file waits for the worker between reading a packet
        and noting when it came, and replay runs on stream time.
        """
        if self.feed.lossless or source.opts.clock is not Clock.WALL:
            return None, None
        offset = item.arrival - item.received
        if last is not None and abs(offset - last) > _CLOCK_STEP_S:
            return offset - last, offset
        return None, offset

    def _new_stream(self, reason: str, source: VideoSource) -> None:
        """What follows within this connection is another stream, as after a reconnect (tracks end, clips in
        progress are saved with a note), without losing the connection."""
        log.warning("camera %s: %s; a new stream starts", self.camera, reason)
        self._announce_stop(reason)
        self.session += 1
        self._recent.clear()  # the rate in status is measured on this stream's times, not across a clock step
        self.feed.put(StreamStarted(self.session, source.params, self._rate, source.announced_frames))

    def _delivered(self, frames: list[CapturedFrame]) -> None:
        if self.status.state != CameraState.ONLINE:
            self.backoff.reset()
            if self._online_sessions:
                self._count_reconnect()
            self._online_sessions += 1
            self._set(CameraState.ONLINE, "receiving frames")
        self.status.frames += len(frames)
        self._forget_reconnects(time.time())
        self._recent.extend(f.t for f in frames)
        if len(self._recent) > 1:
            span = self._recent[-1] - self._recent[0]
            self.status.fps = (len(self._recent) - 1) / span if span > 0 else 0.0
        self.status.dropped = self.feed.dropped

    def _count_reconnect(self) -> None:
        now = time.time()
        self._reconnects.append(now)
        self._forget_reconnects(now)

    def _forget_reconnects(self, now: float) -> None:
        """Drop reconnects older than an hour from the count: also while the stream runs and none come, so a
        camera that had a bad hour does not show it for the rest of the day."""
        while self._reconnects and self._reconnects[0] < now - _RECONNECTS_OVER_S:
            self._reconnects.popleft()
        self.status.reconnects_last_hour = len(self._reconnects)

    def _announce_stop(self, reason: str, ended: bool = False) -> None:
        if self.session and self._announced_stop != self.session:
            self.feed.put(StreamStopped(self.session, reason, ended))
            self._announced_stop = self.session

    def _lost(self, reason: str, ended: bool = False) -> None:
        self._announce_stop(reason, ended)
        self._forget_reconnects(time.time())  # also while it stays down: every failed retry comes here
        self.status.fps = 0.0
        state = CameraState.ENDED if ended else CameraState.OFFLINE
        if self.status.state != state or self.status.reason != reason:
            if not ended:
                log.warning("camera %s (%s) offline: %s", self.camera, redact(self.url), reason)
            self._set(state, reason)

    def _set(self, state: CameraState, reason: str) -> None:
        self.status.state, self.status.reason, self.status.since = state, reason, time.time()
        if self.on_status:
            self.on_status(self.camera, self.status)
