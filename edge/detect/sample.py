"""What the learned verifier looks at: crops around a track's object, frame by frame, as contrast over noise.

Physics judges a track by its path; the verifier judges what the moving thing looks like along it. Each
time a track is detected, the crop of the frame around its blob is kept (a slice copy, cheap enough for
every track). When the track is judged, its last `SAMPLE_FRAMES` crops become one sample: each pixel's
difference from the running background in multiples of its own motion threshold, so the same object looks
the same by day and by night, under IR grain or in rain, whatever the exposure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

# A track's last detections per sample: a third of a second at 25 fps when it is seen in every frame
# (missed frames stretch it), enough for a bird's wingbeat, a leaf's flutter, a streak's shape.
SAMPLE_FRAMES = 8
SAMPLE_PX = 48  # crop side in work pixels: the longest blur streak of a fall near the camera, with context
# Contrast beyond this many thresholds carries no more information on what the thing is, only how bright.
CONTRAST_CAP = 16.0
_LOG_CAP = float(np.log1p(CONTRAST_CAP))


@dataclass(frozen=True)
class Crop:
    """The frame around one detection, cut at (x0, y0) in work pixels."""

    x0: int
    y0: int
    pixels: np.ndarray  # uint8, SAMPLE_PX x SAMPLE_PX


def crop_at(image: np.ndarray, x: float, y: float) -> Crop:
    """The SAMPLE_PX square of `image` centred on (x, y), moved inside the frame where it would leave it."""
    h, w = image.shape
    x0 = int(min(max(round(x) - SAMPLE_PX // 2, 0), max(w - SAMPLE_PX, 0)))
    y0 = int(min(max(round(y) - SAMPLE_PX // 2, 0), max(h - SAMPLE_PX, 0)))
    pixels = np.zeros((SAMPLE_PX, SAMPLE_PX), np.uint8)
    part = image[y0 : y0 + SAMPLE_PX, x0 : x0 + SAMPLE_PX]
    pixels[: part.shape[0], : part.shape[1]] = part
    return Crop(x0, y0, pixels)


def contrast(crop: Crop, background: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """The crop's difference from `background` over each pixel's `threshold`, log-compressed to [-1, 1]."""
    bg = np.zeros((SAMPLE_PX, SAMPLE_PX), np.float32)
    thr = np.ones((SAMPLE_PX, SAMPLE_PX), np.float32)
    part = background[crop.y0 : crop.y0 + SAMPLE_PX, crop.x0 : crop.x0 + SAMPLE_PX]
    bg[: part.shape[0], : part.shape[1]] = part
    thr[: part.shape[0], : part.shape[1]] = threshold[crop.y0 : crop.y0 + SAMPLE_PX, crop.x0 : crop.x0 + SAMPLE_PX]
    z = (crop.pixels.astype(np.float32) - bg) / np.maximum(thr, 1.0)
    return np.sign(z) * np.log1p(np.minimum(np.abs(z), CONTRAST_CAP)) / _LOG_CAP


class TrackCrops:
    """The last SAMPLE_FRAMES crops of each live track, keyed by track id."""

    def __init__(self) -> None:
        self._crops: dict[int, deque[Crop]] = {}

    def add(self, track_id: int, image: np.ndarray, x: float, y: float) -> None:
        """Keep the crop around the track's detection in this frame."""
        crops = self._crops.get(track_id)
        if crops is None:
            crops = self._crops[track_id] = deque(maxlen=SAMPLE_FRAMES)
        crops.append(crop_at(image, x, y))

    def drop(self, track_id: int) -> None:
        """Forget an ended track."""
        self._crops.pop(track_id, None)

    def sample(self, track_id: int, background: np.ndarray, threshold: np.ndarray) -> np.ndarray:
        """(SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX) float32, oldest first; frames before the first crop are zero.

        The background and thresholds of now serve the older crops too: both change by a few percent a frame.
        """
        out = np.zeros((SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX), np.float32)
        crops = self._crops.get(track_id, ())
        for i, crop in enumerate(crops, start=SAMPLE_FRAMES - len(crops)):
            out[i] = contrast(crop, background, threshold)
        return out

    def __len__(self) -> int:
        return len(self._crops)
