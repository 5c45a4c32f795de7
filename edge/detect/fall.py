"""Is a track a falling object? Judged from physics, in facade metres when the camera is calibrated.

A thrown or dropped object falls steadily, accelerates at up to g (less with air drag; light things
soon fall at a constant terminal speed), drifts sideways far less than it falls, and is explained by a
ballistic curve. Birds glide or climb, leaves fall slowly and sway, rain and insects are seen briefly or
move erratically; each of those fails at least one of these rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.config import FallConfig
from edge.detect.types import Origin, Verdict
from edge.geometry import FacadeMap


@dataclass
class _Space:
    """A track expressed in the space it is judged in: facade metres, or pixels without calibration."""

    t: np.ndarray
    along: np.ndarray
    up: np.ndarray
    tol: float
    min_fall: float
    gravity: float | None


_FIT_WINDOW_S = 2.0  # a longer track's curve is judged on its last this many seconds (drag bends it)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


class FallDecision:
    """Judges a track's points, (frame, x, y) in work pixels, as a fall or not."""

    def __init__(self, cfg: FallConfig, fps: float, frame_height: int, facade: FacadeMap | None):
        self.cfg = cfg
        self.fps = fps
        self.frame_height = frame_height
        self.facade = facade

    def judge(
        self,
        points: list[tuple[int, float, float]],
        widths: list[float] | None = None,
        strengths: list[float] | None = None,
        lengths: list[float] | None = None,
        chance: float = 0.0,
        evidence: float | None = None,
    ) -> Verdict:
        """The verdict on a track so far: level None, 'suspected' or 'confirmed', a score and why.

        `widths` are the blobs' sizes across the motion in pixels (with a calibration they bound the size);
        `strengths` their contrast over threshold (a faint object may drop out of more frames); `lengths`
        their longer side (a long blur streak places its centre less precisely); `chance` how many of its
        detections clutter alone would have given (rain, grain), which do not count as seeing it;
        `evidence` the tracker's score (log-likelihood ratio of object against clutter) summed over the track.
        """
        cfg = self.cfg
        if len(points) < cfg.min_points:
            return Verdict(None, 0.0, ["too few detections"])
        # Only elongation counts: a streak is long along its motion and narrow across; a swaying crown is not.
        streak = float(np.median(np.subtract(lengths, widths))) if lengths and widths else 0.0
        blur_px = cfg.fit_tol_blur_frac * max(streak, 0.0)
        sp = self._space(np.asarray(points, dtype=np.float64), blur_px)
        early, early_coef = self._early_fit(sp)
        coef, rms_up = _quadratic(sp.t, sp.up)
        _, rms_side = _quadratic(sp.t, sp.along)  # ballistic motion is smooth sideways too: no zig-zag, no sway
        rms = float(np.hypot(rms_up, rms_side))
        if sp.t[-1] > _FIT_WINDOW_S:
            # Over a long fall drag bends the parabola (a paper settles to its terminal speed): judge the
            # curve on its last seconds, long enough still to show an insect's zig-zag or a leaf's sway.
            recent = sp.t >= sp.t[-1] - _FIT_WINDOW_S
            if recent.sum() >= cfg.min_points:
                rms_recent = np.hypot(
                    _quadratic(sp.t[recent], sp.up[recent])[1], _quadratic(sp.t[recent], sp.along[recent])[1]
                )
                rms = min(rms, float(rms_recent))
        accel = -2.0 * coef[0]  # downward positive
        apex = int(np.argmax(sp.up))
        drop = float(sp.up[apex] - sp.up[-1])
        duration = float(sp.t[-1] - sp.t[apex])
        speed = drop / duration if duration > 0 else 0.0
        sideways = float(abs(sp.along[-1] - sp.along[apex]))
        end_speed = float(-(coef[1] + 2 * coef[0] * sp.t[-1]))
        span = (points[-1][0] - points[0][0]) + 1
        # In clutter a track finds some blob in its gate by chance: only detections beyond those count.
        chance = min(chance, 0.9 * (span - 1))
        detected = (len(points) - chance) / (span - chance)
        rises = np.diff(sp.up[apex:])
        rise_frac = float(np.mean(rises > sp.tol)) if len(rises) else 0.0

        origin, start_up = self._origin(sp, early, early_coef)
        # Counted from where it left the facade: a track that starts mid-fall has already fallen that far.
        fall = float(max(sp.up[apex], start_up) - sp.up[-1])
        reasons = []
        # What was seen must make a fall on its own; extrapolation only adds to it. Without a calibration
        # there is no g, speed or size check to back a shorter fall, so the whole minimum is needed.
        needed = (cfg.suspect_fall_share if sp.gravity is not None else 1.0) * sp.min_fall
        if drop < needed:
            reasons.append(f"fell {drop:.1f} < {needed:.1f}")
        if rise_frac > cfg.max_rise_frac:
            reasons.append(f"goes up in {rise_frac:.0%} of steps")
        if sideways > cfg.max_horizontal_ratio * max(drop, 1e-9):
            reasons.append(f"drifts sideways {sideways:.1f} for a fall of {drop:.1f}")
        excess = _blur_excess(points, widths, lengths)
        if excess > cfg.max_blur_excess_px:
            reasons.append(f"its blobs are streaks {excess:.0f} px longer than its own motion (rain)")
        per_frame = evidence / max(1, span - 1) if evidence is not None else None
        if per_frame is not None and per_frame < cfg.min_evidence:
            reasons.append(f"weak evidence: {per_frame:.1f} nats per frame, as a chain of clutter gives")
        # Hovering near its threshold, a faint object drops out of frames; a strong blob that does is
        # something else, such as a fluttering insect chained with its neighbours.
        faint = bool(strengths) and float(np.median(strengths)) <= cfg.faint_strength
        if detected < (cfg.faint_min_detected_frac if faint else cfg.min_detected_frac):
            reasons.append(f"seen in only {detected:.0%} of its frames")
        if rms > 2 * sp.tol:
            reasons.append(f"not ballistic: residual {rms:.2f} > {2 * sp.tol:.2f}")
        accel_g = speed_mps = None
        if sp.gravity is not None:
            accel_g, speed_mps = accel / sp.gravity, speed
            if not cfg.min_accel_g <= accel_g <= cfg.max_accel_g:
                reasons.append(f"accelerates at {accel_g:.1f} g")
            if end_speed > cfg.max_speed_mps:
                reasons.append(f"too fast: {end_speed:.0f} m/s")
            entry_speed = float(-early_coef[1])  # downward speed when first detected
            if entry_speed > cfg.max_entry_speed_mps and points[0][2] > cfg.entry_margin_frac * self.frame_height:
                reasons.append(f"appears mid-view already falling at {entry_speed:.0f} m/s")
            if speed < cfg.min_speed_mps:
                reasons.append(f"too slow: {speed:.1f} m/s")
            size_m = self._size_m(points, widths)
            if size_m > cfg.max_object_m:
                reasons.append(f"too big to be thrown: {size_m:.1f} m across on the facade")
            accel_score = _clip01(accel_g / 0.8) if accel_g <= cfg.max_accel_g else 0.0
        else:
            lin_rms = _linear_rms(sp.t, sp.up)
            accel_score = _clip01((lin_rms - rms) / max(lin_rms, 1e-9) * 2) if accel > 0 else 0.0
            # No scale, so no g to compare with: what is left of gravity is that the fall speeds up. Cars,
            # people and swaying branches move down the image at a steady pace, or slow down.
            gained = 0.5 * accel * duration**2 / max(drop, 1e-9)
            if gained < cfg.uncalibrated_min_accel_share:
                reasons.append(f"does not speed up: acceleration explains {gained:.0%} of its fall")
        fit_score = _clip01(1.0 - rms / (2 * sp.tol))
        drop_score = _clip01(fall / (2 * sp.min_fall))
        score = round(0.45 * accel_score + 0.35 * fit_score + 0.2 * drop_score, 3)

        fall_m = fall if sp.gravity is not None else None
        if self.facade is not None and self.facade.outside(origin.facade_x_m, origin.height_m):
            reasons.append(f"starts off the facade ({origin.facade_x_m:.1f} m along, {origin.height_m:.1f} m up)")
        verdict = Verdict(None, score, reasons, fall_m, accel_g, speed_mps, origin)
        if reasons or score < cfg.suspect_score:
            return verdict
        strong = fall >= sp.min_fall and rms <= sp.tol and (accel_g is None or accel_g >= cfg.confirm_min_accel_g)
        if sp.gravity is None:
            strong = strong and accel_score >= 0.5
        verdict.level = "confirmed" if strong and score >= cfg.confirm_score else "suspected"
        return verdict

    def _space(self, pts: np.ndarray, blur_px: float = 0.0) -> _Space:
        t = (pts[:, 0] - pts[0, 0]) / self.fps
        xy = pts[:, 1:3]
        cfg = self.cfg
        if self.facade is None:
            tol = cfg.fit_tol_px + blur_px
            return _Space(t, xy[:, 0], -xy[:, 1], tol, cfg.min_fall_frac * self.frame_height, None)
        fac = self.facade.to_facade(xy)
        mpp = self.facade.metres_per_pixel(tuple(np.median(xy, axis=0)))
        tol = (cfg.fit_tol_px + blur_px) * mpp + cfg.fit_tol_m
        min_fall = cfg.min_fall_floors * self.facade.floor_height_m
        return _Space(t, fac[:, 0], fac[:, 1], tol, min_fall, cfg.gravity_mps2)

    def _size_m(self, points: list[tuple[int, float, float]], widths: list[float] | None) -> float:
        """The object's size on the facade, from its blobs' median width less the halo of blur and codec.

        An insect or bird close to the lens is big in the image and far bigger once put on the facade.
        """
        if not widths:
            return 0.0
        px = max(0.0, float(np.median(widths)) - self.cfg.size_slack_px)
        where = tuple(np.median(np.asarray(points)[:, 1:3], axis=0))
        return px * self.facade.metres_per_pixel(where)

    def _early_fit(self, sp: _Space) -> tuple[int, np.ndarray]:
        """How many points the first origin_fit_s seconds hold, and the quadratic fitted to their height."""
        early = max(4, int(np.searchsorted(sp.t, self.cfg.origin_fit_s, side="right")))
        return early, _quadratic(sp.t[:early], sp.up[:early])[0]

    def _origin(self, sp: _Space, early: int, coef: np.ndarray) -> tuple[Origin, float]:
        """Where the track left the facade, and that height in the track's own space."""
        # Already falling at speed v when first seen, it had fallen at least v^2/2g from rest (drag only
        # makes that longer): extend the track back by that much, no more than max_backtrack_s.
        v0 = -coef[1]  # downward speed at the first detection
        up0 = float(np.polyval(coef, 0.0))
        if sp.gravity is not None:
            back_t = min(max(v0, 0.0) / sp.gravity, self.cfg.max_backtrack_s)
            height = up0 + max(v0, 0.0) * back_t - 0.5 * sp.gravity * back_t**2
        else:
            back_t = min(max(v0, 0.0) / max(-2 * coef[0], 1e-9), self.cfg.max_backtrack_s)
            height = float(np.polyval(coef, -back_t))
        along_fit = np.polyfit(sp.t[:early], sp.along[:early], 1)
        along = float(np.polyval(along_fit, -back_t))
        if self.facade is None:
            return Origin(along, -height, None, None, None), height
        px = self.facade.to_image(np.array([[along, height]]))[0]
        return Origin(float(px[0]), float(px[1]), self.facade.floor_at(height), along, height), height


