"""An event's original clip, written packet by packet as the camera sent them, so a crash loses almost nothing.

`OriginalClip` takes the camera's compressed packets one at a time (the pre-roll from the ring at once, then
live ones) and puts each on disk as it comes: a process killed at any moment leaves a partial file that
decodes up to the packet it was writing, and `recover_partial` finalises it on the next start.

Where the packets go, unchanged:
- H.264/H.265 in Annex B (RTSP cameras, and files: `VideoSource` turns mp4's length-prefixed packets
  into Annex B) go into MPEG-TS, `original.ts`. TS is a run of 188-byte packets with no index: a file cut
  anywhere reads up to the cut. H.222 wants an access unit delimiter before each picture, so the TS
  muxer puts one (6 bytes) in front of a packet that has none, and the parameter sets from the stream
  header in front of a keyframe that lacks them; every NAL unit of the camera's is kept byte for byte.
- Every other codec Matroska can carry (MJPEG from USB cameras, length-prefixed H.264/H.265, MPEG-4,
  VP8/9, AV1, ...) goes into Matroska, `original.mkv`, packets stored byte for byte. Matroska is written
  one cluster per packet here, and a cut file reads up to its last whole cluster.
- A codec neither can carry (H.263, MxPEG, ...) is decoded and re-encoded to H.264 (libx264, CRF 18,
  no frame held back by the encoder) in MPEG-TS; the result says `Made.REENCODE` so the manifest can say
  the clip is not the camera's own bytes, and the file's service name says so too.

Why MJPEG got no evidence before: `remux()` made its stream with `out.add_stream(codec)`, which builds an
*encoder* context; PyAV opens every stream's encoder when the first packet is muxed, and FFmpeg's MJPEG
encoder refuses the default limited-range yuv420p ("Non full-range YUV is non-standard", EINVAL from
avcodec_open2). Even opened, it would have gone into MPEG-TS, which has no stream type for MJPEG and
writes it as private data no player reads back. Here the stream copies a codec context from a template
that is never opened (`add_stream_from_template`, PyAV >= 14; written against PyAV 18), and MJPEG goes
into Matroska. `add_mux_stream` (PyAV 16+) opens no codec either, but cannot set extradata, which
RTSP H.264 (parameter sets only in the SDP) and length-prefixed H.264 need.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path

import av

from edge.capture.packets import KeptPacket, StreamParams
from edge.publish.manifest import fsync_dir

log = logging.getLogger(__name__)

# fsync at most this often (seconds of wall time, checked as packets arrive). A killed process loses
# nothing that was written (the page cache outlives it); fsync only matters for a power cut, which then
# loses at most this much of the clip. An SD card takes 10-50 ms per fsync, so twice a second per clip
# costs little, where once per packet (every MJPEG packet is a keyframe, 30 a second) would not.
FSYNC_INTERVAL_S = 0.5

# Re-encoding when nothing carries the packets as they are: CRF 18 is visually lossless for H.264,
# "veryfast" keeps a 2-core node up with a USB camera, "zerolatency" holds no frame back in the encoder,
# so each frame reaches the disk as soon as its packet arrived.
REENCODE_OPTIONS = {"crf": "18", "preset": "veryfast", "tune": "zerolatency"}

_ANNEX_B_IN_TS = {"h264", "hevc"}


class Made(StrEnum):
    """How the clip was made from the camera's packets."""

    REMUX = "remux"  # the camera's packets, byte for byte, in a new container
    REENCODE = "reencode"  # decoded and encoded again: no container could carry the packets as they are
    UNKNOWN = "unknown"  # closed just before a crash, before its manifest said how


@dataclass(frozen=True)
class OriginalResult:
    """A finished original clip: `name` inside its folder, and what went into it."""

    name: str
    made: Made
    codec: str  # codec of the file's packets ("h264" after re-encoding)
    source_codec: str  # the camera's codec
    packets: int  # camera packets written (re-encoding: taken in)
    dropped: int  # camera packets left out: timestamps going backwards, or refused by the muxer/decoder
    first_t: float | None  # capture times of the first and last packet written
    last_t: float | None
    recovered: bool = False  # finalised after a crash; last_t is then estimated from the timestamps


