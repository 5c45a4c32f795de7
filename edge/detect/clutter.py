"""Where clutter is: a coarse map of how many blobs no established track explains, per cell, over the last second.

A track's score weighs each detection against the chance that clutter put a blob there. One density for the
whole frame counts the insects round a lamp, or a tree's crown, against an object falling past a dark wall
far from them; and a track among them is taken for likelier than it is. The map holds the density near each
place instead, smoothed over neighbouring cells and recent frames.
"""

from __future__ import annotations

import cv2
import numpy as np

_CELL_FRAC = 1 / 12  # cells about a twelfth of the frame's height: a few floors of facade each
_MEMORY_S = 1.0  # the map averages about this long: a cell sees a blob in a few frames of a second at most
_FLOOR_SHARE = 0.25  # never below this share of the frame's density: a quiet cell's short count is no proof


class ClutterMap:
    """Blobs per pixel per frame near each place, averaged over neighbouring cells and the last `_MEMORY_S`."""

    def __init__(self, frame_size: tuple[int, int], fps: float, min_density: float):
        width, height = frame_size
        self.cell = max(1.0, _CELL_FRAC * height)
        self.cols, self.rows = max(1, round(width / self.cell)), max(1, round(height / self.cell))
        self.sx, self.sy = self.cols / width, self.rows / height  # pixels to cells
        self.area = (width / self.cols) * (height / self.rows)
        self.alpha = min(1.0, 1.0 / max(1.0, _MEMORY_S * fps))
        self.min_density = min_density
        self.counts: np.ndarray | None = None  # (rows, cols) blobs per cell per frame, smoothed

    def learn(self, xy: np.ndarray) -> None:
        """Count this frame's clutter blobs, at `xy` (n, 2)."""
        now = np.zeros((self.rows, self.cols), np.float32)
        if len(xy):
            c = np.clip((xy[:, 0] * self.sx).astype(int), 0, self.cols - 1)
            r = np.clip((xy[:, 1] * self.sy).astype(int), 0, self.rows - 1)
            np.add.at(now, (r, c), 1.0)
        now = cv2.blur(now, (3, 3), borderType=cv2.BORDER_REPLICATE)
        if self.counts is None:
            self.counts = now
        else:
            self.counts += self.alpha * (now - self.counts)

    def density(self, x: np.ndarray, y: np.ndarray, frame_density: float) -> np.ndarray:
        """Clutter blobs per pixel near each point (x, y), on a frame with `frame_density` blobs per pixel in all:
        that density itself until a frame was learned."""
        frame_density = max(frame_density, self.min_density)
        if self.counts is None:
            return np.full(len(x), frame_density)
        c = np.clip((np.asarray(x) * self.sx).astype(int), 0, self.cols - 1)
        r = np.clip((np.asarray(y) * self.sy).astype(int), 0, self.rows - 1)
        local = self.counts[r, c].astype(np.float64) / self.area
        return np.maximum(local, max(_FLOOR_SHARE * frame_density, self.min_density))
