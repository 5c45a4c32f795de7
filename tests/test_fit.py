"""The fits behind tracking and the fall decision give numpy's numbers."""

from __future__ import annotations

import numpy as np

from edge.detect.fit import fit_poly, median

FPS = 25.0  # times in frames or in seconds at a camera's rate


def test_fit_poly_gives_polyfits_lines_and_parabolas():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(4, 80))
        t = np.sort(rng.choice(400, n, replace=False)).astype(float) / rng.choice([1.0, FPS])
        t -= t[0] * rng.choice([0, 1])  # from the track's start, or a window late in it
        curve = rng.normal(0, 50, 3) @ [t**2, t, np.ones(n)]
        y = np.column_stack([curve + rng.normal(0, 1, n), rng.normal(0, 20, n)])
        for deg in (1, 2):
            want = np.column_stack([np.polyfit(t, y[:, 0], deg), np.polyfit(t, y[:, 1], deg)])
            assert np.allclose(fit_poly(t, y, deg), want, rtol=1e-8, atol=1e-9 * np.abs(want).max())
            assert np.allclose(fit_poly(t, y[:, 0], deg), want[:, 0], rtol=1e-8, atol=1e-9 * np.abs(want).max())


def test_median_is_numpys():
    rng = np.random.default_rng(6)
    for n in range(1, 30):
        values = rng.normal(0, 10, n).round(int(rng.integers(0, 3))).tolist()  # ties too
        assert median(values) == np.median(values)


def test_fit_poly_fits_a_batch_of_runs_each_without_its_weightless_points():
    rng = np.random.default_rng(8)
    t = np.sort(rng.uniform(-30, 3, (16, 13)), axis=1)
    y = rng.normal(0, 1, (16, 13, 2)) + 0.2 * t[..., None] ** 2
    w = np.ones((16, 13))
    for k in range(16):
        w[k, 13 - k % 6 :] = 0.0  # runs of 13, 12, ... 8 points
    coef = fit_poly(t, y, 2, w)
    for k in range(16):
        keep = w[k] > 0
        assert np.allclose(coef[k], np.polyfit(t[k, keep], y[k, keep], 2), rtol=1e-9, atol=1e-10)