@dataclass(frozen=True)
class _Plan:
    made: Made
    fmt: str
    suffix: str
    codec: str


def _partial(folder: Path, stem: str, suffix: str) -> Path:
    return folder / f".{stem}-partial{suffix}"


def _sidecar(folder: Path, stem: str) -> Path:
    return folder / f".{stem}-partial.json"


def _copy_stream(out: av.container.OutputContainer, params: StreamParams) -> av.video.stream.VideoStream:
    """A stream that takes `params`' packets as they are: its codec context comes from a template and is
    never opened (an `add_stream` encoder would be opened at the first packet, see the module docstring)."""
    scratch = av.open(io.BytesIO(), "w", format=out.format.name)
    try:
        template = scratch.add_stream(params.codec)
        stream = out.add_stream_from_template(template, opaque=True)
    finally:
        scratch.close()
    cc = stream.codec_context
    cc.width, cc.height = params.width, params.height
    cc.time_base = params.time_base
    stream.time_base = params.time_base
    if params.rate:
        cc.framerate = params.rate
    if params.extradata:
        cc.extradata = params.extradata
    return stream


def _can_copy(fmt: str, params: StreamParams) -> bool:
    """Whether `fmt` takes these packets unchanged: set the stream up and write a header in memory."""
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as out:
            _copy_stream(out, params)
            out.start_encoding()
        return True
    except (av.error.FFmpegError, ValueError, LookupError) as exc:
        log.debug("%s cannot carry %s packets: %s", fmt, params.codec, exc)
        return False


def plan_for(params: StreamParams) -> _Plan:
    """Where these packets go: MPEG-TS for Annex B H.264/H.265, else Matroska, else re-encoded to H.264."""
    if params.codec == "rawvideo":
        # Uncompressed frames (a USB camera in YUYV) are only bytes without their pixel format, which
        # StreamParams does not keep: neither a container nor a decoder could read them right.
        raise ValueError("rawvideo packets need their pixel format, which StreamParams does not keep")
    if params.codec in _ANNEX_B_IN_TS and not params.length_prefixed and _can_copy("mpegts", params):
        return _Plan(Made.REMUX, "mpegts", ".ts", params.codec)
    if _can_copy("matroska", params):
        return _Plan(Made.REMUX, "matroska", ".mkv", params.codec)
    return _Plan(Made.REENCODE, "mpegts", ".ts", "h264")


