"""One video source through PyAV: an RTSP URL, a /dev/video device or a file.

It yields each compressed packet (for evidence) with the frames decoded from it (luma plane only).
"""

from __future__ import annotations

import contextlib
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum

import av
import numpy as np

from edge.capture.annexb import AnnexB
from edge.capture.packets import KeptPacket, StreamParams
from edge.logs import SECRET_WORDS
from edge.video import luma_plane


class SourceError(Exception):
    """The source could not be opened or read; the message says why, for the camera status."""


class StreamEnded(SourceError):
    """The source came to its end: normal for a file, a failure for a camera."""


_MAX_LATENESS_S = 3.0  # frames stamped later than this behind their arrival: the camera's clock drifted; re-anchor
# A camera clock that runs slow (its own crystal: 100 ppm is 8.6 s a day) is followed over windows of this
# long: the frame that came soonest in one tells the network's delay, which jitter and bursts only add to.
_DRIFT_WINDOW_S = 60.0
_DRIFT_STEP_S = 0.1  # the soonest frame of a window this much later than the first window's: catch up
# One decoding thread per camera: a node runs several cameras on few cores, so each camera's capture thread
# is parallelism enough (PyAV decodes without the GIL). FFmpeg's default (frame threads, one per core plus
# one) cost 12 MB more per 1080p camera for its extra frames in flight, and more CPU for handing them over.
DECODER_THREADS = 1
# A stream that carries no timestamps at all (raw H.264, a DVR's .264 export) and declares no rate either is
# timed at the rate most cameras send; one that declares its rate is timed at that.
_UNTIMED_FPS = 25.0


@dataclass
class CapturedFrame:
    """A decoded frame: its luma plane, capture time `t` (from the stream's timestamps) and those timestamps."""

    luma: np.ndarray
    t: float
    pts: int | None
    pts_s: float | None


class Clock(StrEnum):
    """What a capture time means."""

    WALL = "wall"  # Unix time: live cameras, and files played as cameras
    STREAM = "stream"  # seconds of stream time: replay


@dataclass
class SourceOptions:
    transport: str = "tcp"
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    clock: Clock = Clock.WALL
    realtime: bool = False  # pace a file at its frame rate, as a camera would deliver it
    probe_s: float = 1.0  # how much stream FFmpeg reads before the first frame; more delays and bursts frames
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock = Clock(self.clock)  # "stream" from a caller is Clock.STREAM, or an error


class StreamClock:
    """Capture times from the stream's own timestamps, so frames that arrive in a burst keep their spacing.

    On the wall clock a stream's first frame is taken to be captured when the connection was opened; a frame
    is never stamped after it arrived, and a camera clock that runs slow is followed: the frame that arrived
    soonest in each _DRIFT_WINDOW_S keeps the delay the first window measured (and never more than
    _MAX_LATENESS_S in between).
    """

    def __init__(self, clock: Clock, opened_at: float):
        self.clock, self.opened_at = Clock(clock), opened_at
        self.anchor: float | None = None
        self.last = 0.0
        self._window: float | None = None  # arrival that began the current window
        self._soonest = float("inf")  # the least lateness seen in it
        self._delay: float | None = None  # the least lateness of the first window: the network's own

    def t(self, pts_s: float | None, arrival: float) -> float:
        if pts_s is None:  # no timestamp: arrival on the wall clock, the last known time on stream time
            self.last = arrival if self.clock is Clock.WALL else self.last
            return self.last
        if self.clock is Clock.STREAM:
            self.last = pts_s
            return pts_s
        if self.anchor is None:
            self.anchor = min(self.opened_at, arrival) - pts_s
        t = self.anchor + pts_s
        if t > arrival:
            self.anchor, t = arrival - pts_s, arrival
        elif arrival - t > _MAX_LATENESS_S:
            self.anchor = arrival - _MAX_LATENESS_S - pts_s
            t = self.anchor + pts_s
        self._follow_drift(arrival, arrival - t)
        self.last = t
        return t

    def _follow_drift(self, arrival: float, lateness: float) -> None:
        self._soonest = min(self._soonest, lateness)
        if self._window is None:
            self._window = arrival
        if arrival - self._window < _DRIFT_WINDOW_S:
            return
        if self._delay is None:
            self._delay = self._soonest
        elif self._soonest - self._delay > _DRIFT_STEP_S:
            self.anchor += self._soonest - self._delay  # from the next frame: a step of about a tenth of a second
        self._window, self._soonest = arrival, float("inf")


