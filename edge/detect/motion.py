"""Background-subtraction prefilter on the luma plane.

A pixel is motion when it differs from both the running background and a recent frame (`moved_since_s`
back) by more than its own noise level. The AND removes changes that stay put (a ghost in the background,
a light switched on); the per-pixel noise level makes the threshold contrast-robust (trees, rain and night
noise raise their own bar).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft

from edge.config import MotionConfig
from edge.detect.resample import area_downscale
from edge.detect.types import Blob, GlobalEvent, MotionResult
from edge.geometry import polygons_mask

_SHAKE_WIDTH = 320  # shake is first measured on a copy about this wide: cheap, and within a pixel at full size
_SMALL_BG_EVERY = 5  # frames between refreshes of that copy of the (slowly changing) background
_REFINE_CROP, _REFINE_MARGIN = 384, 16  # full-resolution crop that refines the shift to sub-pixel
_CELL = 4  # blobs are labelled on a grid of 4x4-pixel cells
_THRESHOLD_EVERY = 4  # frames between recomputing each pixel's threshold: its noise level moves ~2% a frame
_COARSE = 2  # the coarse layer averages 2x2 pixels: half the noise of one pixel, for objects 2 px or more
_MAX_PAST = 8  # frames kept to compare with, at most: a fast camera's frames are not worth their memory


class _Layer:
    """Background, per-pixel noise level and last frames of the luma plane at one scale."""

    def __init__(self, cfg: MotionConfig, fps: float):
        self.cfg, self.fps = cfg, fps
        self.bg: np.ndarray | None = None
        self.noise: np.ndarray | None = None
        # The last frames, oldest first: a pixel must differ from the oldest as well as from the background.
        self._past: deque[np.ndarray] = deque(maxlen=min(_MAX_PAST, max(1, round(cfg.moved_since_s * fps))))
        self._edges: np.ndarray | None = None
        self._thr: np.ndarray | None = None
        self._buf: np.ndarray | None = None  # float scratch plane for the thresholds
        self._edges_frame = 0
        self.frames = 0
        self._bg_learned = 0  # frames learned into the background since it was seeded
        self._noise_learned = 0  # frames learned into the noise level since it was seeded

    @property
    def previous(self) -> np.ndarray | None:
        """The last frame learned (None before the first)."""
        return self._past[-1] if self._past else None

    def seed(self, img: np.ndarray, keep_noise: bool = False) -> None:
        """Start the background from `img` (first frame, new size, or after a whole-frame event)."""
        self.bg = img.astype(np.float32)
        self._bg_learned = 0
        if not keep_noise or self.noise is None or self.noise.shape != img.shape:
            self.noise = np.full(img.shape, self.cfg.min_diff / self.cfg.noise_k, np.float32)
            self._buf = np.empty(img.shape, np.float32)
            self._noise_learned = 0
        self._past.clear()
        self._past.append(img)
        self._thr = None
        self._edges = None  # a new background has new edges (lights on, another exposure)

    def foreground(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Moving pixels (255), differences to background and the compared frame, threshold, share off background.

        A pixel moves when it differs from both the background and the frame `moved_since_s` back by more than
        its own noise level. The AND removes what changed and then stayed put; comparing with a frame further
        back than the last sees an object slower than its own width per frame (every object just after its
        release) over all it crossed since, not only its leading edge.
        """
        self.frames += 1
        bg_u8 = cv2.convertScaleAbs(self.bg)
        diff_bg = cv2.absdiff(img, bg_u8)
        diff_then = cv2.absdiff(img, self._past[0])
        bootstrapping = self._noise_learned * self.cfg.noise_alpha < 1.0  # the noise level moves fast then
        if (
            self._thr is None
            or self._thr.shape != img.shape
            or bootstrapping
            or self.frames % _THRESHOLD_EVERY == 0
        ):
            self._thr = self._threshold(bg_u8)
        thr_u8 = self._thr
        off_bg = cv2.compare(diff_bg, thr_u8, cv2.CMP_GT)
        fg = cv2.bitwise_and(off_bg, cv2.compare(diff_then, thr_u8, cv2.CMP_GT))
        changed = cv2.countNonZero(off_bg) / off_bg.size
        self._learn(img, diff_bg)
        return fg, diff_bg, diff_then, thr_u8, changed

    def _threshold(self, bg_u8: np.ndarray) -> np.ndarray:
        """Each pixel's motion threshold (uint8): its noise level times noise_k, raised at edges."""
        # numpy's multiply into a buffer: cv2.multiply by a scalar is six times slower on float planes.
        thr = np.multiply(self.noise, self.cfg.noise_k, out=self._buf)
        cv2.max(thr, float(self.cfg.min_diff), dst=thr)
        cv2.add(thr, self._edge_tolerance(bg_u8), dst=thr)
        return cv2.convertScaleAbs(thr)

    def _edge_tolerance(self, bg_u8: np.ndarray) -> np.ndarray:
        # Refreshed once a second: edges move slowly with the light, and Scharr on a full frame is not free.
        if (
            self._edges is None
            or self._edges.shape != bg_u8.shape
            or self.frames - self._edges_frame >= max(1, round(self.fps))
        ):
            self._edges_frame = self.frames
            gx = cv2.Scharr(bg_u8, cv2.CV_32F, 1, 0, scale=1 / 32)  # luma levels per pixel
            gy = cv2.Scharr(bg_u8, cv2.CV_32F, 0, 1, scale=1 / 32)  # luma levels per pixel
            self._edges = cv2.magnitude(gx, gy) * self.cfg.edge_jitter_px
        return self._edges

    def _learn(self, img: np.ndarray, diff_bg: np.ndarray) -> None:
        # Clip what one frame may add to the noise level, so a passing object does not raise it much.
        cap = cv2.convertScaleAbs(self.noise, alpha=3.0, beta=self.cfg.min_diff)
        self._noise_learned += 1
        self._bg_learned += 1
        cv2.accumulateWeighted(
            cv2.min(diff_bg, cap), self.noise, _bootstrap(self.cfg.noise_alpha, self._noise_learned)
        )
        cv2.accumulateWeighted(img, self.bg, _bootstrap(self.cfg.background_alpha, self._bg_learned))
        self._past.append(img)