class OriginalClip:
    """Writes one event's original clip as its packets arrive; `close()` makes it final and read-only.

    The file is `.<stem>-partial.<ext>` until `close()` renames it `<stem>.<ext>` (0o444). Packets of
    another stream (codec or size changed mid-clip) end the clip: they and all after them are ignored,
    and `ended` turns True. A packet whose timestamps go backwards is dropped and counted. Used by one
    thread at a time. As a context manager it closes on success; on an exception it stops writing and
    leaves the partial file for `recover_partial`.
    """

    def __init__(
        self,
        folder: Path,
        params: StreamParams,
        *,
        stem: str = "original",
        allow_reencode: bool = True,
        replace: bool = False,
    ):
        self.folder = Path(folder)
        self.params = params
        self.stem = stem
        self.plan = plan_for(params)
        if self.plan.made is Made.REENCODE and not allow_reencode:
            raise ValueError(f"no container here carries {params.codec} packets unchanged")
        self.final = self.folder / f"{stem}{self.plan.suffix}"
        if self.final.exists() and not replace:
            raise FileExistsError(f"{self.final} exists: an original is never overwritten")
        self.partial = _partial(self.folder, stem, self.plan.suffix)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.packets = 0
        self.dropped = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.ended = False
        self._last_dts: int | None = None
        self._first_ts: int | None = None
        self._last_sync = time.monotonic()
        self._decoder = None
        self._out_pts: int | None = None
        self._file = open(self.partial, "wb", buffering=0)  # noqa: SIM115 - kept open for the clip's life
        try:
            # flush_packets: FFmpeg's I/O buffer goes to the file after every packet, not every 32 KiB.
            # cluster_size_limit=0: Matroska ends a cluster at every packet (it holds one in memory).
            opts = {"flush_packets": "1"}
            if self.plan.fmt == "matroska":
                opts["cluster_size_limit"] = "0"
            self._out = av.open(self._file, "w", format=self.plan.fmt, container_options=opts)
            if self.plan.made is Made.REMUX:
                self._stream = _copy_stream(self._out, params)
            else:
                self._stream = self._reencoder(params)
            self._out.start_encoding()
        except BaseException:
            self._file.close()
            self.partial.unlink(missing_ok=True)
            raise

    def _reencoder(self, params: StreamParams):
        self._decoder = av.CodecContext.create(params.codec, "r")
        if params.extradata:
            self._decoder.extradata = params.extradata
        self._out.metadata["service_provider"] = "edge"
        self._out.metadata["service_name"] = f"re-encoded from {params.codec}"
        stream = self._out.add_stream("libx264", rate=params.rate or Fraction(25), options=dict(REENCODE_OPTIONS))
        # yuv420p needs even sizes: an odd column or row is dropped by the scaler
        stream.width, stream.height = params.width & ~1, params.height & ~1
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = params.time_base
        stream.time_base = params.time_base
        return stream

    def __enter__(self) -> OriginalClip:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stop()

    def extend(self, packets: list[KeptPacket]) -> int:
        """Append packets in decode order (the pre-roll); returns how many were written."""
        return sum(self.append(p) for p in packets)

    def append(self, kept: KeptPacket) -> bool:
        """Write one packet; False when it was dropped or the clip has ended."""
        if self.ended or self._out is None:
            return False
        if kept.params != self.params:
            self.ended = True  # the stream changed mid-clip: the rest would not decode in this file
            return False
        pts, dts = self._timestamps(kept)
        if (self._last_dts is not None and dts <= self._last_dts) or pts < dts:
            self.dropped += 1
            log.warning("%s: packet at t=%.3f dropped: its timestamp goes backwards", self.partial, kept.t)
            return False
        try:
            if self._decoder is None:
                self._mux_copy(kept, pts, dts)
            else:
                self._reencode(kept, pts, dts)
        except av.error.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise  # the disk, not the packet: the caller must know
            self.dropped += 1
            log.warning("%s: packet at t=%.3f refused (%s)", self.partial, kept.t, exc)
            return False
        if self.first_t is None:
            self.first_t, self._first_ts = kept.t, dts
            self._write_sidecar()
        self._last_dts = dts
        self.last_t = kept.t
        self.packets += 1
        if time.monotonic() - self._last_sync >= FSYNC_INTERVAL_S:
            self.sync()
        return True

    def _timestamps(self, kept: KeptPacket) -> tuple[int, int]:
        """The packet's (pts, dts); a packet without any gets one from its capture time."""
        dts = kept.dts if kept.dts is not None else kept.pts
        if dts is None:
            if self._first_ts is None or self.first_t is None:
                dts = 0
            else:
                dts = self._first_ts + round((kept.t - self.first_t) / self.params.time_base)
        pts = kept.pts if kept.pts is not None else dts
        return pts, dts

    def _mux_copy(self, kept: KeptPacket, pts: int, dts: int) -> None:
        p = kept.to_av()
        p.pts, p.dts = pts, dts
        p.stream = self._stream
        self._out.mux(p)

    def _reencode(self, kept: KeptPacket, pts: int, dts: int) -> None:
        p = kept.to_av()
        p.pts, p.dts = pts, dts
        self._encode(self._decoder.decode(p))

    def _encode(self, frames) -> None:
        st = self._stream
        for frame in frames:
            if frame.pts is None or (self._out_pts is not None and frame.pts <= self._out_pts):
                continue  # the encoder needs rising timestamps; a decoder that gives none is not one we meet
            self._out_pts = frame.pts
            if (frame.width, frame.height, frame.format.name) != (st.width, st.height, "yuv420p"):
                frame = frame.reformat(st.width, st.height, "yuv420p")
            frame.pict_type = av.video.frame.PictureType.NONE
            self._out.mux(st.encode(frame))

    def _write_sidecar(self) -> None:
        """What recovery cannot read back from the file: how it was made and the first capture time."""
        info = {
            "made": str(self.plan.made),
            "codec": self.plan.codec,
            "source_codec": self.params.codec,
            "first_t": self.first_t,
        }
        path = _sidecar(self.folder, self.stem)
        with open(path, "w") as f:
            f.write(json.dumps(info) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def sync(self) -> None:
        """Force what was written to the disk (call it before acknowledging an alert as handled)."""
        if not self._file.closed:
            os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    def _stop(self) -> None:
        """Stop writing and close the file, leaving it partial."""
        if self._out is None:
            return
        try:
            if self._decoder is not None:
                self._encode(self._decoder.decode(None))
                self._out.mux(self._stream.encode(None))
        except av.error.FFmpegError as exc:
            log.warning("%s: flushing the re-encoder failed (%s)", self.partial, exc)
        finally:
            try:
                self._out.close()
            finally:
                self._out = None
                self.sync()
                self._file.close()

    def close(self) -> OriginalResult:
        """Finish the file, rename it to its final name, make it read-only; returns what it holds."""
        self._stop()
        if not self.packets:
            self.partial.unlink(missing_ok=True)
            _sidecar(self.folder, self.stem).unlink(missing_ok=True)
            raise ValueError("no packets to write")
        _finalise(self.partial, self.final)
        _sidecar(self.folder, self.stem).unlink(missing_ok=True)
        return OriginalResult(
            self.final.name,
            self.plan.made,
            self.plan.codec,
            self.params.codec,
            self.packets,
            self.dropped,
            self.first_t,
            self.last_t,
        )


def _finalise(partial: Path, final: Path) -> None:
    os.replace(partial, final)
    final.chmod(0o444)
    fsync_dir(final.parent)  # the rename itself survives a power cut


def recover_partial(folder: Path, stem: str = "original") -> OriginalResult | None:
    """Finalise a partial original left in `folder` by a crash, with what was written; None if there was none.

    The bytes are kept as written: MPEG-TS and Matroska cut anywhere read up to the cut, and a reader
    skips an incomplete last packet. A partial holding no packet (killed before the first one reached the
    disk) is removed. An existing final original is never replaced.
    """
    folder = Path(folder)
    side = _sidecar(folder, stem)
    partials = [p for p in folder.glob(f".{stem}-partial.*") if p != side]
    if not partials:
        for final in folder.glob(f"{stem}.*"):
            if final.stat().st_mode & 0o222:
                final.chmod(0o444)  # killed between the rename and the chmod
        return None
    partial = partials[0]
    final = folder / f"{stem}{partial.suffix}"
    if final.exists():
        log.error("%s: %s already exists; the partial file is left as it is", partial, final.name)
        return None
    info = {}
    if side.exists():
        try:
            info = json.loads(side.read_text())
        except (OSError, ValueError):
            info = {}
    count, first_ts, last_ts, tb, codec = _readable(partial)
    if not count:
        log.warning("%s: no packet reached the disk; removed", partial)
        partial.unlink()
        side.unlink(missing_ok=True)
        return None
    _finalise(partial, final)
    side.unlink(missing_ok=True)
    first_t = info.get("first_t")
    last_t = None
    if first_t is not None and tb is not None:
        last_t = first_t + float((last_ts - first_ts) * tb)
    return OriginalResult(
        final.name,
        Made(info.get("made", Made.REMUX)),
        codec or info.get("codec", ""),
        info.get("source_codec", codec or ""),
        count,
        0,
        first_t,
        last_t,
        recovered=True,
    )


def _readable(path: Path) -> tuple[int, int, int, Fraction | None, str | None]:
    """Packets a reader gets from `path`: (count, first and last dts, time base, codec)."""
    count, first, last = 0, 0, 0
    try:
        with av.open(str(path)) as inp:
            if not inp.streams.video:
                return 0, 0, 0, None, None
            stream = inp.streams.video[0]
            codec = stream.codec_context.name
            tb = Fraction(stream.time_base)
            for p in inp.demux(stream):
                if p.size == 0:
                    continue
                ts = p.dts if p.dts is not None else p.pts
                if ts is not None:
                    first = ts if count == 0 else first
                    last = max(last, ts)
                count += 1
    except av.error.FFmpegError as exc:
        log.warning("%s: read up to %d packets (%s)", path, count, exc)
        if not count:
            return 0, 0, 0, None, None
    return count, first, last, tb, codec