_SECRET_PARAM = re.compile(SECRET_WORDS, re.IGNORECASE)


def redact(url: str) -> str:
    """The URL without its passwords, for logs, status and manifests.

    The user info ends at the LAST `@` of the authority, as FFmpeg reads it (a password may hold an `@`);
    `user:password` keeps the user, a lone user info (often a token) is hidden whole. Query parameters whose
    name looks like a secret (password, pwd, token, key, auth, secret, ...) keep their name, not their value.
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        cred, host = authority.rsplit("@", 1)
        authority = f"{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else f"***@{host}"
    if "?" in tail:
        path, query = tail.split("?", 1)
        query, hash_, fragment = query.partition("#")
        query = re.sub(
            r"(^|[&;])([^=&;]*)=([^&;]*)",
            lambda m: f"{m[1]}{m[2]}=***" if _SECRET_PARAM.search(m[2]) else m[0],
            query,
        )
        tail = f"{path}?{query}{hash_}{fragment}"
    return f"{scheme}://{authority}{tail}"


@contextlib.contextmanager
def _ffmpeg_errors(timed_out: str) -> Iterator[None]:
    """FFmpeg's failures as SourceError: `timed_out` when its timeout ended the call, else what it said."""
    try:
        yield
    except av.error.ExitError:
        raise SourceError(timed_out) from None
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(_describe(exc)) from None


