"""Is a track a falling object? Judged from physics, in facade metres when the camera is calibrated.

A thrown or dropped object falls steadily, accelerates at up to g (less with air drag; light things
soon fall at a constant terminal speed), drifts sideways far less than it falls, and is explained by a
ballistic curve. Birds glide or climb, leaves fall slowly and sway, rain and insects are seen briefly or
move erratically; each of those fails at least one of these rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.config import FallConfig
from edge.detect.fit import fit_poly, median
from edge.detect.types import Origin, Verdict
from edge.geometry import FacadeMap


@dataclass
class _Space:
    """A track expressed in the space it is judged in: facade metres, or pixels without calibration."""

    t: np.ndarray
    along: np.ndarray
    up: np.ndarray
    min_fall: float
    gravity: float | None


_FIT_WINDOW_S = 2.0  # a longer track's curve is judged on its last this many seconds (drag bends it)
_BALLISTIC_FACTOR = 2.0  # a residual over this many fit tolerances is no ballistic curve; within one confirms
_RELEASE_ROUNDS = 20  # release time and distance out depend on each other: rounds until they settle, at most
_RELEASE_SETTLED_S = 1e-3  # the release time has settled when a round moves it less than this
_UNCALIBRATED_BACKTRACK_S = 0.8  # without a scale, speed over a drag-limited track's own pull overshoots: cap it
_FULL_ACCEL_G = 0.8  # accelerating at this share of g scores full marks (air drag takes the rest)
# How the score weighs gravity-like acceleration, a tight fit and the height fallen (they add up to 1).
_ACCEL_WEIGHT, _FIT_WEIGHT, _DROP_WEIGHT = 0.45, 0.35, 0.2
_FULL_DROP = 2.0  # falling this many times the minimum fall scores full marks for height
_STRAY_HEAD_MAX = 2  # at most this many first detections may be dropped as another blob's...
_STRAY_GAP_FRAMES = 2  # ...when the track then went undetected for more frames than this
_STRAY_HEAD_TOLS = 6.0  # ...when they lie this many fit tolerances off the curve of the detections after them
_MAX_CHANCE_SHARE = 0.9  # clutter explains at most this share of a track's frames: some are the object's
_UNCALIBRATED_STRONG_ACCEL = 0.5  # without a scale, confirmed needs an accel score of this: it clearly speeds up
# A track falls like a body when it accelerates at this x g or more (with the whole minimum fall, on a tight
# curve): a heavy object that drag takes little off g from yet, while a chance chain of clutter bends its
# curve as it likes. It then backs a fall first seen mid-view and fast, or one that scored weakly.
_BODY_MIN_G = 0.7


def min_fall_m(cfg: FallConfig, facade: FacadeMap) -> float:
    """Calibrated: the whole minimum fall in facade metres (`fell_far_enough` asks a share of it first)."""
    return cfg.min_fall_floors * facade.floor_height_m


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


@dataclass(frozen=True)
class Descent:
    """How far and how straight a track fell, and how well it scored: the measures that are cheap to take.

    Most tracks judged in a busy scene (rain, insects, IR grain) already fail a rule on these alone.
    Heights and distances are in the space the track is judged in: facade metres, or pixels uncalibrated.
    """

    calibrated: bool
    min_fall: float  # the whole minimum fall (min_fall_floors, or min_fall_frac of the frame)
    drop: float  # seen falling, from its highest point to its last
    sideways: float  # sideways travel from its highest point to its last
    evidence_per_frame: float | None  # the tracker's score per frame, nats; None when not given


@dataclass(frozen=True)
class Measures(Descent):
    """One track's motion, measured once, in the space it is judged in: facade metres, or pixels uncalibrated.

    Heights and distances are in that space (metres, or pixels), times in seconds.
    """

    tol: float  # RMS residual of a ballistic fit that confirms (blur streaks widen it)
    fall: float  # fallen since it left the facade: the origin is extrapolated above its first detection
    rise_frac: float  # share of its steps after its highest point that go up
    blur_excess: float  # pixels its blobs are longer than its own motion can smear them (median)
    detected: float  # share of its frames it was seen in, beyond what clutter alone would give
    faint: bool  # its blobs hover near their motion threshold
    rms: float  # residual of the ballistic fit, up and sideways
    accel: float  # fitted downward acceleration, per second squared
    accel_g: float | None  # the same in g (calibrated only)
    speed: float  # mean downward speed from its highest point, per second
    end_speed: float  # fitted downward speed at its last detection
    entry_speed: float  # fitted downward speed at its first detection
    entry_y_frac: float  # where it was first seen, as a fraction of the frame height from the top
    size_m: float  # width on the facade less blur and codec halo (calibrated only, else 0)
    gained: float  # share of its fall its fitted acceleration explains
    linear_rms: float  # residual of a constant-speed fit of its height
    origin: Origin
    off_facade: bool  # the origin lies above the roof or beside the building


# Each rule looks at a track's measures and returns why it is no fall, or None. A track is a fall when
# every rule passes; the reasons are reported in this order.
Rule = Callable[[Measures, FallConfig], "str | None"]


def fell_far_enough(m: Descent, cfg: FallConfig) -> str | None:
    """Seen falling suspect_fall_share of the minimum fall; without a calibration, the whole minimum.

    What was seen must make a fall on its own; extrapolation only adds to it. Without a calibration there
    is no g, speed or size check to back a shorter fall.
    """
    needed = (cfg.suspect_fall_share if m.calibrated else 1.0) * m.min_fall
    return f"fell {m.drop:.1f} < {needed:.1f}" if m.drop < needed else None


def rarely_rises(m: Measures, cfg: FallConfig) -> str | None:
    """After its highest point it goes up in at most max_rise_frac of its steps (birds climb)."""
    return f"goes up in {m.rise_frac:.0%} of steps" if m.rise_frac > cfg.max_rise_frac else None


def falls_more_than_it_drifts(m: Descent, cfg: FallConfig) -> str | None:
    """Sideways at most max_horizontal_ratio per unit of fall (gliding birds drift further)."""
    if m.sideways > cfg.max_horizontal_ratio * max(m.drop, 1e-9):
        return f"drifts sideways {m.sideways:.1f} for a fall of {m.drop:.1f}"
    return None


def streaks_match_its_motion(m: Measures, cfg: FallConfig) -> str | None:
    """Its blobs are no longer than its own step per frame can smear them, plus max_blur_excess_px.

    The shutter is open at most one frame interval; a chain of raindrops is made of each drop's streaks.
    """
    if m.blur_excess > cfg.max_blur_excess_px:
        return f"its blobs are streaks {m.blur_excess:.0f} px longer than its own motion (rain)"
    return None


def _enters_late(m: Measures, cfg: FallConfig) -> bool:
    """Calibrated: first seen below the top entry_margin_frac already faster than max_entry_speed_mps."""
    return m.calibrated and m.entry_speed > cfg.max_entry_speed_mps and m.entry_y_frac > cfg.entry_margin_frac


def _falls_like_a_body(m: Measures) -> bool:
    """Calibrated: seen falling the whole minimum fall itself, on a tight curve, at _BODY_MIN_G x g or more."""
    return m.accel_g is not None and m.drop >= m.min_fall and m.rms <= m.tol and m.accel_g >= _BODY_MIN_G


def _evidence_floor(m: Descent, cfg: FallConfig) -> float:
    """The least evidence per frame any fall may have: weak_evidence_share of min_evidence when calibrated.

    Never above min_evidence: at min_evidence <= 0 (allowed) the share would lie above it, and no score is
    then weak.
    """
    return min(cfg.weak_evidence_share * cfg.min_evidence, cfg.min_evidence) if m.calibrated else cfg.min_evidence


def _weak_evidence(m: Descent, cfg: FallConfig) -> bool:
    """Scored from the evidence floor up to min_evidence per frame: a chain of clutter might have made it."""
    e = m.evidence_per_frame
    return e is not None and _evidence_floor(m, cfg) <= e < cfg.min_evidence


def stands_above_clutter(m: Descent, cfg: FallConfig) -> str | None:
    """The tracker's score is at least the evidence floor per frame (chance chains of clutter score less)."""
    e, floor = m.evidence_per_frame, _evidence_floor(m, cfg)
    if e is not None and e < floor:
        return f"weak evidence: {e:.2f} < {floor:.2f} nats per frame, as a chain of clutter gives"
    return None


