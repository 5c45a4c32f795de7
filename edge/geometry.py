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
_HFOV_DEG = (10.0, 140.0)  # fields of view a pose may have: beyond, the calibration is too flat to tell
_DISTANCE_M = (5.0, 500.0)  # how far from the facade a pose may put the camera (closer sees too little)
_MAX_OUT_SHARE = 0.5  # points are brought out from the wall by less than this share of the camera's distance


@dataclass(frozen=True)
class CameraPose:
    """Where the camera stands, in facade metres: along the wall, up, and out from it (`distance_m` > 0)."""

    along_m: float
    up_m: float
    distance_m: float

    def in_front(self, along_m: float, up_m: float, out_m: float) -> tuple[float, float]:
        """The point `out_m` in front of the wall that covers facade point (along_m, up_m) from the camera.

        Seen from below, an object in front of the wall hides a wall point higher (and further aside) than
        itself: it lies on the ray from the camera to that point, `out_m` short of the wall.
        """
        k = 1.0 - out_m / self.distance_m
        return self.along_m + (along_m - self.along_m) * k, self.up_m + (up_m - self.up_m) * k

    def on_wall(self, along_m: float, up_m: float, out_m: float) -> tuple[float, float]:
        """The wall point hidden by the point `out_m` in front of the wall at (along_m, up_m): in_front undone."""
        k = 1.0 - out_m / self.distance_m
        return self.along_m + (along_m - self.along_m) / k, self.up_m + (up_m - self.up_m) / k

    def out_from_wall(self, up_m: float, seen_up_m: float) -> float | None:
        """How far in front of the wall a point at height `up_m` is when it hides wall height `seen_up_m`.

        None at the camera's own height, where every distance out hides the same wall point.
        """
        if abs(seen_up_m - self.up_m) < 1e-6:
            return None
        return self.distance_m * (1.0 - (up_m - self.up_m) / (seen_up_m - self.up_m))


def camera_pose(facade_to_image: np.ndarray, frame_size: tuple[int, int]) -> CameraPose | None:
    """The camera's pose from a facade homography, for square pixels and the principal point at the centre.

    The homography is K [r1 r2 t] up to scale (Zhang 2000): r1 and r2 orthogonal and of one length give the
    focal length, then the rest. None when the calibration has too little perspective to tell (a facade
    seen straight on, an affine map) or the pose is implausible.
    """
    w, h = frame_size
    centre = np.array([[1.0, 0.0, -(w - 1) / 2], [0.0, 1.0, -(h - 1) / 2], [0.0, 0.0, 1.0]])
    a, b, c = (centre @ facade_to_image).T
    # Both constraints are linear in 1/f^2: solved together in least squares.
    lhs = np.array([a[0] * b[0] + a[1] * b[1], a[0] ** 2 + a[1] ** 2 - b[0] ** 2 - b[1] ** 2])
    rhs = -np.array([a[2] * b[2], a[2] ** 2 - b[2] ** 2])
    inv_f2 = float(lhs @ rhs) / max(float(lhs @ lhs), 1e-300)
    if not inv_f2 > 0.0:
        return None
    f = inv_f2**-0.5
    hfov = math.degrees(2 * math.atan(w / (2 * f)))
    if not _HFOV_DEG[0] <= hfov <= _HFOV_DEG[1]:
        return None
    k_inv = np.diag([1.0 / f, 1.0 / f, 1.0])
    r1, r2, t = k_inv @ a, k_inv @ b, k_inv @ c
    scale = 2.0 / (np.linalg.norm(r1) + np.linalg.norm(r2))
    r1, r2, t = r1 * scale, r2 * scale, t * scale
    rotation = np.column_stack([r1, r2, np.cross(r1, r2)])
    along, up, out = -rotation.T @ t
    distance = abs(float(out))  # the homography's overall sign is unknown: it flips `out` alone
    if not _DISTANCE_M[0] <= distance <= _DISTANCE_M[1]:
        return None
    return CameraPose(float(along), float(up), distance)


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
    camera: CameraPose | None = None  # where the camera stands, when the calibration tells (camera_pose)

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
        return replace(self, image_to_facade=h, facade_to_image=np.linalg.inv(h))

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

    def brings_out(self, out_m: float) -> bool:
        """Whether points are brought `out_m` out from the wall (wall_behind): the calibration tells the
        camera's pose, and `out_m` is more than 0 and well short of the camera (a ray's length ahead of it,
        the correction would grow without bound)."""
        return self.camera is not None and 0 < out_m < _MAX_OUT_SHARE * self.camera.distance_m

    def wall_behind(self, along_m: float, up_m: float, out_m: float) -> tuple[float, float]:
        """The wall point directly behind the point `out_m` in front of the wall that hides facade point
        (along_m, up_m); the facade point unchanged where points are not brought out (brings_out)."""
        if not self.brings_out(out_m):
            return along_m, up_m
        return self.camera.in_front(along_m, up_m, out_m)

    def in_front(self, along_m: np.ndarray, up_m: np.ndarray, out_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where objects are that hide facade points (along_m, up_m), each `out_m` in front of the wall.

        For the points of one track, whose release is brought out (brings_out): a later point further out
        than half the camera's distance is held at that bound rather than put back on the wall as
        wall_behind would, so one track is never split between the two. Unchanged without a pose.
        """
        if self.camera is None:
            return along_m, up_m
        out = np.clip(out_m, 0.0, _MAX_OUT_SHARE * self.camera.distance_m)
        return self.camera.in_front(along_m, up_m, out)

    def on_wall(self, along_m: float, up_m: float, out_m: float) -> tuple[float, float]:
        """The facade point hidden by an object `out_m` in front of the wall at (along_m, up_m): wall_behind
        undone; unchanged where points are not brought out."""
        if not self.brings_out(out_m):
            return along_m, up_m
        return self.camera.on_wall(along_m, up_m, out_m)

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
        pose = camera_pose(base.facade_to_image, frame_size)
        facade = replace(base, top_m=top, extent_m=f.extent_m, margin_m=f.outside_margin_m, camera=pose)
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
