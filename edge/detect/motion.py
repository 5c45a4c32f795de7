"""Background-subtraction prefilter on the luma plane.

A pixel is motion when it differs from both the running background and the previous frame by more than
its own noise level. The AND removes the ghost a fast object leaves where it was a frame ago; the per-pixel
noise level makes the threshold contrast-robust (trees, rain and night noise raise their own bar).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.config import MotionConfig
from edge.detect.types import Blob, MotionResult

_SHAKE_SCALE = 4  # shake is measured on a 1/4-size image: cheap, and still sub-pixel at full size
_DILATE = np.ones((3, 3), np.uint8)  # joins the fragments of a blurred, low-contrast streak


def polygons_mask(shape: tuple[int, int], polygons: list[list[tuple[float, float]]]) -> np.ndarray | None:
    """A uint8 mask (255 inside) of polygons given in 0..1 coordinates, or None when there are none."""
    if not polygons:
        return None
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    for poly in polygons:
        pts = np.array([[x * w, y * h] for x, y in poly], np.float32).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return mask


class MotionPrefilter:
    """Finds small moving blobs and whole-frame events in successive luma frames."""

    def __init__(self, cfg: MotionConfig, fps: float, shield: list[list[tuple[float, float]]] | None = None):
        self.cfg = cfg
        self.fps = fps
        self.shield_polys = shield or []
        self.scale = 1.0
        self._bg: np.ndarray | None = None
        self._noise: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._shield: np.ndarray | None = None
        self._frames = 0
        self._warmup = max(2, round(cfg.warmup_s * fps))

    def reset(self) -> None:
        """Forget the background (resolution change, reconnect)."""
        self._bg = None
        self._frames = 0

    def work_image(self, luma: np.ndarray) -> np.ndarray:
        """The luma plane at work resolution (area-averaged, so a thin object keeps some contrast)."""
        h, w = luma.shape
        self.scale = min(1.0, self.cfg.max_work_width / w)
        if self.scale >= 1.0:
            return luma
        size = (round(w * self.scale), round(h * self.scale))
        return cv2.resize(luma, size, interpolation=cv2.INTER_AREA)

    def process(self, luma: np.ndarray) -> MotionResult:
        """Blobs of motion in this frame (work-resolution pixels), or a whole-frame event."""
        img = self.work_image(luma)
        if self._bg is None or self._bg.shape != img.shape:
            self._seed(img)
            return MotionResult([], "start")
        self._frames += 1
        img, shift, event = self._stabilise(img)
        if event is None:
            event = self._global_event(img)
        if event is not None:
            self._seed(img, keep_noise=True)
            return MotionResult([], event, shift)
        bg_u8 = cv2.convertScaleAbs(self._bg)
        diff_bg = cv2.absdiff(img, bg_u8)
        diff_prev = cv2.absdiff(img, self._prev)
        thr = cv2.max(self._noise * self.cfg.noise_k, float(self.cfg.min_diff))
        thr_u8 = cv2.convertScaleAbs(thr)
        off_bg = cv2.compare(diff_bg, thr_u8, cv2.CMP_GT)
        fg = cv2.bitwise_and(off_bg, cv2.compare(diff_prev, thr_u8, cv2.CMP_GT))
        changed = cv2.countNonZero(off_bg) / off_bg.size
        self._learn(img, diff_bg)
        if changed > self.cfg.global_change_frac:
            return MotionResult([], "change", shift)
        if self._frames < self._warmup:
            return MotionResult([], "warmup", shift)
        if self._shield is not None:
            fg = cv2.bitwise_and(fg, cv2.bitwise_not(self._shield))
        blobs = self._blobs(fg, diff_bg)
        if len(blobs) > self.cfg.max_blobs:
            return MotionResult([], "rain", shift)
        return MotionResult(blobs, None, shift)

    def _seed(self, img: np.ndarray, keep_noise: bool = False) -> None:
        self._bg = img.astype(np.float32)
        if not keep_noise or self._noise is None or self._noise.shape != img.shape:
            self._noise = np.full(img.shape, self.cfg.min_diff / self.cfg.noise_k, np.float32)
            self._shield = polygons_mask(img.shape, self.shield_polys)
        self._prev = img

    def _learn(self, img: np.ndarray, diff_bg: np.ndarray) -> None:
        # Clip what one frame may add to the noise level, so a passing object does not raise it much.
        cap = cv2.convertScaleAbs(self._noise, alpha=3.0, beta=self.cfg.min_diff)
        cv2.accumulateWeighted(cv2.min(diff_bg, cap), self._noise, self.cfg.noise_alpha)
        cv2.accumulateWeighted(img, self._bg, self.cfg.background_alpha)
        self._prev = img

    def _global_event(self, img: np.ndarray) -> str | None:
        step = abs(float(cv2.mean(img)[0]) - float(cv2.mean(self._prev)[0]))
        return "exposure" if step > self.cfg.global_luma_step else None

    def _stabilise(self, img: np.ndarray) -> tuple[np.ndarray, tuple[float, float], str | None]:
        if not self.cfg.stabilize:
            return img, (0.0, 0.0), None
        small = cv2.resize(img, None, fx=1 / _SHAKE_SCALE, fy=1 / _SHAKE_SCALE, interpolation=cv2.INTER_AREA)
        ref = cv2.resize(self._bg, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
        (dx, dy), _ = cv2.phaseCorrelate(ref, small.astype(np.float32))
        dx, dy = dx * _SHAKE_SCALE, dy * _SHAKE_SCALE
        dist = math.hypot(dx, dy)
        if dist > self.cfg.shake_max_px:
            return img, (dx, dy), "shake"
        if dist < self.cfg.shake_min_px:
            return img, (0.0, 0.0), None
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        aligned = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
        return aligned, (dx, dy), None

    def _blobs(self, fg: np.ndarray, diff_bg: np.ndarray) -> list[Blob]:
        fg = cv2.dilate(fg, _DILATE)
        n, _, stats, centroids = cv2.connectedComponentsWithStats(fg, connectivity=8)
        max_area = self.cfg.max_blob_frac * fg.size
        out = []
        for i in range(1, n):
            x, y, w, h, area = stats[i]
            if area > max_area:
                continue
            patch = diff_bg[y : y + h, x : x + w]
            weights = patch.astype(np.float32)
            total = float(weights.sum())
            if total <= 0:
                continue
            ys, xs = np.mgrid[y : y + h, x : x + w]
            cx = float((xs * weights).sum() / total)
            cy = float((ys * weights).sum() / total)
            out.append(Blob(cx, cy, int(w), int(h), int(area), float(patch.max())))
        return out