def weak_evidence_backed_by_a_fall(m: Measures, cfg: FallConfig) -> str | None:
    """Calibrated: a track scoring under min_evidence (but not under the evidence floor) falls like a body.

    In IR grain or rain a faint object's detections cost little more than the clutter's, so its score per
    frame stays low; what a chance chain of clutter (drops, grain, a leaf) does not do is fall the whole
    minimum fall on a tight curve at 0.7 g or more. Physics reports such a fall as suspected only (`judge`).
    """
    if _weak_evidence(m, cfg) and not _falls_like_a_body(m):
        e = m.evidence_per_frame
        return f"weak evidence: {e:.2f} < {cfg.min_evidence:.2f} nats per frame, and no body's fall to back it"
    return None


def seen_often_enough(m: Measures, cfg: FallConfig) -> str | None:
    """Seen in min_detected_frac of its frames; a faint object in faint_min_detected_frac.

    Hovering near its threshold, a faint object drops out of frames; a strong blob that does is something
    else, such as a fluttering insect chained with its neighbours.
    """
    if m.detected < (cfg.faint_min_detected_frac if m.faint else cfg.min_detected_frac):
        return f"seen in only {m.detected:.0%} of its frames"
    return None


def is_ballistic(m: Measures, cfg: FallConfig) -> str | None:
    """A ballistic curve explains it, up and sideways (insects zig-zag, leaves sway)."""
    limit = _BALLISTIC_FACTOR * m.tol
    return f"not ballistic: residual {m.rms:.2f} > {limit:.2f}" if m.rms > limit else None


