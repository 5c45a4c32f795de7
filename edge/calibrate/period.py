"""The repeat of a facade's storeys along its rectified height: period and phase of a weighted line profile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 4096  # profile resolution over the facade's visible height: a storey spans 50-1000 bins
SMOOTH_BINS = 3.0  # Gaussian smoothing of the profile: line positions from LSD wobble by a pixel or two
MOST_STOREYS = 80  # shortest period searched: this many storeys in view
FEWEST_STOREYS = 4.0  # longest period searched: this many storeys in view (fewer cannot show a repeat)
HARMONICS = 4  # a period must repeat at its first multiples too: half a storey (sill to lintel) does not
NEAR_BEST = 0.75  # periods scoring this share of the best are as good; the shortest wins (multiples score alike)
TREND_PERIODS = 1.5  # brightness varying slower than this many candidate periods is not the storeys
MULTIPLE_SHARE = 0.4  # a multiple of a rejected half storey must still repeat this share of the best score
TONE_ANTI = -0.1  # brightness correlating below this at a candidate period: it is half a storey
PHASE_BINS = 60  # resolution of the folded profile that places the floor line within a storey
# Shares of the visible height searched: all of it, and without its lowest or highest third, where tree crowns
# in front of the lower floors (or a roof structure) add strong edges that repeat at no storey.
SPANS = ((0.0, 1.0), (1 / 3, 1.0), (0.0, 2 / 3))
WHOLE = SPANS[:1]
WHOLE_ENOUGH = 0.3  # the whole height repeating this much shows storeys (the proposal's bar): parts not read,
# as a part can repeat more at a multiple of the storey
SPAN_STRENGTH = 0.5  # a part of the height is one more guess: its repeat counts only when this clear (a clutter
# of lines repeats at some period over a part of it now and then)


@dataclass(frozen=True)
class Periodicity:
    period: float  # in the profile's units
    phase: float  # a floor line sits at phase + k * period
    strength: float  # mean normalised autocorrelation at the period's multiples, 0..1


def _profile(y: np.ndarray, w: np.ndarray, lo: float, hi: float) -> np.ndarray:
    hist, _ = np.histogram(y, BINS, (lo, hi), weights=w)
    k = np.arange(-4 * SMOOTH_BINS, 4 * SMOOTH_BINS + 1)
    kernel = np.exp(-0.5 * (k / SMOOTH_BINS) ** 2)
    return np.convolve(hist, kernel / kernel.sum(), mode="same")


def _autocorrelation(p: np.ndarray) -> np.ndarray:
    """Unbiased, normalised autocorrelation: 1 at lag 0, each lag averaged over the overlap it has."""
    x = p - p.mean()
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    ac = ac / np.arange(n, 0, -1)
    return ac / ac[0] if ac[0] > 0 else ac * 0


def _detrended(p: np.ndarray, lag: float) -> np.ndarray:
    """`p` less its slow course (sky gradient, vignetting, shade), which would correlate at any short lag."""
    sigma = TREND_PERIODS * lag
    k = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    padded = np.pad(p, len(k) // 2, mode="reflect")
    return p - np.convolve(padded, kernel / kernel.sum(), mode="valid")[: len(p)]


def _score(ac: np.ndarray, lag: float) -> float:
    """The weakest autocorrelation at the lag's first multiples: a true period repeats at every one of them."""
    n = len(ac)
    reach = int(0.6 * n)  # beyond, the overlap is too short to trust
    m = max(1, min(HARMONICS, int(reach / lag)))
    lags = lag * np.arange(1, m + 1)
    return float(np.interp(lags, np.arange(n), ac).min())


