"""A pinhole camera at the foot of a building, looking up its facade (world: X along, Y up, Z out)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PinholeCamera:
    """Projects world points (metres) into image pixels."""

    width: int
    height: int
    hfov_deg: float
    position: tuple[float, float, float]
    pitch_deg: float
    yaw_deg: float = 0.0

    def __post_init__(self) -> None:
        self.f = self.width / 2 / math.tan(math.radians(self.hfov_deg) / 2)
        p, y = math.radians(self.pitch_deg), math.radians(self.yaw_deg)
        self.forward = np.array([math.sin(y) * math.cos(p), math.sin(p), -math.cos(y) * math.cos(p)])
        self.right = np.array([math.cos(y), 0.0, math.sin(y)])
        self.up = np.cross(self.right, self.forward)

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> (N, 2) pixels and (N,) depth along the optical axis."""
        d = np.atleast_2d(pts) - np.asarray(self.position)
        z = d @ self.forward
        u = self.width / 2 + self.f * (d @ self.right) / z
        v = self.height / 2 - self.f * (d @ self.up) / z
        return np.stack([u, v], axis=1), z

    def facade_homography(self) -> np.ndarray:
        """Homography from facade metres [X, Y] (the plane Z = 0) to image pixels."""
        fac = np.array([[0.0, 0.0], [30.0, 0.0], [30.0, 60.0], [0.0, 60.0]])
        img, _ = self.project(np.column_stack([fac, np.zeros(4)]))
        return cv2.getPerspectiveTransform(fac.astype(np.float32), img.astype(np.float32))

    @classmethod
    def looking_up(
        cls,
        width: int,
        height: int,
        hfov_deg: float,
        distance_m: float,
        x_m: float,
        top_m: float,
        roof_at: float = 0.12,
        yaw_deg: float = 0.0,
    ) -> PinholeCamera:
        """A camera `distance_m` from the facade, tilted so the roof line sits `roof_at` below the top."""
        vfov = 2 * math.atan(math.tan(math.radians(hfov_deg) / 2) * height / width)
        to_roof = math.atan2(top_m - 1.5, distance_m)
        off = math.atan((0.5 - roof_at) * 2 * math.tan(vfov / 2))
        return cls(width, height, hfov_deg, (x_m, 1.5, distance_m), math.degrees(to_roof - off), yaw_deg)