def accelerates_like_gravity(m: Measures, cfg: FallConfig) -> str | None:
    """Calibrated: its downward acceleration lies between min_accel_g and max_accel_g."""
    if m.accel_g is None or cfg.min_accel_g <= m.accel_g <= cfg.max_accel_g:
        return None
    return f"accelerates at {m.accel_g:.1f} g"


def no_faster_than_a_fall(m: Measures, cfg: FallConfig) -> str | None:
    """Calibrated: it ends no faster than max_speed_mps (rain, glitches)."""
    return f"too fast: {m.end_speed:.0f} m/s" if m.calibrated and m.end_speed > cfg.max_speed_mps else None


def seen_from_the_start(m: Measures, cfg: FallConfig) -> str | None:
    """Calibrated: first seen below the top entry_margin_frac no faster than max_entry_speed_mps.

    That fast it has fallen v^2/2g from rest and should have been seen higher up; an insect near the lens
    appears anywhere, already moving. Unless what follows falls like a body (the whole minimum fall at g):
    objects come out from behind a balcony, or out of the rain, and no insect does that. Physics reports
    such a fall as suspected only (`judge`), since where it started is a guess.
    """
    if _enters_late(m, cfg) and not _falls_like_a_body(m):
        return f"appears mid-view already falling at {m.entry_speed:.0f} m/s"
    return None


def no_slower_than_a_fall(m: Measures, cfg: FallConfig) -> str | None:
    """Calibrated: its mean speed is at least min_speed_mps (leaves and feathers are slower)."""
    return f"too slow: {m.speed:.1f} m/s" if m.calibrated and m.speed < cfg.min_speed_mps else None


def small_enough_to_throw(m: Measures, cfg: FallConfig) -> str | None:
    """Calibrated: no wider than max_object_m on the facade (a moth near the lens looks metres wide)."""
    if m.calibrated and m.size_m > cfg.max_object_m:
        return f"too big to be thrown: {m.size_m:.1f} m across on the facade"
    return None


def speeds_up(m: Measures, cfg: FallConfig) -> str | None:
    """Uncalibrated: its acceleration explains uncalibrated_min_accel_share of its fall.

    No scale, so no g to compare with: what is left of gravity is that the fall speeds up. Cars, people
    and swaying branches move down the image at a steady pace, or slow down.
    """
    if not m.calibrated and m.gained < cfg.uncalibrated_min_accel_share:
        return f"does not speed up: acceleration explains {m.gained:.0%} of its fall"
    return None


