"""A camera's geometry at the frame size it sends: image pixels <-> facade metres, floors, and the masks.

Built once per camera and frame size; detection and evidence both take it from here, so a calibration is
fitted once and a resolution change rescales it in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge.config import CameraConfig

_ASPECT_TOLERANCE = 0.01  # a calibration scales to a frame of the same shape; beyond 1% it is another view


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
        return float(self.metres_per_pixel_at(np.array([xy], np.float64))[0])

    def metres_per_pixel_at(self, xy: np.ndarray) -> np.ndarray:
        """metres_per_pixel at (N, 2) pixels at once."""
        down = self.to_facade(xy + [0.0, 1.0]) - self.to_facade(xy)
        return np.hypot(down[:, 0], down[:, 1])

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


Polygon = list[tuple[float, float]]


@dataclass(frozen=True)
class CameraGeometry:
    """The facade map at this frame size (None when uncalibrated or unusable) and the masks (0..1 polygons)."""

    frame_size: tuple[int, int]
    facade: FacadeMap | None
    shield: list[Polygon] = field(default_factory=list)
    privacy: list[Polygon] = field(default_factory=list)
    problem: str | None = None  # why a calibration that exists cannot be used at this frame size

    @classmethod
    def build(
        cls, cfg: CameraConfig, frame_size: tuple[int, int], measured_at: tuple[int, int] | None = None
    ) -> CameraGeometry:
        """The geometry for frames of `frame_size`; the calibration is scaled from the size it was measured at.

        That size is the facade's `image_size` or, when the config does not say, `measured_at` (the first
        frame size the camera sent).
        """
        shield = [p.points for p in cfg.masks.shield]
        privacy = [p.points for p in cfg.masks.privacy]
        if cfg.facade is None:
            return cls(frame_size, None, shield, privacy)
        f = cfg.facade
        source = f.image_size or measured_at or frame_size
        sx, sy = frame_size[0] / source[0], frame_size[1] / source[1]
        if abs(sx / sy - 1.0) > _ASPECT_TOLERANCE:
            problem = (
                f"the facade calibration was measured on {source[0]}x{source[1]} images and the camera now sends "
                f"{frame_size[0]}x{frame_size[1]}, another shape: no floors until it is calibrated again"
            )
            return cls(frame_size, None, shield, privacy, problem)
        base = FacadeMap.from_points(
            [(x * sx, y * sy) for x, y in (p.image for p in f.points)],
            [p.facade for p in f.points],
            f.floor_height_m,
            f.ground_floor,
        )
        top = (f.top_floor - f.ground_floor + 1) * f.floor_height_m if f.top_floor is not None else None
        facade = replace(base, top_m=top, extent_m=f.extent_m, margin_m=f.outside_margin_m)
        return cls(frame_size, facade, shield, privacy)


def polygons_mask(shape: tuple[int, int], polygons: list[Polygon]) -> np.ndarray | None:
    """A uint8 mask (255 inside) of polygons given in 0..1 coordinates, or None when there are none."""
    if not polygons:
        return None
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    for poly in polygons:
        pts = np.array([[x * w, y * h] for x, y in poly], np.float32).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return mask