def _scores(ac: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """_score for many lags at once (the same numbers, without a Python loop)."""
    n = len(ac)
    lags = np.asarray(lags, np.float64)
    m = np.clip((int(0.6 * n) / lags).astype(int), 1, HARMONICS)
    mult = np.arange(1, HARMONICS + 1)
    vals = np.interp((lags[:, None] * mult[None, :]).ravel(), np.arange(n), ac).reshape(len(lags), HARMONICS)
    vals[mult[None, :] > m[:, None]] = np.inf
    return vals.min(axis=1)


def _spans(y: np.ndarray, w: np.ndarray, spans=SPANS):
    """(heights, weights, low, high, whole?) of each share of the visible height in `spans` with enough lines."""
    if len(y) < 8:
        return
    lo, hi = np.percentile(y, [1, 99])
    if hi - lo <= 0:
        return
    for a, b in spans:
        s0, s1 = lo + a * (hi - lo), lo + b * (hi - lo)
        inside = (y >= s0) & (y <= s1)
        if inside.sum() >= 8:
            yield y[inside], w[inside], s0, s1, (a, b) == WHOLE[0]


def regularity(y: np.ndarray, w: np.ndarray, spans=SPANS) -> float:
    """How evenly lines at heights `y` repeat at their best period: the peak of the multiples' score, on the
    whole height or, where that does not repeat, in the share of it that repeats best."""
    lags = np.arange(int(BINS / MOST_STOREYS), int(BINS / FEWEST_STOREYS), 2)
    best = 0.0
    for ys, ws, lo, hi, whole in _spans(y, w, spans):
        if not whole and best >= WHOLE_ENOUGH:
            break
        got = float(_scores(_autocorrelation(_profile(ys, ws, lo, hi)), lags).max())
        if whole or got >= SPAN_STRENGTH:
            best = max(best, got)
    return best


def find_period(y: np.ndarray, w: np.ndarray, tone=None, spans=SPANS) -> Periodicity | None:
    """Period and phase of lines at heights `y` (weights `w`); None when there are too few to tell.

    Read on the whole height, or where that does not repeat, in the share of it (of `spans`) that repeats
    best. `tone(lo, hi, bins)`, when given, is the facade's mean brightness along its height: rows of windows
    (or a ribbon) are darker bands once a storey, not twice, where a sill and a lintel can make the lines
    alone look periodic at half a storey.
    """
    best = None
    for ys, ws, lo, hi, whole in _spans(y, w, spans):
        if not whole and best is not None and best.strength >= WHOLE_ENOUGH:
            break
        got = _period_in(ys, ws, lo, hi, tone)
        if got is not None and (whole or got.strength >= SPAN_STRENGTH):
            best = got if best is None or got.strength > best.strength else best
    return best


def _period_in(y: np.ndarray, w: np.ndarray, lo: float, hi: float, tone) -> Periodicity | None:
    """find_period over the heights from `lo` to `hi`."""
    ac = _autocorrelation(_profile(y, w, lo, hi))
    lags = np.arange(int(BINS / MOST_STOREYS), int(BINS / FEWEST_STOREYS))
    scores = _scores(ac, lags)
    peaks = [i for i in range(1, len(lags) - 1) if scores[i] >= scores[i - 1] and scores[i] >= scores[i + 1]]
    if not peaks:
        return None
    top = max(scores[i] for i in peaks)
    if top <= 0:
        return None
    # A storey repeats at its multiples as well (which score alike): the shortest strong period is the storey,
    # unless the brightness says that it is half of one.
    cands = sorted(float(lags[i]) for i in peaks if scores[i] >= NEAR_BEST * top)
    best = cands[0]
    band = tone(lo, hi, BINS) if tone is not None else None
    if band is not None:
        # Half a storey shifts dark window rows onto light wall: the brightness anti-correlates there.
        def tone_ok(lag: float) -> bool:
            return _score(_autocorrelation(_detrended(band, lag)), lag) > TONE_ANTI

        kept = [c for c in cands if tone_ok(c)]
        # Every candidate half a storey: the storey is twice (or three times) the best one, if the lines
        # still repeat there.
        multiples = [cands[0] * m for m in (2, 3) if cands[0] * m <= lags[-1]]
        kept = kept or [c for c in multiples if _score(ac, c) >= MULTIPLE_SHARE * top and tone_ok(c)]
        best = kept[0] if kept else best
    fine = np.linspace(best - 1.5, best + 1.5, 31)
    fine_scores = _scores(ac, fine)
    lag = float(fine[int(np.argmax(fine_scores))])
    period = lag * (hi - lo) / BINS
    return Periodicity(period, phase_of(y, w, period), float(max(fine_scores)))


def phase_of(y: np.ndarray, w: np.ndarray, period: float) -> float:
    """Where the strongest line of a storey sits: the peak of the profile folded at the period."""
    ang = 2 * np.pi * (y / period % 1.0)
    hist, _ = np.histogram(ang, PHASE_BINS, (0, 2 * np.pi), weights=w)
    smooth = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
    peak = int(np.argmax(smooth))
    centre = (peak + 0.5) / PHASE_BINS * 2 * np.pi
    near = np.abs(np.angle(np.exp(1j * (ang - centre)))) < 2 * np.pi * 2 / PHASE_BINS
    if w[near].sum() > 0:
        centre = float(np.angle((w[near] * np.exp(1j * ang[near])).sum()))
    return float(centre % (2 * np.pi) / (2 * np.pi) * period)
