"""Image pixels <-> metres on the facade plane, and the floor a height belongs to."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FacadeMap:
    """A plane homography from image pixels to facade metres [along, up], plus the storey layout."""

    image_to_facade: np.ndarray
    facade_to_image: np.ndarray
    floor_height_m: float
    ground_floor: int
    top_m: float | None = None  # roof height, when the top floor is known
    extent_m: tuple[float, float] | None = None
    margin_m: float = 2.0

    @classmethod
    def from_points(cls, image_pts, facade_pts, floor_height_m: float, ground_floor: int) -> FacadeMap:
        """Fit the homography; raises ValueError when the points do not span a plane."""
        img = np.asarray(image_pts, dtype=np.float64)
        fac = np.asarray(facade_pts, dtype=np.float64)
        if len(img) < 4 or _collinear(img) or _collinear(fac):
            raise ValueError("facade points must include 4 that are not on one line, in image and on facade")
        h, _ = cv2.findHomography(img, fac, 0)
        if h is None or not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
            raise ValueError("facade points do not give a usable homography")
        return cls(h, np.linalg.inv(h), floor_height_m, ground_floor)

    def scaled(self, scale: float) -> FacadeMap:
        """The same map for an image resized by `scale` (work resolution)."""
        s = np.diag([1.0 / scale, 1.0 / scale, 1.0])
        h = self.image_to_facade @ s
        return FacadeMap(
            h, np.linalg.inv(h), self.floor_height_m, self.ground_floor, self.top_m, self.extent_m, self.margin_m
        )

    def to_facade(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 2) facade metres [along, up]."""
        return _apply(self.image_to_facade, xy)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) facade metres -> (N, 2) pixels."""
        return _apply(self.facade_to_image, xy)

    def metres_per_pixel(self, xy: tuple[float, float]) -> float:
        """Local scale near a pixel: how many facade metres one pixel spans vertically."""
        pts = np.array([[xy[0], xy[1]], [xy[0], xy[1] + 1.0]])
        f = self.to_facade(pts)
        return float(np.hypot(*(f[1] - f[0])))

    def outside(self, along_m: float, height_m: float) -> bool:
        """True when a point is off the facade: above the roof or beyond its ends (when those are known)."""
        if self.top_m is not None and height_m > self.top_m + self.margin_m:
            return True
        if self.extent_m is not None:
            lo, hi = self.extent_m
            return not lo - self.margin_m <= along_m <= hi + self.margin_m
        return False

    def floor_at(self, height_m: float) -> int:
        """Number of the floor whose storey contains `height_m` above ground."""
        return self.ground_floor + math.floor(height_m / self.floor_height_m)


def _apply(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(pts, h).reshape(-1, 2)


def _collinear(pts: np.ndarray) -> bool:
    centred = pts - pts.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    return sv[1] < 1e-6 * max(sv[0], 1e-9)