def starts_on_the_facade(m: Measures, cfg: FallConfig) -> str | None:
    """Its origin is not above the top floor's roof nor beyond the facade's extent (when configured)."""
    if m.off_facade:
        o = m.origin
        return f"starts off the facade ({o.facade_x_m:.1f} m along, {o.height_m:.1f} m up)"
    return None


RULES: tuple[Rule, ...] = (
    fell_far_enough,
    rarely_rises,
    falls_more_than_it_drifts,
    streaks_match_its_motion,
    stands_above_clutter,
    weak_evidence_backed_by_a_fall,
    seen_often_enough,
    is_ballistic,
    accelerates_like_gravity,
    no_faster_than_a_fall,
    seen_from_the_start,
    no_slower_than_a_fall,
    small_enough_to_throw,
    speeds_up,
    starts_on_the_facade,
)
TOO_FEW = "too_few_detections"  # the name a verdict gives when a track is too short to judge (min_points)
LOW_SCORE = "scores_below_suspect"  # ...and when every rule passes but its score is under suspect_score
# The rules on how well a track was seen, not on how it moved: a fall's lead-in (`Tracker.lead_in`) need not
# pass them, its track has; a light object tumbling edge-on before its track began shows in few frames.
SEEING_RULES: tuple[Rule, ...] = (stands_above_clutter, weak_evidence_backed_by_a_fall, seen_often_enough)
# The rules that look at a track's `Descent` only: a track that fails one is no fall, whatever the rest says.
DESCENT_RULES: tuple[Callable[[Descent, FallConfig], str | None], ...] = (
    fell_far_enough,
    falls_more_than_it_drifts,
    stands_above_clutter,
)


def _accel_score(m: Measures, cfg: FallConfig) -> float:
    """0..1: how gravity-like its acceleration is (uncalibrated: how much better a curve fits than a line)."""
    if m.accel_g is not None:
        return _clip01(m.accel_g / _FULL_ACCEL_G) if m.accel_g <= cfg.max_accel_g else 0.0
    if m.accel <= 0:
        return 0.0
    return _clip01((m.linear_rms - m.rms) / max(m.linear_rms, 1e-9) * 2)


def _score(m: Measures, cfg: FallConfig) -> float:
    """0..1: gravity-like acceleration, a tight fit and the height fallen, weighed."""
    fit = _clip01(1.0 - m.rms / (_BALLISTIC_FACTOR * m.tol))
    drop = _clip01(m.fall / (_FULL_DROP * m.min_fall))
    return round(_ACCEL_WEIGHT * _accel_score(m, cfg) + _FIT_WEIGHT * fit + _DROP_WEIGHT * drop, 3)


def _doubtful(m: Measures, cfg: FallConfig) -> bool:
    """Believed on its body's fall alone (it entered late, or scored weakly): physics never confirms it.

    The learned verifier, when on, may still confirm it (edge.detect.verify): what it judges is whether the
    thing is a falling object, which is what was in doubt.
    """
    return _enters_late(m, cfg) or _weak_evidence(m, cfg)


