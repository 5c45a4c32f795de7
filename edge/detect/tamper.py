"""Camera problems from the picture itself: covered, blinded, defocused, moved; and offline from its status.

Pure computation: frames (luma planes) and times in, raised and cleared problems out. One frame per
`health.sample_s` is looked at, downscaled: about 15 ms of CPU a second at 1080p. Every problem
must last its own persistence before it is raised and `clear_s` of normal pictures before it clears, and
each measure has a higher bar to clear than to raise (hysteresis): nothing flaps on a passing bird, an
exposure step or an IR switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np

from edge.config import CameraHealthConfig
from edge.detect.moved import Match, MovedCheck, gradient

WORK_WIDTH = 640  # features and fine detail are measured on a copy this wide (a 1080p frame's third)
COARSE_WIDTH = 160  # coverage and coarse detail on one this wide: noise averages away, structure stays
SATURATED_LUMA = 230  # at or above: full white, in video range (white is 235) and full range alike
DETAIL_PERCENTILE = 99  # a facade at night is dark but for its lit windows: the strongest edges tell
CLEAR_FACTOR = 1.5  # a measure must be this much better than its raising bar to count as normal again
NORMAL_TAU_S = 3600.0  # the learned normal sharpness follows a softer picture (haze, seasons) over an hour
# A sharper one (a cleaned lens) only over six hours: night grain and rain add fine detail for hours, and a normal
# raised by them made the next morning's picture read as defocused, for good (nothing is learned while it is).
NORMAL_RISE_TAU_S = 6 * 3600.0
NORMAL_LEARN_MAX = 4 / 3  # a picture sharper than this against the normal teaches it nothing: grain or rain
MOVED_EVERY_S = 5.0  # the moved check (~20 ms at most) runs this often, and at least 4 times within moved_s
# The worker tells the offline check the camera's state about once a second (wall clock): a longer gap, or time
# going back, is the clock stepped (NTP at boot on a node without a real-time clock), not time offline.
STATE_GAP_S = 10.0


class Problem(StrEnum):
    """What is wrong with a camera; the values are the wire format (docs/schemas/camera-problem.schema.json)."""

    OFFLINE = "offline"
    COVERED = "covered"
    BLINDED = "blinded"
    DEFOCUSED = "defocused"
    MOVED = "moved"


class ProblemState(StrEnum):
    """A problem starts (raised) or ends (cleared: back to normal)."""

    RAISED = "raised"
    CLEARED = "cleared"


@dataclass(frozen=True)
class Transition:
    """A problem raised or cleared at time `t`; `since` is when the condition that decided it began."""

    problem: Problem
    state: ProblemState
    t: float
    since: float
    score: float | None  # the measure that decided it (see `reason`), or None for offline
    threshold: float | None
    reason: str
    detail: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Look:
    """What one checked picture shows."""

    detail: float  # strongest edges (DETAIL_PERCENTILE of the gradient) in the coarse copy, luma levels
    saturated: float  # share of the picture at full white
    sharpness: float  # fine detail over coarse detail: falls when the lens blurs, whatever the contrast
    mean: float


def work_image(luma: np.ndarray) -> np.ndarray:
    """The luma plane area-downscaled to WORK_WIDTH (never upscaled)."""
    h, w = luma.shape[:2]
    if w <= WORK_WIDTH:
        return np.ascontiguousarray(luma)
    return cv2.resize(luma, (WORK_WIDTH, max(1, round(h * WORK_WIDTH / w))), interpolation=cv2.INTER_AREA)


def look(work: np.ndarray) -> Look:
    """Coverage, saturation and sharpness of one work-size picture."""
    h, w = work.shape
    coarse = cv2.resize(work, (COARSE_WIDTH, max(1, round(h * COARSE_WIDTH / w))), interpolation=cv2.INTER_AREA)
    g_coarse = gradient(coarse)
    detail = float(np.percentile(g_coarse, DETAIL_PERCENTILE))
    # Fine detail at work size against detail at the coarse size, scaled to the same pixel: contrast, exposure
    # and lighting scale both alike; a blurred lens takes the fine detail only.
    fine = float(np.mean(gradient(work) ** 2))
    coarse_energy = float(np.mean(g_coarse**2)) * (COARSE_WIDTH / w) ** 2
    sharpness = fine * (COARSE_WIDTH / w) ** 2 / coarse_energy if coarse_energy > 1e-6 else 0.0
    return Look(detail, float(np.mean(work >= SATURATED_LUMA)), sharpness, float(work.mean()))


# -- persistence and hysteresis ---------------------------------------------------------------------------


class Latch:
    """One problem's state: raised after bad samples for `hold_s`, cleared after good ones for `clear_s`.

    A sample may also be undecided (None: the picture cannot tell, as defocus under a cover): it neither
    starts nor breaks a run.
    """

    def __init__(self, clear_s: float):
        self.clear_s = clear_s
        self.active = False
        self.bad_since: float | None = None
        self.good_since: float | None = None

    def update(self, t: float, bad: bool | None, hold_s: float) -> ProblemState | None:
        """Feed one sample; returns the change of state it made, if any."""
        if bad is None:
            return None
        if bad:
            self.good_since = None
            self.bad_since = t if self.bad_since is None else self.bad_since
            if not self.active and t - self.bad_since >= hold_s:
                self.active = True
                return ProblemState.RAISED
        else:
            self.bad_since = None
            self.good_since = t if self.good_since is None else self.good_since
            if self.active and t - self.good_since >= self.clear_s:
                self.active = False
                return ProblemState.CLEARED
        return None

    def restart(self) -> None:
        """Forget the run being counted (the clock stepped); a raised problem stays raised."""
        self.bad_since = self.good_since = None


class OfflineWatch:
    """`offline` raised when a camera has not been steadily online for `offline_alert_s`; cleared once it is.

    Steadily: online for `clear_s`. A camera that connects and drops again within seconds (a stalling
    stream, a failing cable) is still offline, and its moments online neither clear nor restart the count.
    """

    def __init__(self, cfg: CameraHealthConfig):
        self.cfg = cfg
        self.latch = Latch(clear_s=0.0)  # the steadiness is judged here, before the latch
        self.online_since: float | None = None
        self.last: float | None = None

    def update(self, t: float, online: bool, reason: str) -> Transition | None:
        """The camera's state at time `t` (wall clock); `reason` is why it is not online."""
        if self.last is not None and not 0.0 <= t - self.last <= STATE_GAP_S:
            # The clock stepped: hours the power was off (a node booting with the time it last saved) are not
            # hours offline, and a clock set back must not put off the alarm. Counting starts again from now.
            self.latch.restart()
            self.online_since = None
        self.last = t
        self.online_since = (t if self.online_since is None else self.online_since) if online else None
        steady = online and t - self.online_since >= self.cfg.clear_s
        bad = True if not online else (False if steady else None)
        change = self.latch.update(t, bad, self.cfg.offline_alert_s)
        if change is None:
            return None
        if change is ProblemState.RAISED:
            since = self.latch.bad_since or t
            why = f"no steady picture for {t - since:.0f} s: {reason}"
            return Transition(
                Problem.OFFLINE, change, t, since, round(t - since, 1), self.cfg.offline_alert_s, why
            )
        since = self.online_since or t
        why = f"receiving frames again for {t - since:.0f} s"
        return Transition(Problem.OFFLINE, change, t, since, None, self.cfg.offline_alert_s, why)


