"""Small least-squares fits and statistics used per track and per frame: numpy's results, at less cost per call."""

from __future__ import annotations

import numpy as np


def fit_poly(t: np.ndarray, y: np.ndarray, deg: int, w: np.ndarray | None = None) -> np.ndarray:
    """Least-squares line (deg 1) or parabola (deg 2): np.polyfit(t, y, deg), equal to within float rounding.

    The normal equations are solved directly: polyfit's SVD costs twice as much, and these fits run for
    every track judged and every stitch tried. As polyfit, `t` (n,) with `y` (n,) or (n, k): k curves over
    the same times, coefficients (deg + 1,) or (deg + 1, k), highest power first. Many fits at once:
    `t` (..., n), `y` (..., n, k), coefficients (..., deg + 1, k), and weights `w` (..., n) of 1 or 0
    (0 leaves a point out: fits of fewer points padded to n). Times are centred and scaled to [-1, 1]
    first, so that a window late in a long track is as well conditioned as one at its start.
    """
    if deg not in (1, 2):
        raise ValueError(f"fit_poly fits lines and parabolas, not degree {deg}")
    one_curve = y.ndim == t.ndim
    y = y[..., None] if one_curve else y
    lo, hi = t.min(axis=-1, keepdims=True), t.max(axis=-1, keepdims=True)
    mid, half = (lo + hi) / 2, np.where(hi > lo, (hi - lo) / 2, 1.0)
    v = ((t - mid) / half)[..., None] ** np.arange(deg, -1, -1)  # (..., n, deg + 1)
    vt = np.swapaxes(v if w is None else v * w[..., None], -1, -2)
    a = np.linalg.solve(vt @ v, vt @ y)  # highest power first, in powers of (t - mid) / half
    if deg == 1:
        p1 = a[..., 0, :] / half
        coef = np.stack([p1, a[..., 1, :] - p1 * mid], axis=-2)
    else:
        p2, p1 = a[..., 0, :] / half**2, a[..., 1, :] / half  # in powers of (t - mid)
        coef = np.stack([p2, p1 - 2 * p2 * mid, a[..., 2, :] - p1 * mid + p2 * mid * mid], axis=-2)
    return coef[..., 0] if one_curve else coef


def median(values: list[float]) -> float:
    """np.median of a short list (the same number), without its cost per call."""
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else float((s[mid - 1] + s[mid]) / 2)
