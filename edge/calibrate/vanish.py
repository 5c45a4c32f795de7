"""Line segments of a still and the vanishing points of the facade's verticals and horizontals.

Coordinates are normalised (origin at the image centre, half the longer side = 1) so that the homogeneous
arithmetic is well conditioned at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

WORK_WIDTH = 1280  # segments are found on a copy this wide: enough for floor lines, quick on 2 cores
MIN_SEGMENT_FRAC = 0.012  # shorter segments (of the frame's longer side) are texture, not structure
VERTICAL_SPREAD_DEG = 35.0  # a facade's verticals lean at most this much in a camera rolled a few degrees
HORIZONTAL_SPREAD_DEG = 50.0  # horizontals of a yawed facade seen from below slope steeply near the edges
INLIER_DEG = 1.5  # a segment agrees with a vanishing point when it points at it within this angle
RANSAC_ROUNDS = 400  # pairs of segments tried per vanishing point


@dataclass
class Segments:
    """Segments as (N, 4) endpoints x1, y1, x2, y2 in normalised coordinates, and the normalisation."""

    ends: np.ndarray
    centre: tuple[float, float]
    scale: float

    @property
    def mid(self) -> np.ndarray:
        return (self.ends[:, :2] + self.ends[:, 2:]) / 2

    @property
    def length(self) -> np.ndarray:
        return np.hypot(self.ends[:, 2] - self.ends[:, 0], self.ends[:, 3] - self.ends[:, 1])

    def lines(self) -> np.ndarray:
        """(N, 3) homogeneous lines through each segment, (a, b) of unit length."""
        p = np.column_stack([self.ends[:, :2], np.ones(len(self.ends))])
        q = np.column_stack([self.ends[:, 2:], np.ones(len(self.ends))])
        lines = np.cross(p, q)
        return lines / np.maximum(np.hypot(lines[:, 0], lines[:, 1]), 1e-12)[:, None]

    def subset(self, keep: np.ndarray) -> Segments:
        return Segments(self.ends[keep], self.centre, self.scale)

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy) * self.scale + self.centre

    def to_norm(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, np.float64) - self.centre) / self.scale


def find_segments(gray: np.ndarray) -> Segments:
    """LSD segments of a grey image (any size), in normalised coordinates of the full image."""
    h, w = gray.shape
    k = min(1.0, WORK_WIDTH / w)
    small = cv2.resize(gray, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA) if k < 1 else gray
    lsd = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)
    found = lsd.detect(small)[0]
    ends = np.zeros((0, 4)) if found is None else found.reshape(-1, 4).astype(np.float64) / k
    centre, scale = (w / 2, h / 2), max(w, h) / 2
    ends = (ends - np.array([*centre, *centre])) / scale
    seg = Segments(ends, centre, scale)
    return seg.subset(seg.length >= 2 * MIN_SEGMENT_FRAC)


def _angles_from_vertical(seg: Segments) -> np.ndarray:
    d = seg.ends[:, 2:] - seg.ends[:, :2]
    return np.degrees(np.arctan2(np.abs(d[:, 0]), np.abs(d[:, 1])))


def split_families(seg: Segments) -> tuple[Segments, Segments]:
    """Near-vertical and near-horizontal segments."""
    a = _angles_from_vertical(seg)
    return seg.subset(a <= VERTICAL_SPREAD_DEG), seg.subset(a >= 90 - HORIZONTAL_SPREAD_DEG)


def agreement(seg: Segments, vp: np.ndarray) -> np.ndarray:
    """Angle in degrees between each segment and the direction from its midpoint to the point `vp`."""
    d = seg.ends[:, 2:] - seg.ends[:, :2]
    mid = seg.mid
    to_vp = vp[:2][None, :] - mid * vp[2] if abs(vp[2]) > 0 else np.broadcast_to(vp[:2], mid.shape)
    if vp[2] < 0:
        to_vp = -to_vp
    cross = np.abs(d[:, 0] * to_vp[:, 1] - d[:, 1] * to_vp[:, 0])
    dot = np.abs((d * to_vp).sum(axis=1))
    return np.degrees(np.arctan2(cross, dot))


@dataclass
class VanishingPoint:
    point: np.ndarray  # homogeneous, unit length, in normalised coordinates
    inliers: np.ndarray  # boolean mask over the family's segments
    support: float  # summed length of the inliers, in normalised units


def ransac_vp(seg: Segments, rng: np.random.Generator) -> VanishingPoint | None:
    """The point most segments of a family point at (length-weighted), refined by least squares."""
    n = len(seg.ends)
    if n < 4:
        return None
    lines, length = seg.lines(), seg.length
    p = length / length.sum()
    best, best_score = None, 0.0
    for _ in range(RANSAC_ROUNDS):
        i, j = rng.choice(n, 2, replace=False, p=p)
        vp = np.cross(lines[i], lines[j])
        norm = np.linalg.norm(vp)
        if norm < 1e-12:
            continue
        vp = vp / norm
        score = length[agreement(seg, vp) < INLIER_DEG].sum()
        if score > best_score:
            best, best_score = vp, score
    if best is None:
        return None
    for _ in range(3):  # least squares on the inliers: the point closest to all their lines
        inl = agreement(seg, best) < INLIER_DEG
        if inl.sum() < 3:
            break
        a = lines[inl] * np.sqrt(length[inl])[:, None]
        best = np.linalg.svd(a)[2][-1]
    inl = agreement(seg, best) < INLIER_DEG
    return VanishingPoint(best / np.linalg.norm(best), inl, float(length[inl].sum()))


def focal_from_vps(vv: np.ndarray, vh: np.ndarray) -> float | None:
    """Focal length (normalised units) from two orthogonal vanishing points, principal point at the centre."""
    if abs(vv[2]) < 1e-9 or abs(vh[2]) < 1e-9:
        return None  # one at infinity (no yaw, or no tilt): the focal length does not show
    a, b = vv[:2] / vv[2], vh[:2] / vh[2]
    f2 = -float(a @ b)
    return math.sqrt(f2) if f2 > 0 else None


ROW_PIXELS = 6000  # strongest horizontal-edge pixels that vote: thousands even for a far building's rows
ROW_NOISE = 4.0  # their gradient is this many times the still's median one: not sky or wall grain
ROW_SLOPE = 1.2  # and their edge slopes less than about 50 degrees (horizontals of a yawed facade from below)
ROW_TILT_DEG = np.arange(-35.0, 35.1, 1.0)  # slope of the horizontals at the image centre: yaw, tilt, roll
ROW_REACH = np.arange(-0.8, 0.81, 0.04)  # 1 / the vanishing point's distance from the centre (half widths)
ROW_REFINE = ((0.25, 0.01), (0.05, 0.002))  # finer steps (degrees, reach) around the best, nine each way
ROW_NEAR = 0.2  # a pixel this close to the candidate point's side of the image says nothing about it
ROW_FEWEST = 500  # fewer horizontal-edge pixels cannot line up several rows of windows


class RowPixels:
    """Horizontal-edge pixels of a still (normalised coordinates) and their strengths, binned at one working
    pixel: what the window rows line up towards, for far buildings whose windows are a few pixels wide.

    LSD finds few horizontal segments there (the building's outline, tree crowns) and RANSAC on them can pick
    a point far off, while every window row still lines up, pixel by pixel, only towards the true point.
    """

    def __init__(self, gray: np.ndarray, seg: Segments):
        h, w = gray.shape
        k = min(1.0, WORK_WIDTH / w)
        small = gray if k == 1 else cv2.resize(gray, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        gx, gy = cv2.Sobel(small, cv2.CV_32F, 1, 0).ravel(), cv2.Sobel(small, cv2.CV_32F, 0, 1).ravel()
        mag = np.hypot(gx, gy)
        noise = max(float(np.median(mag)), 1.0)
        keep = np.flatnonzero((mag > ROW_NOISE * noise) & (np.abs(gx) < ROW_SLOPE * np.abs(gy)))
        if len(keep) > ROW_PIXELS:
            keep = keep[np.argpartition(np.abs(gy[keep]), -ROW_PIXELS)[-ROW_PIXELS:]]
        yy, xx = np.divmod(keep, small.shape[1])
        px = np.column_stack([(xx + 0.5) / k - 0.5, (yy + 0.5) / k - 0.5])
        self.q = seg.to_norm(px)
        self.weight = np.abs(gy[keep]).astype(np.float64)
        self.bins_per_unit = k * seg.scale

    def _sharpness(self, tilt: float, reach: float) -> float:
        """How peaked the pixels' profile is along the pencil of lines through (cos t, sin t, reach): rows of
        windows, slabs and the building's ends each fall into one bin when the point is right."""
        c, s = math.cos(tilt), math.sin(tilt)
        den = c - reach * self.q[:, 0]
        y0 = (c * self.q[:, 1] - s * self.q[:, 0]) / np.where(den > ROW_NEAR, den, 1.0)  # where lines meet x=0
        n = int(4 * self.bins_per_unit)
        idx = np.floor((y0 + 2) * self.bins_per_unit).astype(np.int64)
        ok = (idx >= 0) & (idx < n) & (den > ROW_NEAR)
        hist = np.bincount(idx[ok], self.weight[ok], n)
        hist = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))  # a line straddling two bins is one line
        total = hist.sum()
        return float((hist**2).sum() / total**2) if total > 0 else 0.0

    def sharpness(self, vp: np.ndarray) -> float:
        """_sharpness of a horizontal vanishing point given in homogeneous normalised coordinates."""
        d = float(np.hypot(vp[0], vp[1]))
        if d < 1e-12:
            return 0.0
        v = vp / d if vp[0] >= 0 else -vp / d  # the direction that points right, tilt within +-90 degrees
        return self._sharpness(math.atan2(v[1], v[0]), float(v[2]))

    def best(self) -> tuple[np.ndarray, float] | None:
        """The horizontal vanishing point that lines the pixels up best, and its sharpness."""
        if len(self.q) < ROW_FEWEST:
            return None
        best = max((self._sharpness(t, r), t, r) for t in np.radians(ROW_TILT_DEG) for r in ROW_REACH)
        steps = np.arange(-4, 5)
        for tilt_step, reach_step in ROW_REFINE:
            _, t0, r0 = best
            near = [(t, r) for t in t0 + np.radians(steps * tilt_step) for r in r0 + steps * reach_step]
            best = max([best] + [(self._sharpness(t, r), t, r) for t, r in near])
        score, tilt, reach = best
        vp = np.array([math.cos(tilt), math.sin(tilt), reach])
        return vp / np.linalg.norm(vp), score