def _is_strong(m: Measures, cfg: FallConfig) -> bool:
    """Confirmable: the whole minimum fall from its origin, a tight fit, and heavy (it accelerates)."""
    strong = m.fall >= m.min_fall and m.rms <= m.tol
    if m.accel_g is not None:
        return strong and m.accel_g >= cfg.confirm_min_accel_g
    return strong and _accel_score(m, cfg) >= _UNCALIBRATED_STRONG_ACCEL


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
        waived: tuple[Rule, ...] = (),
    ) -> Verdict:
        """The verdict on a track so far: level None, 'suspected' or 'confirmed', a score and why.

        `widths` are the blobs' sizes across the motion in pixels (with a calibration they bound the size);
        `strengths` their contrast over threshold (a faint object may drop out of more frames); `lengths`
        their longer side (a long blur streak places its centre less precisely); `chance` how many of its
        detections clutter alone would have given (rain, grain), which do not count as seeing it;
        `evidence` the tracker's score (log-likelihood ratio of object against clutter) summed over the track;
        `waived` rules are not applied.
        """
        cfg = self.cfg
        if len(points) < cfg.min_points:
            return Verdict(None, 0.0, ["too few detections"], [TOO_FEW])
        # A track may begin on another blob (a second throw, a flicker) before it finds the object: those
        # first detections lie off the curve the rest follows, and would put the origin where nothing fell.
        head = _stray_head(points, cfg.fit_tol_px, cfg.min_points)
        if head:
            points = points[head:]
            widths, strengths, lengths = (v[head:] if v else v for v in (widths, strengths, lengths))
        m = self.measure(points, widths, strengths, lengths, chance, evidence)
        rules = [rule for rule in RULES if rule not in waived]
        failed = [(rule.__name__, reason) for rule in rules if (reason := rule(m, cfg)) is not None]
        reasons = [reason for _, reason in failed]
        score = _score(m, cfg)
        fall_m = m.fall if m.calibrated else None
        speed = m.speed if m.calibrated else None
        verdict = Verdict(None, score, reasons, [n for n, _ in failed], fall_m, m.accel_g, speed, m.origin)
        if reasons:
            return verdict
        if score < cfg.suspect_score:
            verdict.reasons.append(f"scores {score:.2f}, under suspect_score {cfg.suspect_score}")
            verdict.rules.append(LOW_SCORE)
            return verdict
        confirmable = _is_strong(m, cfg) and score >= cfg.confirm_score and not _doubtful(m, cfg)
        verdict.level = "confirmed" if confirmable else "suspected"
        return verdict

    def could_alert(self, points: list[tuple[int, float, float]], evidence: float | None = None) -> bool:
        """False when `judge` would give the track no level: too few detections, a `DESCENT_RULES` rule fails,
        or it scored weakly and has not yet fallen the whole minimum (`weak_evidence_backed_by_a_fall`).

        Measured as `judge` measures (the same stray head dropped), at a fraction of its cost: in a busy
        scene most tracks judged each frame are clutter that has not fallen far, and are settled here.
        """
        cfg = self.cfg
        if len(points) < cfg.min_points:
            return False
        points = points[_stray_head(points, cfg.fit_tol_px, cfg.min_points) :]
        d = self._descent(self._space(np.asarray(points, dtype=np.float64)), points, evidence)
        if _weak_evidence(d, cfg) and d.drop < d.min_fall:
            return False
        return not any(rule(d, cfg) is not None for rule in DESCENT_RULES)

    def measure(
        self,
        points: list[tuple[int, float, float]],
        widths: list[float] | None = None,
        strengths: list[float] | None = None,
        lengths: list[float] | None = None,
        chance: float = 0.0,
        evidence: float | None = None,
    ) -> Measures:
        """Everything the rules look at, measured once from a track (arguments as for `judge`)."""
        cfg = self.cfg
        pts = np.asarray(points, dtype=np.float64)
        sp = self._space(pts)
        d = self._descent(sp, points, evidence)
        # Only elongation counts: a streak is long along its motion and narrow across; a swaying crown is not.
        streak = median([n - w for n, w in zip(lengths, widths, strict=True)]) if lengths and widths else 0.0
        tol = self._tol(pts, cfg.fit_tol_blur_frac * max(streak, 0.0))
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
        drop = d.drop
        duration = float(sp.t[-1] - sp.t[apex])
        span = (points[-1][0] - points[0][0]) + 1
        # In clutter a track finds some blob in its gate by chance: only detections beyond those count.
        chance = min(chance, _MAX_CHANCE_SHARE * (span - 1))
        rises = np.diff(sp.up[apex:])
        origin, start_up = self._origin(sp, early, early_coef)
        calibrated = d.calibrated
        return Measures(
            calibrated=calibrated,
            min_fall=d.min_fall,
            drop=drop,
            sideways=d.sideways,
            evidence_per_frame=d.evidence_per_frame,
            tol=tol,
            # Counted from where it left the facade: a track that starts mid-fall has already fallen that far.
            fall=float(max(sp.up[apex], start_up) - sp.up[-1]),
            rise_frac=float(np.mean(rises > tol)) if len(rises) else 0.0,
            blur_excess=_blur_excess(points, widths, lengths),
            detected=(len(points) - chance) / (span - chance),
            faint=bool(strengths) and median(strengths) <= cfg.faint_strength,
            rms=rms,
            accel=accel,
            accel_g=accel / sp.gravity if calibrated else None,
            speed=drop / duration if duration > 0 else 0.0,
            end_speed=float(-(coef[1] + 2 * coef[0] * sp.t[-1])),
            entry_speed=float(-early_coef[1]),  # downward speed when first detected
            entry_y_frac=points[0][2] / self.frame_height,
            size_m=self._size_m(points, widths) if calibrated else 0.0,
            gained=0.5 * accel * duration**2 / max(drop, 1e-9),
            linear_rms=_linear_rms(sp.t, sp.up),
            origin=origin,
            off_facade=self.facade is not None and self.facade.outside(origin.facade_x_m, origin.height_m),
        )

    def _space(self, pts: np.ndarray) -> _Space:
        t = (pts[:, 0] - pts[0, 0]) / self.fps
        xy = pts[:, 1:3]
        cfg = self.cfg
        if self.facade is None:
            return _Space(t, xy[:, 0], -xy[:, 1], cfg.min_fall_frac * self.frame_height, None)
        fac = self.facade.to_facade(xy)
        return _Space(t, fac[:, 0], fac[:, 1], min_fall_m(cfg, self.facade), cfg.gravity_mps2)

    def _descent(self, sp: _Space, points: list[tuple[int, float, float]], evidence: float | None) -> Descent:
        apex = int(np.argmax(sp.up))
        span = (points[-1][0] - points[0][0]) + 1
        return Descent(
            calibrated=sp.gravity is not None,
            min_fall=sp.min_fall,
            drop=float(sp.up[apex] - sp.up[-1]),
            sideways=float(abs(sp.along[-1] - sp.along[apex])),
            evidence_per_frame=evidence / max(1, span - 1) if evidence is not None else None,
        )

    def _tol(self, pts: np.ndarray, blur_px: float) -> float:
        """The RMS residual of a ballistic fit that confirms, in the judged space, for blobs smeared `blur_px`."""
        cfg = self.cfg
        if self.facade is None:
            return cfg.fit_tol_px + blur_px
        mpp = self.facade.metres_per_pixel((median(pts[:, 1].tolist()), median(pts[:, 2].tolist())))
        return (cfg.fit_tol_px + blur_px) * mpp + cfg.fit_tol_m

    def _size_m(self, points: list[tuple[int, float, float]], widths: list[float] | None) -> float:
        """The object's size on the facade, from its blobs' median width less the halo of blur and codec.

        An insect or bird close to the lens is big in the image and far bigger once put on the facade.
        """
        if not widths:
            return 0.0
        px = max(0.0, median(widths) - self.cfg.size_slack_px)
        where = (median([p[1] for p in points]), median([p[2] for p in points]))
        return px * self.facade.metres_per_pixel(where)

    def _early_fit(self, sp: _Space) -> tuple[int, np.ndarray]:
        """How many points the first origin_fit_s seconds hold, and the quadratic fitted to their height."""
        early = max(4, int(np.searchsorted(sp.t, self.cfg.origin_fit_s, side="right")))
        return early, _quadratic(sp.t[:early], sp.up[:early])[0]

    def _backtrack_s(self, sp: _Space) -> float:
        """How far back the origin may be extrapolated: max_backtrack_s, and no more than
        _UNCALIBRATED_BACKTRACK_S without a scale (speed over g bounds the time fallen only with one)."""
        if sp.gravity is None:
            return min(self.cfg.max_backtrack_s, _UNCALIBRATED_BACKTRACK_S)
        return self.cfg.max_backtrack_s

    def _origin(self, sp: _Space, early: int, coef: np.ndarray) -> tuple[Origin, float]:
        """Where the track left the facade, and that height in the track's own space."""
        if self.facade is not None and self.facade.brings_out(self.cfg.release_out_m):
            return self._origin_in_front(sp, early)
        back_s = self._backtrack_s(sp)
        along, height, _ = _back_to_release(sp.t[:early], sp.along[:early], coef, sp.gravity, back_s)
        if self.facade is None:
            return Origin(along, -height, None, None, None), height
        px = self.facade.to_image(np.array([[along, height]]))[0]
        return Origin(float(px[0]), float(px[1]), self.facade.floor_at(height), along, height), height

    def _origin_in_front(self, sp: _Space, early: int) -> tuple[Origin, float]:
        """The origin of a track in front of the wall: it left the hand release_out_m out and moves away.

        Seen from below, an object in front of the wall hides a higher wall point, and more so the further
        out it is; a throw keeps moving out as it falls (nothing thrown goes back through the wall). So the
        track is first placed where it was, `release_out_m` plus `release_out_speed_mps` times the time since
        release out from the wall, and extrapolated back to release there, where gravity is true to scale.
        """
        cfg, facade = self.cfg, self.facade
        t = sp.t[:early]
        back_t, max_back_s = 0.0, self._backtrack_s(sp)
        for _ in range(_RELEASE_ROUNDS):
            out = cfg.release_out_m + cfg.release_out_speed_mps * (t + back_t)
            along, up = facade.in_front(sp.along[:early], sp.up[:early], out)
            coef = _quadratic(t, up)[0]
            last = back_t
            release_along, height, back_t = _back_to_release(t, along, coef, sp.gravity, max_back_s)
            if abs(back_t - last) < _RELEASE_SETTLED_S:
                break
        seen = facade.on_wall(release_along, height, cfg.release_out_m)  # the wall point it hid at release
        px = facade.to_image(np.array([seen]))[0]
        origin = Origin(float(px[0]), float(px[1]), facade.floor_at(height), release_along, height)
        return origin, seen[1]


