"""The last minute of a live camera, kept while the calibration page is open, for "replay the last minute".

The node's own pre-event ring lives in the memory of another process (`edge run`) and it writes no continuous
segments, so the page keeps its own: the camera's compressed packets as they arrive (no decoding, so it costs
the node little CPU), a minute of them from a keyframe, bounded in bytes too. A replay decodes that minute.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import replace

import av

from edge.capture.annexb import AnnexB
from edge.capture.packets import KeptPacket, StreamParams
from edge.capture.source import Clock, SourceError, SourceOptions, VideoSource, redact

MAX_BYTES = 96 * 1024 * 1024  # a 4K main stream at 12 Mbit/s for a minute; a camera sending more keeps less
RETRY_S = 2.0  # a camera that drops the connection is asked again after this long
log = logging.getLogger(__name__)


def is_live(source: str) -> bool:
    """A camera (RTSP or a V4L2 device), not a file: only a camera has a "last minute"."""
    return "://" in source or source.startswith("/dev/video")


class PacketMinute:
    """The newest `seconds` of packets (plus the group of pictures they start in), at most `max_bytes`."""

    def __init__(self, seconds: float, max_bytes: int = MAX_BYTES):
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._packets: deque[KeptPacket] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, pkt: KeptPacket) -> None:
        """Keep a packet; a change of codec or size starts afresh (the old packets do not decode with it)."""
        with self._lock:
            if self._packets and self._packets[-1].params != pkt.params:
                self._drop(len(self._packets))
            if not self._packets and not pkt.keyframe:
                return  # nothing decodes before the first keyframe
            self._packets.append(pkt)
            self._bytes += len(pkt.data)
            oldest = pkt.t - self.seconds
            while self._second_gop_before(oldest) or (self._bytes > self.max_bytes and len(self._packets) > 1):
                self._drop(self._next_keyframe())

    def _next_keyframe(self) -> int:
        """Index of the second keyframe (the start of the next group), or every packet but the newest."""
        for i, p in enumerate(self._packets):
            if i > 0 and p.keyframe:
                return i
        return len(self._packets) - 1

    def _second_gop_before(self, oldest: float) -> bool:
        # The first group may go when the next one still starts before the minute does.
        i = self._next_keyframe()
        return 0 < i < len(self._packets) and self._packets[i].keyframe and self._packets[i].t <= oldest

    def _drop(self, n: int) -> None:
        for _ in range(n):
            self._bytes -= len(self._packets.popleft().data)
        while self._packets and not self._packets[0].keyframe:  # what is left must start at a keyframe
            self._bytes -= len(self._packets.popleft().data)

    def last(self, now: float | None = None) -> list[KeptPacket]:
        """The packets of the minute before `now` (default: the newest packet), from the keyframe before it."""
        with self._lock:
            pkts = list(self._packets)
        if not pkts:
            return []
        end = pkts[-1].t if now is None else now
        start = 0
        for i, p in enumerate(pkts):
            if p.keyframe and p.t <= end - self.seconds:
                start = i
        return [p for p in pkts[start:] if p.t <= end]

    @property
    def nbytes(self) -> int:
        return self._bytes


class MinuteBuffer:
    """A thread reading a live camera's packets into a PacketMinute until stopped; reconnects on failure."""

    def __init__(self, source: str, opts: SourceOptions, seconds: float):
        self.source = source
        self.opts = SourceOptions(**{**opts.__dict__, "clock": Clock.WALL, "realtime": False})
        self.ring = PacketMinute(seconds)
        self.opened_at: float | None = None  # wall time the current connection's first packet arrived
        self.error = ""  # why the camera cannot be read, while it cannot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="calib-minute")

    def start(self) -> MinuteBuffer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except SourceError as exc:
                self.error = f"{redact(self.source)}: {exc}"
                log.info("minute buffer: %s", self.error)
            except Exception as exc:  # odd extradata, a bug: shown on the page, not a silently ended thread
                self.error = f"{redact(self.source)}: {type(exc).__name__}: {exc}"
                log.exception("minute buffer: %s", self.error)
            self._stop.wait(RETRY_S)

    def _read(self) -> None:
        video = VideoSource(self.source, self.opts)
        try:
            params = video.open()
            assert video.stream is not None
            extradata = video.stream.codec_context.extradata
            raw = StreamParams.of(video.stream)
            reframe = None
            if raw.length_prefixed and raw.codec in ("h264", "hevc", "h265"):
                reframe = AnnexB(raw.codec, bytes(extradata))
            for packet, arrival in video.demux():
                if self._stop.is_set():
                    return
                if packet.size == 0:
                    continue
                kept = KeptPacket.of(packet, arrival, params)
                if reframe is not None:
                    kept = replace(kept, data=reframe.convert(kept.data, kept.keyframe))
                if self.opened_at is None:
                    self.opened_at = arrival
                self.error = ""
                self.ring.add(kept)
        finally:
            video.close()


def decoded(packets: list[KeptPacket]):
    """The luma planes of `packets` (one stream, from a keyframe) decoded in order; a bad packet is skipped."""
    from edge.video import luma_plane

    if not packets:
        return
    params = packets[0].params
    decoder = av.CodecContext.create(params.codec, "r")
    if params.extradata:
        decoder.extradata = params.extradata
    for kept in [*packets, None]:
        try:
            frames = decoder.decode(kept.to_av() if kept is not None else None)
        except av.error.FFmpegError as exc:
            log.info("minute buffer: a packet did not decode (%s)", exc)
            continue
        for frame in frames:
            yield luma_plane(frame)