def _bootstrap(alpha: float, learned: int) -> float:
    """Rate for the `learned`-th frame since seeding: the plain mean of the frames so far, until that is `alpha`.

    As MOG2 does (rate 1/n, never below its own): a freshly seeded background or noise level is then as good
    as the frames seen so far allow, rather than one frame's (or the initial guess's) for 1/alpha frames, so
    detection can start soon after a start or a restart.
    """
    return max(alpha, 1.0 / (learned + 1))


def _coarse(img: np.ndarray) -> np.ndarray:
    """The luma plane averaged over _COARSE x _COARSE pixels (cropped to a whole number of them)."""
    h, w = img.shape[0] // _COARSE * _COARSE, img.shape[1] // _COARSE * _COARSE
    return cv2.resize(img[:h, :w], (w // _COARSE, h // _COARSE), interpolation=cv2.INTER_AREA)


class MotionPrefilter:
    """Finds small moving blobs and whole-frame events in successive luma frames.

    Two scales: full resolution finds the 1-2 pixel objects; a copy averaged over 2x2 pixels has half the
    noise and finds objects of 2 pixels or more whose contrast is lost in the grain of each single pixel
    (a grey bottle at night, a faint streak of motion blur).
    """

    def __init__(self, cfg: MotionConfig, fps: float, shield: list[list[tuple[float, float]]] | None = None):
        self.cfg = cfg
        self.fps = fps
        self.shield_polys = shield or []
        self.scale = 1.0
        self._fine = _Layer(cfg, fps)
        self._coarse = _Layer(cfg, fps)
        self._shield: np.ndarray | None = None
        self._coarse_shield: np.ndarray | None = None
        self._shake_ref: _ShakeReference | None = None
        self._last_mean: float | None = None  # mean luma of the previous frame
        self._frames = 0
        self._warmup = max(2, round(cfg.warmup_s * fps))
        self.image: np.ndarray | None = None  # the last frame at work resolution, aligned to the background

    @property
    def background(self) -> np.ndarray | None:
        """The running background at work resolution (float32), None before the first frame."""
        return self._fine.bg

    @property
    def threshold(self) -> np.ndarray | None:
        """Each work pixel's current motion threshold (uint8), None until motion is first looked for."""
        return self._fine._thr

    def work_image(self, luma: np.ndarray) -> np.ndarray:
        """The luma plane at work resolution (area-averaged, so a thin object keeps some contrast)."""
        h, w = luma.shape
        self.scale = min(1.0, self.cfg.max_work_width / w)
        if self.scale >= 1.0:
            return luma
        return area_downscale(luma, (round(w * self.scale), round(h * self.scale)))

    def process(self, luma: np.ndarray) -> MotionResult:
        """Blobs of motion in this frame (work-resolution pixels), or a whole-frame event."""
        img = self.image = self.work_image(luma)
        if self._fine.bg is None or self._fine.bg.shape != img.shape:
            self._seed(img)
            return MotionResult([], GlobalEvent.START)
        self._frames += 1
        event = self._global_event(img)
        half = _coarse(img)
        shift = (0.0, 0.0)
        if event is None:
            img, half, shift = self._stabilise(img, half)
            self.image = img
        if event is not None:
            self._seed(img, keep_noise=True)
            return MotionResult([], event, shift)
        fg, diff_bg, _, thr, changed = self._fine.foreground(img)
        coarse = self._coarse.foreground(half)
        if changed > self.cfg.global_change_frac:
            return MotionResult([], GlobalEvent.CHANGE, shift)
        if self._frames < self._warmup:
            return MotionResult([], GlobalEvent.WARMUP, shift)
        if self._shield is not None:
            fg = cv2.bitwise_and(fg, cv2.bitwise_not(self._shield))
            coarse_fg = cv2.bitwise_and(coarse[0], cv2.bitwise_not(self._coarse_shield))
            coarse = (coarse_fg, *coarse[1:])
        blobs, dropped = self._blobs(fg, diff_bg, thr, coarse[0], coarse[1], coarse[3])
        return MotionResult(blobs, None, shift, dropped)

    def _seed(self, img: np.ndarray, keep_noise: bool = False) -> None:
        if not keep_noise or self._fine.noise is None or self._fine.noise.shape != img.shape:
            self._shield = polygons_mask(img.shape, self.shield_polys)
            self._coarse_shield = _coarse(self._shield) if self._shield is not None else None
        self._fine.seed(img, keep_noise)
        self._coarse.seed(_coarse(img), keep_noise)
        self._last_mean = None

    def _global_event(self, img: np.ndarray) -> GlobalEvent | None:
        mean = float(cv2.mean(img)[0])
        last, self._last_mean = self._last_mean, mean
        if last is None:
            last = float(cv2.mean(self._fine.previous)[0])
        return GlobalEvent.EXPOSURE if abs(mean - last) > self.cfg.global_luma_step else None

    def _stabilise(self, img: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """The frame and its half-size copy aligned to the background, and the shift that was undone."""
        if not self.cfg.stabilize:
            return img, half, (0.0, 0.0)
        # Shake is measured on a copy about _SHAKE_WIDTH wide, made from the half-size copy (cheap) against
        # the coarse layer's background, whose spectrum is kept between refreshes.
        k2 = max(1, round(half.shape[1] / _SHAKE_WIDTH))
        k = k2 * _COARSE
        size = (half.shape[1] // k2, half.shape[0] // k2)
        small = cv2.resize(half, size, interpolation=cv2.INTER_AREA)
        if self._shake_ref is None or self._shake_ref.size != size or self._frames % _SMALL_BG_EVERY == 0:
            ref = cv2.resize(self._coarse.bg, size, interpolation=cv2.INTER_AREA)
            self._shake_ref = _ShakeReference.of(ref)
        found = self._shake_ref.bounded_shift(small.astype(np.float32), self.cfg.shake_max_px / k)
        # No clear peak: too little texture to register (night sky), or a jump beyond the search range,
        # which then changes most of the frame and is caught as a whole-frame event.
        if found is None or math.hypot(found[0] * k, found[1] * k) < self.cfg.shake_min_px:
            return img, half, (0.0, 0.0)
        dx, dy = _refine_shift(self._fine.bg, img, found[0] * k, found[1] * k)
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        aligned = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
        return aligned, _coarse(aligned), (dx, dy)

    def _blobs(
        self,
        fg: np.ndarray,
        diff_bg: np.ndarray,
        thr: np.ndarray,
        coarse_fg: np.ndarray,
        coarse_diff: np.ndarray,
        coarse_thr: np.ndarray,
    ) -> tuple[list[Blob], int]:
        """The blobs of moving pixels at either scale (the strongest max_blobs), and how many were left out.

        A busy frame (rain, IR grain, insects) is no reason to stop looking: the object is among the blobs,
        and tracking and physics tell it from the rest.
        """
        # Label on a grid of _CELL x _CELL cells: ~16x cheaper than full resolution, and it joins the
        # fragments of a blurred streak that crosses a window edge into one blob.
        k = _CELL // _COARSE
        fine = _Pixels.of(fg, diff_bg, thr, _CELL)
        coarse = _Pixels.of(coarse_fg, coarse_diff, coarse_thr, k)
        # Both layers' block maps are on the same grid of cells; the coarse one lacks the last row (column) of
        # cells when the frame's height (width) is 1 more than a multiple of 4, as the coarse copy crops it.
        cells = fine.blocks.copy()
        ch, cw = coarse.blocks.shape
        cv2.max(cells[:ch, :cw], coarse.blocks, dst=cells[:ch, :cw])
        if not cells.any():
            return [], 0
        n, labels = cv2.connectedComponents(cells, connectivity=8)  # without stats: 7x cheaper
        max_area = self.cfg.max_blob_frac * fg.size
        a = fine.measure(labels[fine.ys // _CELL, fine.xs // _CELL], n, self.cfg, max_area)
        b = coarse.measure(labels[coarse.ys // k, coarse.xs // k], n, self.cfg, max_area / _COARSE**2)
        # A component is measured at full resolution when it moved there; else the coarse copy alone saw it.
        use_coarse = ~a.valid & b.valid
        valid = a.valid | use_coarse
        peak = np.where(use_coarse, b.peak, a.peak)
        ids = np.flatnonzero(valid)
        dropped = 0
        if len(ids) > self.cfg.max_blobs:
            best = np.argpartition(-peak[ids], self.cfg.max_blobs - 1)[: self.cfg.max_blobs]
            dropped = len(ids) - self.cfg.max_blobs
            ids = np.sort(ids[best])
        out = [(b if use_coarse[i] else a).blob(i, _COARSE if use_coarse[i] else 1) for i in ids]
        return out, dropped


@dataclass
class _Measures:
    """Per-component sums over one layer's moving pixels (index = component label)."""

    count: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    width: np.ndarray
    height: np.ndarray
    contrast: np.ndarray
    peak: np.ndarray  # strongest pixel's difference over its own threshold
    valid: np.ndarray

    def blob(self, i: int, scale: int) -> Blob:
        """Component i as a blob in work pixels (`scale` work pixels per layer pixel)."""
        return Blob(
            (float(self.cx[i]) + 0.5) * scale - 0.5,
            (float(self.cy[i]) + 0.5) * scale - 0.5,
            int(self.width[i]) * scale,
            int(self.height[i]) * scale,
            int(self.count[i]) * scale * scale,
            float(self.contrast[i]),
            float(self.peak[i]),
        )


@dataclass
class _Pixels:
    """The moving pixels of one layer: coordinates, difference and threshold, as flat arrays."""

    ys: np.ndarray
    xs: np.ndarray
    diff: np.ndarray
    over: np.ndarray
    blocks: np.ndarray  # one value per `cell` x `cell` block, non-zero where any of its pixels moves

    @classmethod
    def of(cls, fg: np.ndarray, diff: np.ndarray, thr: np.ndarray, cell: int) -> _Pixels:
        """The moving pixels, found through the `cell` x `cell` blocks that hold any: most of a frame is still."""
        h, w = fg.shape
        gh, gw = -(-h // cell), -(-w // cell)
        padded = fg
        if (gh * cell, gw * cell) != (h, w):
            padded = cv2.copyMakeBorder(fg, 0, gh * cell - h, 0, gw * cell - w, cv2.BORDER_CONSTANT, value=0)
        blocks = _any_in_blocks(padded, cell)
        found = cv2.findNonZero(blocks)
        if found is None:
            empty = np.empty(0, np.intp)
            return cls(empty, empty, np.empty(0, np.float32), np.empty(0, np.float32), blocks)
        found = found.reshape(-1, 2)
        bx, by = found[:, 0].astype(np.intp), found[:, 1].astype(np.intp)
        moving = padded.reshape(gh, cell, gw, cell)[by, :, bx, :]  # (blocks, cell, cell)
        k, dy, dx = np.nonzero(moving)
        ys, xs = by[k] * cell + dy, bx[k] * cell + dx
        d = diff[ys, xs].astype(np.float32)
        return cls(ys, xs, d, d / np.maximum(thr[ys, xs], 1).astype(np.float32), blocks)

    def measure(self, lab: np.ndarray, n: int, cfg: MotionConfig, max_area: float) -> _Measures:
        """Centroid (weighted by difference), extent, contrast and strength of every component at once.

        Not valid: no moving pixel here, too many (a cloud), or fewer than min_pixels that are not strong.
        """
        count = np.bincount(lab, minlength=n).astype(np.float64)
        wsum = np.bincount(lab, self.diff, minlength=n)
        safe = np.maximum(wsum, 1e-9)
        cx = np.bincount(lab, self.diff * self.xs, minlength=n) / safe
        cy = np.bincount(lab, self.diff * self.ys, minlength=n) / safe
        lo_x, hi_x = np.full(n, 1 << 30), np.full(n, -1)
        lo_y, hi_y = np.full(n, 1 << 30), np.full(n, -1)
        np.minimum.at(lo_x, lab, self.xs)
        np.maximum.at(hi_x, lab, self.xs)
        np.minimum.at(lo_y, lab, self.ys)
        np.maximum.at(hi_y, lab, self.ys)
        contrast, peak = np.zeros(n, np.float32), np.zeros(n, np.float32)
        np.maximum.at(contrast, lab, self.diff)
        np.maximum.at(peak, lab, self.over)
        valid = (count > 0) & (count <= max_area) & ((count >= cfg.min_pixels) | (peak >= cfg.single_pixel_k))
        valid[0] = False  # label 0 is the background
        return _Measures(count, cx, cy, hi_x - lo_x + 1, hi_y - lo_y + 1, contrast, peak, valid)


def _any_in_blocks(mask: np.ndarray, cell: int) -> np.ndarray:
    """Non-zero where any pixel of a `cell` x `cell` block of a 0/255 mask is set (cell a power of two).

    Halving the size step by step takes OpenCV's fast path for exact 2x area averaging; one 4x step is
    twenty times slower. A single 255 pixel stays above zero through up to four halvings (64, 16, 4, 1).
    """
    while cell > 1:
        mask = cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2), interpolation=cv2.INTER_AREA)
        cell //= 2
    return mask


@dataclass(frozen=True)
class _ShakeReference:
    """A small copy of the background ready for phase correlation: its window and spectrum computed once."""

    size: tuple[int, int]
    window: np.ndarray
    spectrum: np.ndarray  # complex conjugate of the windowed reference's spectrum, as correlation uses it

    @classmethod
    def of(cls, ref: np.ndarray) -> _ShakeReference:
        h, w = ref.shape
        window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        return cls((w, h), window, np.conj(scipy.fft.rfft2((ref - ref.mean()) * window)))

    def bounded_shift(self, img: np.ndarray, max_shift: float) -> tuple[float, float] | None:
        """Translation of `img` against the reference by phase correlation, searched only within +-max_shift.

        A facade is a periodic grid of windows: the global correlation peak may be a whole window pitch
        away, so the peak is looked for only among shifts a shaking pole can make. None when no clear peak
        is there. A peak on the border of the search range is no peak: the true shift lies beyond it.
        """
        w, h = self.size
        # scipy's FFT: five times faster than numpy's on these small float32 planes.
        cross = scipy.fft.rfft2((img - img.mean()) * self.window) * self.spectrum
        corr = scipy.fft.irfft2(cross / (np.abs(cross) + 1e-6), s=(h, w))
        r = max(1, int(math.ceil(max_shift)))
        local = np.roll(corr, (r, r), axis=(0, 1))[: 2 * r + 1, : 2 * r + 1]
        iy, ix = np.unravel_index(int(np.argmax(local)), local.shape)
        if local[iy, ix] < 4 * corr.std() or iy in (0, 2 * r) or ix in (0, 2 * r):
            return None
        ys, xs = slice(max(iy - 1, 0), iy + 2), slice(max(ix - 1, 0), ix + 2)
        patch = np.clip(local[ys, xs], 0, None)
        gy, gx = np.mgrid[ys, xs]
        total = patch.sum()
        return float((gx * patch).sum() / total - r), float((gy * patch).sum() / total - r)


def _refine_shift(ref: np.ndarray, img: np.ndarray, dx: float, dy: float) -> tuple[float, float]:
    """Sub-pixel refinement of a coarse shift at full resolution, on the central crop of the frame."""
    h, w = img.shape
    ch, cw = min(_REFINE_CROP, h - 2 * _REFINE_MARGIN), min(_REFINE_CROP, w - 2 * _REFINE_MARGIN)
    if ch < 32 or cw < 32:
        return dx, dy
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    a = ref[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
    # The crop is taken at the whole-pixel shift: an interpolated crop is blurred, and phase correlation
    # then finds only part of the remaining fraction of a pixel.
    ix, iy = round(dx), round(dy)
    centre = (x0 + (cw - 1) / 2 + ix, y0 + (ch - 1) / 2 + iy)
    b = cv2.getRectSubPix(img, (cw, ch), centre).astype(np.float32)
    (rx, ry), _ = cv2.phaseCorrelate(a, b, cv2.createHanningWindow((cw, ch), cv2.CV_32F))
    if math.hypot(ix + rx - dx, iy + ry - dy) > 2.0:  # not a refinement of the coarse estimate: keep that
        return dx, dy
    return ix + rx, iy + ry
