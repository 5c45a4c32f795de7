"""Video files through PyAV: an H.264 writer and a reader that yields the luma plane without conversion."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

EX_DATAERR = 65
EX_NOINPUT = 66


class VideoError(Exception):
    """A video that cannot be opened or decoded; `code` is the exit status to use."""

    def __init__(self, message: str, code: int = EX_DATAERR):
        super().__init__(message)
        self.code = code


class H264Writer:
    """Writes BGR frames to an H.264 mp4 (yuv420p, libx264)."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        crf: int = 23,
        preset: str = "veryfast",
        gop: int | None = None,
        bitrate_kbps: int | None = None,
        threads: int | None = None,
    ):
        self.container = av.open(str(path), "w", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        options = {"preset": preset, "g": str(gop or round(fps * 2))}
        if bitrate_kbps:  # a camera streams at a set bitrate, and starves detail when the scene is busy
            self.stream.bit_rate = bitrate_kbps * 1000
        else:
            options["crf"] = str(crf)
        self.stream.options = options
        if threads:  # x264's output depends on its thread count: fix it where a file must repeat exactly
            self.stream.codec_context.thread_count = threads

    def write(self, bgr: np.ndarray) -> None:
        """Append one frame."""
        frame = av.VideoFrame.from_ndarray(bgr[: self.stream.height, : self.stream.width], format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane of a decoded frame as a (h, w) uint8 array, without a colour conversion."""
    if frame.format.name not in (
        "yuv420p",
        "yuvj420p",
        "yuv422p",
        "yuvj422p",
        "yuv444p",
        "yuvj444p",
        "nv12",
        "gray",
    ):
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : frame.width]


def luma_frames(video: Path) -> Iterator[np.ndarray]:
    """Luma planes of a video file, as the node's decoder hands them to detection (offline tools)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield luma_plane(frame)


def check_readable(path: str | Path) -> Path:
    """The path, if it is an existing regular file; raises VideoError otherwise."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video file not found: {p}", EX_NOINPUT)
    if p.is_dir():
        raise VideoError(f"{p} is a directory, not a video file", EX_NOINPUT)
    if p.stat().st_size == 0:
        raise VideoError(f"{p} is empty", EX_DATAERR)
    return p