class VideoSource:
    """Opens a source and iterates (packet, frames) pairs; raises SourceError on any failure."""

    def __init__(self, url: str, opts: SourceOptions | None = None):
        self.url = url
        self.opts = opts or SourceOptions()
        self.container = None
        self.stream = None
        self.params: StreamParams | None = None
        self._reframe: AnnexB | None = None
        self._opened_at = time.time()

    def open(self) -> StreamParams:
        options = dict(self.opts.extra)
        kwargs = {}
        self._opened_at = time.time()
        if self.url.startswith(("rtsp://", "rtsps://")):
            options.setdefault("rtsp_transport", self.opts.transport)
            # FFmpeg reads 5 s of stream by default before the first frame, then delivers it in one burst.
            options.setdefault("analyzeduration", str(round(self.opts.probe_s * 1e6)))
        if self.url.startswith("/dev/video"):
            kwargs["format"] = "v4l2"
        with _ffmpeg_errors(f"no answer within {self.opts.open_timeout_s:.0f} s"):
            self.container = av.open(
                self.url, options=options, timeout=(self.opts.open_timeout_s, self.opts.read_timeout_s), **kwargs
            )
        if not self.container.streams.video:
            self.close()
            raise SourceError("no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = DECODER_THREADS
        self.params = StreamParams.of(self.stream)
        self._reframe = None
        if self.params.length_prefixed:
            try:
                self._reframe = AnnexB(self.params.codec, self.params.extradata)
                self.params = replace(self.params, extradata=self._reframe.header)
            except (ValueError, IndexError, struct.error):
                pass  # another codec: its packets are kept as they are
        return self.params

    @property
    def announced_frames(self) -> int | None:
        """Frames the container says the stream holds (files), or None."""
        return (self.stream.frames or None) if self.stream is not None else None

    def packets(self) -> Iterator[tuple[KeptPacket | None, list[CapturedFrame]]]:
        """Each packet with the frames it decoded to, until the stream ends (SourceError) or fails.

        At the end of a file the decoder's last frames come with no packet (None).
        """
        for packet, arrival in self.demux():
            yield self.decode(packet, arrival)

    def demux(self) -> Iterator[tuple[av.Packet, float]]:
        """Each compressed packet as read, with the time it arrived; raises SourceError at the end or a failure.

        The last one of a file (no timestamps) flushes the decoder. Reading and decode() may run in two
        threads: then packets wait for the decoder compressed, not as frames.
        """
        assert self.container is not None and self.stream is not None
        self._start_decoding()
        with _ffmpeg_errors(self._stalled()):
            for packet in self.container.demux(self.stream):
                yield packet, time.time()
        raise StreamEnded("stream ended")

    def _start_decoding(self) -> None:
        self._tb = self.stream.time_base
        self._start = time.monotonic()
        self._first_pts: float | None = None
        self._clock = StreamClock(self.opts.clock, self._opened_at)
        self._stamped = False  # a frame with a timestamp has been seen
        self._untimed = 0  # packets that came without any timestamp, timed by their count
        self._packet_timed = False  # a packet with a timestamp has come: an untimed one after it is no raw stream

    def decode(self, packet: av.Packet, arrival: float) -> tuple[KeptPacket | None, list[CapturedFrame]]:
        """A packet from demux(), in order, with the frames it decoded to (None at the final flush)."""
        if packet.pts is not None or packet.dts is not None:
            self._packet_timed = True
        elif packet.size and not self._packet_timed:
            self._time_untimed(packet)
        with _ffmpeg_errors(self._stalled()):
            return self._decode(packet, arrival)

    def _time_untimed(self, packet: av.Packet) -> None:
        """Time a packet of a stream without timestamps by its place in the stream, at its declared rate.

        Else its frames cannot be placed in time (live they were never delivered), and the packet was taken for
        the decoder's final flush and left out of the evidence. In decoding order: exact without B-frames.
        """
        # The rate the stream's own timing says (H.264's VUI): a raw stream's average_rate is FFmpeg's default 25.
        declared = self.stream.codec_context.framerate or self.params.rate
        rate = float(declared) if declared else _UNTIMED_FPS
        packet.pts = packet.dts = round(self._untimed / rate / self._tb)
        self._untimed += 1

    def restamp(self, at: float) -> None:
        """Stamp the frames from here on as a new connection opened at `at` (wall clock) would: the node's
        clock was set, and times from before the step cannot go on in one stream with times after it."""
        self._clock = StreamClock(self.opts.clock, at)

    def _stalled(self) -> str:
        return f"stalled: no data for {self.opts.read_timeout_s:.0f} s"

    def _decode(self, packet: av.Packet, arrival: float) -> tuple[KeptPacket | None, list[CapturedFrame]]:
        tb, clock = self._tb, self._clock
        flush = packet.dts is None and packet.pts is None  # end of stream: the decoder gives back the rest
        frames = []
        for frame in packet.decode():
            pts_s = float(frame.pts * tb) if frame.pts is not None else None
            if pts_s is None and not self._stamped and self.opts.clock is Clock.WALL:
                continue  # RTSP's first frame may come before timing is known: it cannot be placed in time
            self._stamped = self._stamped or pts_s is not None
            seen = arrival
            if self.opts.realtime and pts_s is not None:
                self._first_pts = pts_s if self._first_pts is None else self._first_pts
                delay = (pts_s - self._first_pts) - (time.monotonic() - self._start)
                if delay > 0:
                    time.sleep(delay)
                seen = time.time()  # a file played as a camera: its frames arrive as paced, not as read
            t = clock.t(pts_s, seen)
            frames.append(CapturedFrame(luma_plane(frame).copy(), t, frame.pts, pts_s))
        if flush:
            return None, frames
        self._follow_size()
        stamp = packet.dts if packet.dts is not None else packet.pts  # decode order: never reordered
        pkt_t = clock.t(float(stamp * tb) if stamp is not None else None, arrival)
        kept = KeptPacket.of(packet, pkt_t, self.params)
        if self._reframe is not None:
            kept = replace(kept, data=self._reframe.convert(kept.data, kept.keyframe))
        return kept, frames

    def _follow_size(self) -> None:
        """Keep `params` to the picture size the decoder now reads: a camera can change it within a connection
        (a new SPS after its settings changed), and packets of two sizes cannot share a clip."""
        cc = self.stream.codec_context
        if cc.width and cc.height and (cc.width, cc.height) != (self.params.width, self.params.height):
            self.params = replace(self.params, width=cc.width, height=cc.height)

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(av.error.FFmpegError):
                self.container.close()
            self.container = None


def _describe(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if ": '" in text else text