# -- the whole check --------------------------------------------------------------------------------------


@dataclass
class _Verdict:
    bad: bool | None
    score: float | None
    threshold: float
    reason: str
    hold_s: float
    detail: dict = field(default_factory=dict)


class CameraHealth:
    """Covered, blinded, defocused and moved for one camera, from one picture per `sample_s`."""

    def __init__(self, cfg: CameraHealthConfig, reference: np.ndarray | None = None):
        """`reference`: the calibration still as a grey image, or None to learn one from the first pictures."""
        self.cfg = cfg
        self.latches = {p: Latch(cfg.clear_s) for p in Problem if p is not Problem.OFFLINE}
        self.moved = MovedCheck(reference, learned=reference is None)
        self.normal_sharpness: float | None = None
        self._learning: list[float] = []
        self._last: float | None = None
        self._started: float | None = None
        self._shape: tuple[int, ...] | None = None
        self._moved_at: float | None = None

    @property
    def active(self) -> set[Problem]:
        return {p for p, latch in self.latches.items() if latch.active}

    @property
    def reference_source(self) -> str:
        """Where the moved check's reference comes from: "calibration" (the still) or "learned" (at start)."""
        return "learned" if self.moved.learned else "calibration"

    def due(self, t: float) -> bool:
        """True when a picture taken at `t` should be checked (one per sample_s)."""
        return self._last is None or t - self._last >= self.cfg.sample_s or t < self._last

    def update(self, t: float, luma: np.ndarray) -> list[Transition]:
        """Check the picture at time `t` if one is due; the problems it raised or cleared."""
        if not self.due(t):
            return []
        self._last = t
        self._started = t if self._started is None else self._started
        work = work_image(luma)
        if work.shape != self._shape:
            if self._shape is not None:  # another resolution: the reference is taken again at the new size
                self.moved.reference = self.moved.recent = self.moved.previous = None
            self._shape = work.shape
        seen = look(work)
        verdicts = {Problem.BLINDED: self._blinded(seen), Problem.COVERED: self._covered(seen)}
        blind = any(self.latches[p].active or v.bad for p, v in verdicts.items())
        verdicts[Problem.DEFOCUSED] = self._defocused(seen, blind)
        blurred = bool(verdicts[Problem.DEFOCUSED].bad) or self.latches[Problem.DEFOCUSED].active
        verdicts[Problem.MOVED] = self._moved(work, t, blind or blurred)  # a blur hides where the features are
        out = []
        for problem, v in verdicts.items():
            latch = self.latches[problem]
            change = latch.update(t, v.bad, v.hold_s)
            if change is not None:
                since = (latch.bad_since if change is ProblemState.RAISED else latch.good_since) or t
                out.append(Transition(problem, change, t, since, v.score, v.threshold, v.reason, v.detail))
        self._learn(seen, blind)
        return out

    def _blinded(self, seen: Look) -> _Verdict:
        bar = self.cfg.blinded_share
        active = self.latches[Problem.BLINDED].active
        bad = seen.saturated >= (bar / CLEAR_FACTOR if active else bar)
        why = f"{seen.saturated:.0%} of the picture is full white (bar {bar:.0%})"
        return _Verdict(bad, round(seen.saturated, 3), bar, why, self.cfg.blinded_s)

    def _covered(self, seen: Look) -> _Verdict:
        bar = self.cfg.covered_max_detail
        active = self.latches[Problem.COVERED].active
        limit = bar * CLEAR_FACTOR if active else bar
        bad = seen.detail < limit and seen.saturated < self.cfg.blinded_share  # full white is blinded
        why = f"featureless picture: strongest edges {seen.detail:.1f} luma levels (bar {bar:g})"
        return _Verdict(bad, round(seen.detail, 2), bar, why, self.cfg.covered_s)

    def _defocused(self, seen: Look, blind: bool) -> _Verdict:
        normal, bar = self.normal_sharpness, self.cfg.defocused_ratio
        if blind or normal is None or normal <= 0:
            return _Verdict(None, None, bar, "", self.cfg.defocused_s)
        ratio = seen.sharpness / normal
        active = self.latches[Problem.DEFOCUSED].active
        bad = ratio < (min(bar * CLEAR_FACTOR, 0.95) if active else bar)
        why = f"fine detail at {ratio:.0%} of this camera's normal (bar {bar:.0%})"
        detail = {"sharpness": round(seen.sharpness, 4)}
        return _Verdict(bad, round(ratio, 3), bar, why, self.cfg.defocused_s, detail)

    def _moved(self, work: np.ndarray, t: float, blind: bool) -> _Verdict:
        bar = self.cfg.moved_shift
        started = t if self._started is None else self._started
        every = min(MOVED_EVERY_S, self.cfg.moved_s / 4)
        if self._moved_at is not None and self._moved_at <= t < self._moved_at + every:
            return _Verdict(None, None, bar, "", self.cfg.moved_s)
        if blind or not self.moved.ready(work, t, started):
            return _Verdict(None, None, bar, "", self.cfg.moved_s)
        self._moved_at = t
        a = self.moved.align(work, t)
        source = {"reference": self.reference_source}
        if a.via in (Match.FEW, Match.UNSTEADY):
            return _Verdict(None, None, bar, "", self.cfg.moved_s)
        if a.shift is None:
            why = f"the view matches no reference picture ({self.reference_source} reference)"
            return _Verdict(True, None, bar, why, self.cfg.moved_lost_s, {**source, "matched": str(Match.NONE)})
        active = self.latches[Problem.MOVED].active
        bad = a.shift >= (bar / CLEAR_FACTOR if active else bar)
        if not bad:
            self.moved.remember(t)
        detail = {
            **source,
            "matched": str(a.via),
            "shift_px": round(a.shift * work.shape[1], 1),
            "work_width": work.shape[1],
            "rotation_deg": round(a.rotation_deg, 2),
            "inliers": a.inliers,
        }
        why = (
            f"the view is {a.shift:.1%} of its width off the {self.reference_source} reference, "
            f"rotated {a.rotation_deg:+.1f} deg (bar {bar:.1%})"
        )
        # Edges alone (no feature matched: an IR night against a still taken by day) are less sure of a
        # shift than features: it must last as long as a view that matches nothing.
        hold = self.cfg.moved_lost_s if a.via is Match.EDGES else self.cfg.moved_s
        return _Verdict(bad, round(a.shift, 4), bar, why, hold, detail)

    def _learn(self, seen: Look, blind: bool) -> None:
        """The camera's normal sharpness: the median of its first pictures, then a slow average of normal ones."""
        if blind or self.latches[Problem.DEFOCUSED].active or seen.sharpness <= 0:
            return
        if self.normal_sharpness is None:
            self._learning.append(seen.sharpness)
            if len(self._learning) * self.cfg.sample_s >= self.cfg.learn_s:
                self.normal_sharpness = float(np.median(self._learning))
                self._learning.clear()
            return
        ratio = seen.sharpness / self.normal_sharpness
        # Only pictures within normal teach it: from well clear of a defocus (never above the normal itself, for a
        # defocused_ratio near 1 would leave no picture that teaches) up to NORMAL_LEARN_MAX.
        if min(self.cfg.defocused_ratio * CLEAR_FACTOR, 1.0) <= ratio <= NORMAL_LEARN_MAX:
            alpha = min(1.0, self.cfg.sample_s / (NORMAL_RISE_TAU_S if ratio > 1.0 else NORMAL_TAU_S))
            self.normal_sharpness += alpha * (seen.sharpness - self.normal_sharpness)
