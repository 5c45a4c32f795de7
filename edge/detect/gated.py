"""Gated low-threshold search: look for a tracked object where its track says it is, below the blob threshold.

The prefilter finds a pixel that moves by more than four times its own noise: a faint object (a grey bottle
in IR grain, a fruit whose blur streak thins in rain, a paper that drifts so slowly its frame difference
overlaps itself) falls below that in many frames. Its track still knows where it must be and how big it
is, so the evidence can be summed over the object's footprint instead of read off single pixels: the
difference from the background, in units of each pixel's noise, summed over a box the size of the
object's recent blobs (a matched filter; n pixels of signal s over noise sigma give s * sqrt(n) / sigma).
Only inside the track's gate, in one small window per track: the cost stays a few windows per frame.

The response is judged against the window's own responses (a constant-false-alarm-rate test): its robust
spread measures what grain, codec blocks, rain and texture make of a box that size there, spatial
correlation included. How many such responses the window holds elsewhere is the local clutter density that
prices a hit in the track's score, as the frame's blob density prices an ordinary detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.detect.types import Blob

_MAD_SIGMA = 1.4826  # a median absolute deviation times this is the standard deviation of a normal sample
# Below this spread per sqrt(pixel) the window is flat (clipped highlights, a black sky): no noise to judge
# a response by, and any one-level step would look like a strong object.
_MIN_SPREAD = 0.25
_MAX_BOX = 31  # the footprint's side is capped: a longer streak is still found by its brightest part
_CONTEXT = 2  # the window reaches this many footprints beyond the gate, to measure the spread around it


@dataclass(frozen=True)
class Probe:
    """Where a track expects its object this frame and what it looks like, in work pixels."""

    x: float
    y: float
    radius: float  # the gate: the object lies within this distance of (x, y)
    w: int  # the object's footprint: its recent blobs' box
    h: int
    polarity: int  # +1 brighter than what is behind it, -1 darker, 0 not known
    step: tuple[float, float] = (0.0, 0.0)  # its motion per frame, x and y: how far its blur may smear it

    def box(self) -> tuple[int, int]:
        """The matched filter's box, odd sides: the footprint, or the streak its motion may smear it into.

        The prefilter's blobs hold only the part of a blur streak above threshold; the streak itself is as
        wide as the object and as long as its step in a frame at most (the shutter is open up to the frame
        interval). The longer box sums all of it; at worst, for a short shutter, it dilutes the signal.
        """
        across = min(self.w, self.h)
        return _odd(max(self.w, across + self.step[0])), _odd(max(self.h, across + self.step[1]))


@dataclass(frozen=True)
class Found:
    """The object found by a probe, and the local density of responses as strong (per pixel)."""

    blob: Blob
    snr: float
    density: float


def _odd(n: float) -> int:
    return int(min(_MAX_BOX, max(1, round(n)))) | 1


def search(
    image: np.ndarray,
    background: np.ndarray,
    threshold: np.ndarray,
    noise_k: float,
    probe: Probe,
    min_snr: float,
) -> Found | None:
    """The strongest footprint-sized response within the probe's gate, when it stands `min_snr` above its window.

    `image` (uint8) and `background` (float32) are the frame and running background, aligned; `threshold`
    each pixel's motion threshold (uint8), `noise_k` times its noise level. None when nothing stands out.
    """
    bw, bh = probe.box()
    reach = probe.radius + _CONTEXT * max(bw, bh) + 2
    hgt, wid = image.shape
    x0, x1 = max(0, math.floor(probe.x - reach)), min(wid, math.ceil(probe.x + reach) + 1)
    y0, y1 = max(0, math.floor(probe.y - reach)), min(hgt, math.ceil(probe.y + reach) + 1)
    if x1 - x0 < 2 * bw or y1 - y0 < 2 * bh:
        return None  # at the frame's edge: too little around it to judge a response
    win = (slice(y0, y1), slice(x0, x1))
    diff = image[win].astype(np.float32) - background[win]
    z = diff * (noise_k / np.maximum(threshold[win].astype(np.float32), 1.0))
    s = cv2.boxFilter(z, -1, (bw, bh), normalize=False, borderType=cv2.BORDER_REFLECT)
    if probe.polarity < 0:
        s = -s
    centre = float(np.median(s))
    spread = max(_MAD_SIGMA * float(np.median(np.abs(s - centre))), _MIN_SPREAD * math.sqrt(bw * bh))
    snr = (s - centre) / spread
    if probe.polarity == 0:
        snr = np.abs(snr)
    gy, gx = np.ogrid[y0:y1, x0:x1]
    gate = (gx - probe.x) ** 2 + (gy - probe.y) ** 2 <= probe.radius**2
    inside = np.where(gate, snr, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(inside)), inside.shape)
    peak = float(inside[iy, ix])
    if peak < min_snr:
        return None
    cx, cy = _refine(snr, ix, iy)
    # Other responses as strong in the window, in footprints: how often clutter here would pass this test.
    others = np.count_nonzero(snr >= min_snr) / (bw * bh)
    density = (max(others - 1.0, 0.0) + 1.0) / snr.size
    box = (slice(max(iy - bh // 2, 0), iy + bh // 2 + 1), slice(max(ix - bw // 2, 0), ix + bw // 2 + 1))
    strongest = float(np.max(np.abs(z[box]))) / noise_k  # as Blob.strength: in multiples of the threshold
    # Reported at the track's own footprint: the blob's size is the object's, as the prefilter saw it.
    blob = Blob(x0 + cx, y0 + cy, probe.w, probe.h, probe.w * probe.h, float(abs(np.mean(diff[box]))), strongest)
    return Found(blob, peak, density)


def _refine(snr: np.ndarray, ix: int, iy: int) -> tuple[float, float]:
    """Sub-pixel peak: the centroid of the positive response in the 3x3 around it."""
    h, w = snr.shape
    ys, xs = slice(max(iy - 1, 0), min(iy + 2, h)), slice(max(ix - 1, 0), min(ix + 2, w))
    patch = np.clip(snr[ys, xs], 0.0, None)
    total = float(patch.sum())
    if total <= 0:
        return float(ix), float(iy)
    gy, gx = np.mgrid[ys, xs]
    return float((gx * patch).sum() / total), float((gy * patch).sum() / total)


def polarity(image: np.ndarray, background: np.ndarray, blob: Blob) -> int:
    """+1 when the blob is brighter than the background behind it, -1 when darker, 0 when even."""
    hgt, wid = image.shape
    x0, y0 = max(0, int(blob.x - blob.w / 2)), max(0, int(blob.y - blob.h / 2))
    x1, y1 = min(wid, int(blob.x + blob.w / 2) + 1), min(hgt, int(blob.y + blob.h / 2) + 1)
    if x1 <= x0 or y1 <= y0:
        return 0
    d = float(np.sum(image[y0:y1, x0:x1].astype(np.float32) - background[y0:y1, x0:x1]))
    return 1 if d > 0 else -1 if d < 0 else 0


@dataclass(frozen=True)
class FrameLook:
    """One frame as the tracker may look into it: the aligned image, its background and thresholds."""

    image: np.ndarray
    background: np.ndarray
    threshold: np.ndarray
    noise_k: float
    min_snr: float

    def search(self, probe: Probe) -> Found | None:
        """`search` in this frame."""
        return search(self.image, self.background, self.threshold, self.noise_k, probe, self.min_snr)

    def polarity(self, blob: Blob) -> int:
        """`polarity` of a blob of this frame."""
        return polarity(self.image, self.background, blob)