def _quadratic(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef = np.polyfit(t, y, 2)
    rms = float(np.sqrt(np.mean((np.polyval(coef, t) - y) ** 2)))
    return coef, rms


def _linear_rms(t: np.ndarray, y: np.ndarray) -> float:
    coef = np.polyfit(t, y, 1)
    return float(np.sqrt(np.mean((np.polyval(coef, t) - y) ** 2)))


def _blur_excess(
    points: list[tuple[int, float, float]], widths: list[float] | None, lengths: list[float] | None
) -> float:
    """How much longer, in pixels, the track's blobs are than its own motion can smear them (median).

    The shutter is open at most one frame interval, so an object's blur streak is no longer than the step it
    makes per frame. A chain of raindrops moves as it happens to be chained, while each streak is as long
    as its own drop made it.
    """
    if not widths or not lengths or len(points) < 3:
        return 0.0
    pts = np.asarray(points, dtype=np.float64)
    steps = np.hypot(np.diff(pts[:, 1]), np.diff(pts[:, 2])) / np.maximum(np.diff(pts[:, 0]), 1)
    step = np.concatenate([[steps[0]], np.maximum(steps[:-1], steps[1:]), [steps[-1]]])
    excess = np.subtract(lengths, widths) - step
    return float(np.median(excess))