def _back_to_release(
    t: np.ndarray, along: np.ndarray, coef: np.ndarray, gravity: float | None, max_back_s: float
) -> tuple[float, float, float]:
    """Where and how long before its first detection a track left the hand: (along, height, seconds back).

    Already falling at speed v when first seen, it had fallen at least v^2/2g from rest (drag only makes
    that longer): the track is extended back by that much, no more than `max_back_s`. `coef` is the
    quadratic fitted to the height of these first points; without gravity (no calibration) its own curve.
    """
    v0 = -coef[1]  # downward speed at the first detection
    up0 = float(np.polyval(coef, 0.0))
    if gravity is not None:
        back_t = min(max(v0, 0.0) / gravity, max_back_s)
        height = up0 + max(v0, 0.0) * back_t - 0.5 * gravity * back_t**2
    else:
        back_t = min(max(v0, 0.0) / max(-2 * coef[0], 1e-9), max_back_s)
        height = float(np.polyval(coef, -back_t))
    along_fit = fit_poly(t, along, 1)
    return float(np.polyval(along_fit, -back_t)), float(height), float(back_t)


def _stray_head(points: list[tuple[int, float, float]], tol_px: float, min_points: int) -> int:
    """How many first detections belong to another blob, seen before a gap and far off the curve after it.

    A track seen once or twice coasts on its prediction through missed frames with a gate that widens
    each frame, and takes up whatever enters it next: another throw, the object it was not. Such a head
    ends in a gap of `_STRAY_GAP_FRAMES` or more and lies off the curve fitted, in pixels, to the next
    `min_points` detections (a short piece, which drag has not bent). A head without a gap is kept: a
    chain of contiguous blobs that bends is for the rules to judge.
    """
    for head in range(1, _STRAY_HEAD_MAX + 1):
        if len(points) - head < min_points:
            return 0
        if points[head][0] - points[head - 1][0] <= _STRAY_GAP_FRAMES:
            continue
        body = np.asarray(points[head : head + min_points], dtype=np.float64)
        t = body[:, 0] - points[0][0]
        fx, fy = fit_poly(t, body[:, 1:3], 2).T
        tail = np.asarray(points[:head], dtype=np.float64)
        miss = np.hypot(
            np.polyval(fx, tail[:, 0] - points[0][0]) - tail[:, 1],
            np.polyval(fy, tail[:, 0] - points[0][0]) - tail[:, 2],
        )
        return head if float(miss.min()) > _STRAY_HEAD_TOLS * tol_px else 0
    return 0


def _quadratic(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef = fit_poly(t, y, 2)
    rms = float(np.sqrt(np.mean((np.polyval(coef, t) - y) ** 2)))
    return coef, rms


def _linear_rms(t: np.ndarray, y: np.ndarray) -> float:
    coef = fit_poly(t, y, 1)
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
    return median(excess.tolist())
