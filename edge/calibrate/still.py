"""A still to calibrate on: an image file, a frame of a video file, or the current frame of a camera."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from edge.calibrate.yamlio import write_like
from edge.capture.source import SourceError, SourceOptions, VideoSource, redact

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PACKETS = 600  # a camera sends a keyframe at least every 10 s at 60 packets per second: give up after


class StillError(Exception):
    """No still could be taken; the message says why (a missing file, an offline camera, not a picture)."""

    def __init__(self, message: str, offline: bool = False):
        super().__init__(message)
        self.offline = offline


@dataclass
class Still:
    image: np.ndarray  # BGR
    source: str  # where it came from, passwords removed
    taken_utc: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def jpeg_cut_short(data: bytes) -> bool:
    """Whether a JPEG ends before its end-of-image marker. libjpeg decodes such a file without an error, its
    missing rows grey, and a grey band above the storeys is read as sky (a roof proposed floors too low).
    Bytes after the marker (a phone's trailer) are allowed; a structure not understood is left to the decoder."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xD9:  # end of image
            return False
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return True
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker that is not a restart
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return True
                if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7:
                    i = j + 2
                    continue
                i = j
                break
    return True


def read_image(path: Path) -> np.ndarray:
    """An image file as BGR; StillError when it is missing, not an image, or a JPEG cut short."""
    if not path.is_file():
        raise StillError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            cut = jpeg_cut_short(f.read())
    except OSError as exc:
        raise StillError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if cut:
        raise StillError(f"{path}: the JPEG is cut short (copy the whole file again)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StillError(f"{path}: not an image OpenCV can read (JPEG, PNG, BMP, WebP, TIFF)")
    return image


def take_still(source: str, opts: SourceOptions | None = None) -> Still:
    """The first picture of an image file, a video file, a /dev/video device or an RTSP camera."""
    p = Path(source)
    if "://" not in source and p.suffix.lower() in IMAGE_SUFFIXES:
        return Still(read_image(p), str(p), _now())
    if "://" not in source and not source.startswith("/dev/video") and not p.is_file():
        raise StillError(f"{source}: no such file")
    live = "://" in source or source.startswith("/dev/video")
    video = VideoSource(source, opts or SourceOptions())
    try:
        video.open()
        assert video.container is not None and video.stream is not None
        for n, packet in enumerate(video.container.demux(video.stream)):
            for frame in packet.decode():
                return Still(frame.to_ndarray(format="bgr24"), redact(source), _now())
            if n > MAX_PACKETS:
                break
        raise StillError(f"{redact(source)}: no picture could be decoded from it", offline=live)
    except (SourceError, av.error.FFmpegError, OSError) as exc:
        what = "the camera is offline or unreachable" if live else "cannot be read as a video"
        raise StillError(f"{redact(source)}: {what} ({exc})", offline=live) from None
    finally:
        video.close()


def reference_paths(config: Path, camera: str) -> tuple[Path, Path]:
    """Where a camera's reference still and its description live: next to the config."""
    stem = f"{config.stem}.{camera}.reference"
    return config.with_name(stem + ".jpg"), config.with_name(stem + ".json")


REFERENCE_JPEG_QUALITY = 95  # the camera-moved check compares features: keep them, at a tenth of a PNG's size


def store_reference(config: Path, camera: str, still: Still, facade: dict) -> Path:
    """Write the still the calibration was made on, and what it is, beside the config (and as private)."""
    jpg, meta = reference_paths(config, camera)
    like = config.stat()
    ok, data = cv2.imencode(".jpg", still.image, [cv2.IMWRITE_JPEG_QUALITY, REFERENCE_JPEG_QUALITY])
    if not ok:
        raise StillError("the still could not be encoded as JPEG")
    write_like(jpg, data.tobytes(), like)
    h, w = still.image.shape[:2]
    info = {
        "camera": camera,
        "config": config.name,
        "source": still.source,
        "taken_utc": still.taken_utc,
        "saved_utc": _now(),
        "image_size": [w, h],
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "facade": facade,
    }
    write_like(meta, (json.dumps(info, indent=1, ensure_ascii=False) + "\n").encode("utf-8"), like)
    return jpg
