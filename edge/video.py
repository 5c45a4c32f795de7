"""Video files through PyAV: an H.264 writer and a reader that yields the luma plane without conversion."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    ):
        self.container = av.open(str(path), "w", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": preset, "g": str(gop or round(fps * 2))}

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


@dataclass
class VideoInfo:
    """What a reader knows of a stream before decoding it."""

    width: int
    height: int
    fps: float
    frames: int | None
    codec: str


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


class VideoFile:
    """Decodes a video file frame by frame; raises VideoError with a clear message on bad input."""

    def __init__(self, path: str | Path, fps_hint: float | None = None):
        self.path = check_readable(path)
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"cannot open {self.path} as video: {exc}") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.path} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.base_rate
        fps = float(rate) if rate else (fps_hint or 0.0)
        if fps_hint:
            fps = fps_hint
        if not fps or fps <= 0 or fps > 240:
            raise VideoError(f"{self.path}: frame rate unknown; set the camera's fps in the config")
        cc = self.stream.codec_context
        self.info = VideoInfo(cc.width, cc.height, fps, self.stream.frames or None, cc.name)

    def frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in order; a decoding failure part-way raises VideoError after what was decoded."""
        n = 0
        try:
            for frame in self.container.decode(self.stream):
                n += 1
                yield frame
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: decoding failed after {n} frames: {exc}") from None
        if n == 0:
            raise VideoError(f"{self.path}: no frame could be decoded (truncated or not a video)")
        expected = self.info.frames
        if expected and n < expected * 0.98 - 2:
            raise VideoError(f"{self.path}: truncated: the file announces {expected} frames, {n} could be decoded")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
