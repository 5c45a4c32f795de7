"""Multi-object tracker for small, fast, accelerating objects.

Each track is a constant-acceleration Kalman filter in pixels per frame. Association is by the
Mahalanobis distance of a blob to the predicted position (not box overlap: a falling object moves
more than its own size per frame), solved globally with the Hungarian method.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.config import TrackerConfig
from edge.detect.clutter import ClutterMap
from edge.detect.fit import fit_poly, median
from edge.detect.gated import FrameLook, Probe
from edge.detect.types import Blob

_F1 = np.array([[1.0, 1.0, 0.5], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
_F = np.kron(np.eye(2), _F1)  # state [x, vx, ax, y, vy, ay], one frame per step
_H = np.zeros((2, 6))
_H[0, 0] = _H[1, 3] = 1.0
_XY = slice(0, None, 3)  # the position [x, y] within the state: what H picks, as a view instead of a product
# Discrete white-jerk process noise for one frame (per unit jerk variance).
_Q1 = np.array([[1 / 20, 1 / 8, 1 / 6], [1 / 8, 1 / 3, 1 / 2], [1 / 6, 1 / 2, 1.0]])
_UNASSIGNED = 1e9
_TENTATIVE_HITS = 2  # a track seen this few times may give its place to a stronger newcomer
_DETECTION_P = 0.9  # chance an object in view is detected in a frame, for the track score
_HIT_LLR, _MISS_LLR = math.log(_DETECTION_P), math.log(1 - _DETECTION_P)
_MIN_CLUTTER_DENSITY = 1e-6  # blobs per pixel: a quiet frame still holds a blob or two of noise
_STITCH_HITS = 3  # a new track is matched to a lost one when it has this many hits: its motion is known
_STITCH_TAIL = 10  # the lost track's last this many detections give the curve a new track must continue
_MAX_LOST = 16  # lost tracks kept for stitching at once (a busy frame loses many; the newest are kept)
_MAX_CHAINS = 4000  # chains of leftover blobs followed at once (heavy rain makes ~600 chance pairs a frame)
_FOOTPRINT_BLOBS = 5  # a track's last this many blobs give the footprint a gated search looks for


@dataclass(eq=False)  # a track is itself, not its contents: list lookups compare identity, not arrays
class Track:
    """One tracked object: Kalman state and the detections assigned to it."""

    id: int
    state: np.ndarray
    cov: np.ndarray
    points: list[tuple[int, float, float]] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)  # each blob's narrower side: its size across the blur
    strengths: list[float] = field(default_factory=list)  # each blob's Blob.strength
    lengths: list[float] = field(default_factory=list)  # each blob's longer side: its blur streak
    chance: float = 0.0  # blobs that would have fallen into its gate by chance, summed over its frames
    evidence: float = 0.0  # log-likelihood ratio, object against clutter, summed over its frames (nats)
    evidence_at_hit: float = 0.0  # the same up to its last detection: misses after the end are no evidence
    chance_at_hit: float = 0.0
    missed: int = 0
    falling: bool = False
    chained: bool = False  # started from a chain of leftover blobs (`Tracker._grow_chains`), in its own slots
    boxes: list[tuple[int, int]] = field(default_factory=list)  # each blob's width and height
    tone: int = 0  # its blobs brighter than the background behind them, less those darker
    gated: int = 0  # detections found by a gated search (`Tracker._search`), not by the prefilter

    @property
    def position(self) -> tuple[float, float]:
        return float(self.state[0]), float(self.state[3])

    @property
    def hits(self) -> int:
        return len(self.points)

    def record(self, frame: int, b: Blob) -> None:
        """Keep the blob assigned to this track in `frame`."""
        self.points.append((frame, b.x, b.y))
        self.evidence_at_hit, self.chance_at_hit = self.evidence, self.chance
        self.widths.append(float(min(b.w, b.h)))
        self.strengths.append(b.strength)
        self.lengths.append(float(max(b.w, b.h)))
        self.boxes.append((b.w, b.h))

    def prepend(self, earlier: Track, evidence: float, chance: float) -> None:
        """Put `earlier`'s detections in front of this track's, with `evidence` and `chance` added to its score."""
        self.points[:0] = earlier.points
        self.widths[:0], self.strengths[:0], self.lengths[:0] = earlier.widths, earlier.strengths, earlier.lengths
        self.boxes[:0] = earlier.boxes
        self.evidence += evidence
        self.evidence_at_hit += evidence
        self.chance += chance
        self.chance_at_hit += chance

    def footprint(self) -> tuple[int, int]:
        """The object's box in the image, width and height: the median of its last few blobs'."""
        recent = self.boxes[-_FOOTPRINT_BLOBS:]
        return round(median([w for w, _ in recent])), round(median([h for _, h in recent]))


@dataclass(frozen=True)
class LeadIn:
    """Blobs a track's object left before the track began (`Tracker.look_back`), and what they add to its score."""

    blobs: tuple[tuple[int, Blob], ...]  # (frame, blob), oldest first, all before the track's first detection
    evidence: float  # nats added to the track score, up to the earliest blob
    chance: float  # detections clutter alone would have given over the same frames
    missed: int = 0  # frames up to the earliest blob it was not found in (no blob on the curve, or none at all)

    def outweighs_its_misses(self) -> bool:
        """Whether its blobs are likelier its object's than clutter's, weighing hits and misses at the rate it
        was seen (at most the tracker's): a paper tumbling edge-on shows in a third of its frames, and a frame
        it does not show in is then little sign it was not there."""
        hits = len(self.blobs)
        rate = min(_DETECTION_P, hits / (hits + self.missed))
        return (
            self.evidence + hits * (math.log(rate) - _HIT_LLR) + self.missed * (math.log1p(-rate) - _MISS_LLR) > 0
        )

    def prepend_to(self, t: Track) -> None:
        """Put the blobs in front of the track's detections and their score into its score."""
        earlier = Track(0, t.state, t.cov)
        for frame, b in self.blobs:
            earlier.record(frame, b)
        t.prepend(earlier, self.evidence, self.chance)

    def before(self, t: Track) -> Track:
        """A copy of the track with the blobs in front (the track itself unchanged): to judge it so."""
        copy = replace(
            t,
            points=list(t.points),
            widths=list(t.widths),
            strengths=list(t.strengths),
            lengths=list(t.lengths),
            boxes=list(t.boxes),
        )
        self.prepend_to(copy)
        return copy


def _position_cov(cov: np.ndarray) -> np.ndarray:
    """The (..., 2, 2) covariance of the position [x, y] in (..., 6, 6) state covariances: H P H^T."""
    return cov[..., _XY, _XY]


def _inverse_2x2(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses and determinants of (..., 2, 2) matrices in closed form: no LAPACK call per matrix."""
    det = s[..., 0, 0] * s[..., 1, 1] - s[..., 0, 1] * s[..., 1, 0]
    adj = np.stack([s[..., 1, 1], -s[..., 0, 1], -s[..., 1, 0], s[..., 0, 0]], axis=-1).reshape(s.shape)
    return adj / det[..., None, None], det


def _gate_distances(
    z: np.ndarray, p: np.ndarray, pos: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every track (rows) against every blob (columns): the offsets ex, ey, e^T S^-1 e, and det S.

    `z` (t, 2) and `p` (t, 2, 2) are the tracks' predicted positions and their covariances, `pos` (n, 2)
    and `r` (n, 2, 2) the blobs' positions and noises; S = p + r. In closed form, one (t, n) array per
    term: a busy frame has thousands of pairs.
    """
    ex, ey = pos[:, 0] - z[:, 0, None], pos[:, 1] - z[:, 1, None]
    s00, s01 = p[:, 0, 0, None] + r[:, 0, 0], p[:, 0, 1, None] + r[:, 0, 1]
    s10, s11 = p[:, 1, 0, None] + r[:, 1, 0], p[:, 1, 1, None] + r[:, 1, 1]
    det = s00 * s11 - s01 * s10
    return ex, ey, (s11 * ex * ex - (s01 + s10) * ex * ey + s00 * ey * ey) / det, det


class Tracker:
    """Keeps several tracks at once; call `step` once per frame with that frame's blobs."""

    def __init__(
        self,
        cfg: TrackerConfig,
        frame_size: tuple[int, int],
        fps: float = 25.0,
        gravity_px: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ):
        """`gravity_px(xs, ys)`: g in pixels per frame squared near each pixel, known from a facade calibration."""
        self.cfg = cfg
        self.gravity_px = gravity_px
        self._clutter = _MIN_CLUTTER_DENSITY
        self._map = ClutterMap(frame_size, fps, _MIN_CLUTTER_DENSITY) if cfg.local_clutter else None
        self.width, self.height = frame_size
        self.tracks: list[Track] = []
        self._lost: list[Track] = []  # ended before they fell far, kept for a while for `_stitch`
        self._stitch_frames = round(cfg.stitch_gap_s * fps)
        self._next_id = 1
        self._evicted: list[Track] = []  # tracks that gave up their place to a newcomer this frame
        self._singles: list[tuple[int, Blob]] = []  # last frame's blobs that got no track
        self._chains: list[list[tuple[int, Blob]]] = []  # leftover blobs lined up in consecutive frames
        # Every blob of the last `chain_back_s` or `lead_in_s`, with its frame's clutter density: where a chain
        # began, or a new fall's object first showed.
        self._chain_back = round(cfg.chain_back_s * fps)
        self._lead_in = round(cfg.lead_in_s * fps)
        self._lead_in_gap = max(cfg.max_missed, round(cfg.lead_in_gap_s * fps))
        self._history: deque[tuple[int, list[Blob], np.ndarray, float]] = deque(
            maxlen=max(1, self._chain_back, self._lead_in)
        )
        self._q = np.kron(np.eye(2), _Q1) * cfg.jerk_px**2
        max_step = cfg.max_speed_frac * self.height / fps  # per frame: a slow camera sees longer steps
        # A new track knows nothing of its speed: its gate must reach `max_step` at `gate_sigma`.
        self._max_step = max_step
        v_sigma = max_step / cfg.gate_sigma
        self._p0 = np.diag([cfg.measurement_px**2, v_sigma**2, 1.0, cfg.measurement_px**2, v_sigma**2, 1.0])

    def step(self, frame: int, blobs: list[Blob], look: FrameLook | None = None) -> list[Track]:
        """Predict, associate and update; returns the tracks that ended this frame (or gave up their place).

        With `look`, the frame itself: an established track that got no blob looks for its object there,
        below the blob threshold (`_search`).
        """
        density = len(blobs) / float(self.width * self.height)
        self._clutter = max(density, _MIN_CLUTTER_DENSITY)
        pos = np.array([[b.x, b.y] for b in blobs], dtype=np.float64).reshape(-1, 2)
        if (self.cfg.chain_tracks or self._lead_in) and blobs:
            self._history.append((frame, blobs, pos, self._clutter))
        state, cov, local = self._predict(self.tracks, density, self._map is not None)
        assigned = self._associate(blobs, pos, state, cov)
        rows = [ti for ti, _ in assigned]
        self._learn_clutter(pos, [bi for ti, bi in assigned if self.tracks[ti].hits > _TENTATIVE_HITS])
        self._update(
            frame,
            [self.tracks[ti] for ti in rows],
            [blobs[bi] for _, bi in assigned],
            state[rows],
            cov[rows],
            local[rows] if self._map is not None else None,
        )
        used = {bi for _, bi in assigned}
        assigned_tracks = set(rows)
        if look is not None:
            for ti, bi in assigned:
                self.tracks[ti].tone += look.polarity(blobs[bi])
            assigned_tracks |= self._search(frame, look, state, cov, assigned_tracks)
        young = [self.tracks[ti] for ti in assigned_tracks if self.tracks[ti].hits == _STITCH_HITS]
        for i, t in enumerate(self.tracks):
            if i not in assigned_tracks:
                t.missed += 1
                t.evidence += _MISS_LLR
        over = [self._is_over(t) for t in self.tracks]
        ended = [t for t, o in zip(self.tracks, over, strict=True) if o]
        self.tracks = [t for t, o in zip(self.tracks, over, strict=True) if not o]
        self._keep_lost(frame, ended)
        for t in young:
            if self._lost:
                self._stitch(t)
        # Strongest first: in a busy frame the tracks go to what stands out, not to what was listed first.
        free = sorted((b for bi, b in enumerate(blobs) if bi not in used), key=lambda b: -b.strength)
        self._evicted = []
        started = self._start_tracks(frame, free)
        self._grow_chains(frame, free[started:])
        # Evicted tracks end too (never kept for stitching): whoever keeps something per track lets it go.
        return ended + self._evicted

    def _learn_clutter(self, pos: np.ndarray, explained: list[int]) -> None:
        """Count the frame's blobs at `pos` into the clutter map, but those `explained` by established tracks."""
        if self._map is not None:
            self._map.learn(np.delete(pos, explained, axis=0))

    def _search(
        self, frame: int, look: FrameLook, state: np.ndarray, cov: np.ndarray, assigned: set[int]
    ) -> set[int]:
        """Faint falling tracks that got no blob look for their object in the frame; returns those that found it.

        Track-before-detect: a track's prediction tells where its object must be and its blobs how big it
        is, so its pixels' differences from the background can be summed over that footprint, below the
        per-pixel threshold (edge.detect.gated). Only tracks seen more than twice or started from a chain
        (their motion is known, their gate small) whose last blobs were faint: a strong object that goes
        unseen was hidden or left, it did not fade (an insect's big blob lost in the frame difference).
        At most `search_tracks` a frame, the best scored first. A find is scored as a detection at the
        density of as strong responses around it, so in rain or grain, where such responses are common, it
        adds little to the track's score.
        """
        found: set[int] = set()
        for i in self._searchers(state, assigned)[: self.cfg.search_tracks]:
            t = self.tracks[i]
            w, h = t.footprint()
            spread = _position_cov(cov[i]) + np.diag([self._sigma(w) ** 2, self._sigma(h) ** 2])
            # The gate's longest axis at search_sigma: where the object may be, for a blob of its size.
            radius = self.cfg.search_sigma * math.sqrt(float(np.linalg.eigvalsh(spread)[-1]))
            x, y = float(state[i, 0]), float(state[i, 3])
            polarity = (t.tone > 0) - (t.tone < 0)
            step = (abs(float(state[i, 1])), abs(float(state[i, 4])))
            hit = look.search(Probe(x, y, min(radius, self.cfg.search_max_px), w, h, polarity, step))
            if hit is None:
                continue
            e = np.array([hit.blob.x - x, hit.blob.y - y])
            s_inv, det = _inverse_2x2(spread)
            d2 = float(e @ s_inv @ e)
            gain = _HIT_LLR - math.log(hit.density * 2 * math.pi * math.sqrt(det)) - d2 / 2
            # Off the predicted path, or among so many like responses that a miss explains the frame better.
            if d2 > self.cfg.search_sigma**2 or gain < _MISS_LLR:
                continue
            self._update(frame, [t], [hit.blob], state[i : i + 1], cov[i : i + 1], hit.density)
            t.gated += 1
            found.add(i)
        return found

    def _searchers(self, state: np.ndarray, assigned: set[int]) -> list[int]:
        """Indices of the tracks that may search this frame (`_search`), the best scored per frame first."""
        if self.cfg.search_tracks == 0:
            return []
        # Only what moves down more than sideways, as a falling object does: a hovering insect or a swaying
        # leaf is no object whose faint continuation is worth finding.
        falling = (state[:, 4] > 0) & (state[:, 4] >= np.abs(state[:, 1]))
        waiting = [
            i
            for i, t in enumerate(self.tracks)
            if i not in assigned
            and falling[i]
            and (t.hits > _TENTATIVE_HITS or t.chained)
            and t.missed < self.cfg.max_missed
            and median(t.strengths[-_FOOTPRINT_BLOBS:]) <= self.cfg.search_max_strength
        ]
        return sorted(waiting, key=lambda i: -self.tracks[i].evidence / max(1, self.tracks[i].hits))

    def _start_tracks(self, frame: int, blobs: list[Blob]) -> int:
        """Start tracks on blobs, strongest first, while slots are free or weaker tracks give up theirs.

        Returns how many were started: the first so many of `blobs`.
        """
        slots = self.cfg.max_tracks - sum(not t.chained for t in self.tracks)
        # Weakest first: most missed, then fewest hits (ties in track order). A track started here is never
        # weaker than a blob after it, as the blobs come strongest first: the list holds all there are.
        weak = [t for t in self.tracks if t.hits <= _TENTATIVE_HITS and not t.falling]
        weak.sort(key=lambda t: (-t.missed, t.hits))
        g = self._gravity(blobs)
        for n, b in enumerate(blobs):
            if n >= slots and not self._evict_tentative(weak, b):
                return n
            self._start(frame, b, g[n])
        return len(blobs)

    def _grow_chains(self, frame: int, left: list[Blob]) -> None:
        """Start tracks from blobs that got none but line up, frame after frame, as one moving object does.

        In heavy rain every slot goes to the strongest blobs, and a faint object (a cigarette among raindrops)
        never gets a track of its own. Evidence summed along a path finds it (track-before-detect): a leftover
        blob that lies within reach of one of the last frame's starts a chain, and a chain grows by the
        leftover blob nearest where its last two blobs (and up to half of g) put it, within `chain_sigma`
        sigmas. A raindrop is seen for about one frame, so chains of chance blobs die within a frame or two;
        one `chain_len` long starts a track, in `chain_tracks` slots of its own. Quiet frames leave nothing
        over: every blob has its track, and nothing here happens.
        """
        if self.cfg.chain_tracks == 0 or not left:
            self._chains, self._singles = [], [(frame, b) for b in left]
            return
        pos = np.array([[b.x, b.y] for b in left])
        sig2 = self._sigmas([max(b.w, b.h) for b in left]) ** 2
        taken = [False] * len(left)
        grown: list[list[tuple[int, Blob]]] = []
        done: list[tuple[float, list[tuple[int, Blob]]]] = []
        chains = [c for c in self._chains if c[-1][0] == frame - 1]
        if chains:
            last_b, prev_b = [c[-1][1] for c in chains], [c[-2][1] for c in chains]
            last = np.array([[b.x, b.y] for b in last_b])
            prev = np.array([[b.x, b.y] for b in prev_b])
            s_last = self._sigmas([max(b.w, b.h) for b in last_b]) ** 2
            s_prev = self._sigmas([max(b.w, b.h) for b in prev_b]) ** 2
            half_g = self._gravity(last_b) / 2
            pred = 2 * last - prev
            pred[:, 1] += half_g  # falling: between no acceleration (drag) and g
            var = s_prev + 4 * s_last + half_g**2
            dx, dy = pos[:, 0] - pred[:, 0, None], pos[:, 1] - pred[:, 1, None]  # (chains, blobs)
            d2 = (dx * dx + dy * dy) / (var[:, None] + sig2)  # not a sum over a last axis of 2: that is slow
            best = np.argmin(d2, axis=1)
            cost = d2[np.arange(len(chains)), best]
            order = np.argsort(cost)  # the closest first
            for ci, j, c in zip(order.tolist(), best[order].tolist(), cost[order].tolist(), strict=True):
                if c > self.cfg.chain_sigma**2 or taken[j]:
                    continue
                taken[j] = True
                chain = chains[ci] + [(frame, left[j])]
                if len(chain) >= self.cfg.chain_len:
                    done.append((c, chain))
                else:
                    grown.append(chain)
        if self._singles and self._singles[0][0] == frame - 1:
            spos = np.array([[b.x, b.y] for _, b in self._singles])
            d = np.hypot(pos[None, :, 0] - spos[:, None, 0], pos[None, :, 1] - spos[:, None, 1])
            si, bj = np.nonzero(d <= self._max_step)
            for i, j in zip(si.tolist(), bj.tolist(), strict=True):
                if not taken[j]:
                    grown.append([self._singles[i], (frame, left[j])])
        self._chains = grown[:_MAX_CHAINS]
        self._singles = [(frame, b) for j, b in enumerate(left) if not taken[j]]
        room = self.cfg.chain_tracks - sum(t.chained for t in self.tracks)
        placed: list[Track] = []
        for t in self._start_chains([chain for _, chain in sorted(done, key=lambda c: c[0])]):
            if room > 0:
                room -= 1
            elif not self._evict_chained(t, placed):
                continue  # never reported: it lived inside this call only
            self.tracks.append(t)
            placed.append(t)
            self._extend_back(t)

    def _evict_chained(self, newcomer: Track, placed: list[Track]) -> bool:
        """Make room for a new chain's track by dropping the chain-started track clutter explains best, when
        that one scores below the newcomer; False when none does. Tracks `placed` in this frame's round
        stay: followed back already, they would not be compared on their chains alone.

        In heavy rain, chains of raindrops fill every chain slot, and the chain of a real object that lines up
        next (a fruit among 250 blobs a frame) would get none. So each slot goes to the chain tracks with the
        highest score; one already a fall stays. The newcomer is scored on its chain alone, before it is
        followed back (which costs more than the rest of it): it must win on what it has just shown.
        """
        chained = [t for t in self.tracks if t.chained and not t.falling and t not in placed]
        worst = min(chained, key=lambda t: t.evidence, default=None)
        if worst is None or worst.evidence >= newcomer.evidence:
            return False
        self.tracks.remove(worst)
        self._evicted.append(worst)
        return True

    def _start_chains(self, chains: list[list[tuple[int, Blob]]]) -> list[Track]:
        """Tracks from chains of blobs in the same consecutive frames, filtered through as if tracked all along
        (all at once: in heavy rain a frame completes ten chains), not yet followed back (`_extend_back`) nor
        among the tracks: each chain is as long, ending in this frame."""
        if not chains:
            return []
        frames = [f for f, _ in chains[0]]
        if any([f for f, _ in chain] != frames for chain in chains):
            raise ValueError("chains filtered together must cover the same frames")
        density = self._clutter
        firsts = [chain[0][1] for chain in chains]
        tracks = [self._new_track(frames[0], b, g) for b, g in zip(firsts, self._gravity(firsts), strict=True)]
        for t in tracks:
            t.chained = True
        for k in range(1, len(chains[0])):
            state, cov, _ = self._predict(tracks, density)
            self._update(frames[k], tracks, [chain[k][1] for chain in chains], state, cov)
        return tracks

    def _extend_back(self, t: Track) -> None:
        """Follow a chain-started track back through the last frames' blobs to where the object first showed.

        A chain needs `chain_len` blobs in a row, and a faint object is seen in most frames, not all: its
        chain often starts well after it appeared. Its origin (the floor it fell from) and how far it has
        fallen are what the alert is about, so its first blobs are looked for (`look_back`).
        """
        lead = self.look_back(t, self._chain_back)
        if lead is not None:
            lead.prepend_to(t)

    def lead_in(self, t: Track) -> LeadIn | None:
        """The blobs of the last `lead_in_s` (counted back from now) that a new fall's object left before its
        track began, back to its release: where the track's curve stops falling, or a blob no likelier the
        object's than clutter's, ends the search (in rain a raindrop near the curve is always at hand)."""
        return self.look_back(t, self._lead_in, to_release=True)

    def look_back(self, t: Track, frames: int, to_release: bool = False) -> LeadIn | None:
        """The blobs of the last `frames` frames with blobs, before the track's first detection, on its curve.

        The curve through its first blobs is followed backwards, one frame at a time, taking the blob nearest
        where the curve was (within `chain_sigma` sigmas, as a chain grows) and counting each frame as a hit
        or a miss in the track score, as going forwards. It ends after `max_missed` misses in a row (of frames
        with blobs), or back to release after `lead_in_gap_s` of frames (a curve already judged a fall
        predicts across a longer gap), where a frame with no blob at all is a miss too, as going forwards; a
        blob found after a longer gap than `max_missed` stands only when another lies that near before it.
        None when no blob lies on it. The track is unchanged.
        """
        first = t.points[0][0]
        back: list[tuple[int, Blob]] = []
        missed = all_missed = 0
        extra_ev = extra_chance = 0.0
        kept = 0, 0.0, 0.0, 0  # the blobs found that stand, and the score and misses up to the earliest
        var = 5 * self._sigma(median(t.lengths[:_STITCH_TAIL])) ** 2  # as a chain's next blob
        curve = None  # x and y of the curve through the blobs found so far: refitted when one is added
        # Half of g in pixels per frame squared (the curve's coefficient), where a calibration tells: a curve
        # through a few noisy blobs may bend harder than gravity, and would seem to stop falling too soon.
        g = self._gravity_at(np.array([t.points[0][1]]), np.array([t.points[0][2]]))[0] if to_release else 0.0
        pull = 0.5 * g if g > 0 else math.inf
        max_missed = self._lead_in_gap if to_release else self.cfg.max_missed
        later = first  # the frame looked at before this one
        for frame, blobs, pos, density in islice(reversed(self._history), frames):
            if frame >= first:
                continue
            # The history holds no frame without blobs: back to release, those between count as misses.
            unseen, later = (later - frame - 1 if to_release else 0), frame
            missed, all_missed, extra_ev = missed + unseen, all_missed + unseen, extra_ev + unseen * _MISS_LLR
            if missed > max_missed:
                break
            if curve is None:
                pts = np.array([(f, b.x, b.y) for f, b in reversed(back)] + t.points[:_STITCH_TAIL])
                curve = fit_poly(pts[:, 0] - first, pts[:, 1:3], 2).tolist()  # [[ax, ay], [bx, by], [cx, cy]]
            dt = frame - first
            px, py = ((a * dt + b) * dt + c for a, b, c in zip(*curve, strict=True))  # np.polyval, in floats
            if to_release and 2 * min(curve[0][1], pull) * dt + curve[1][1] <= 0:  # not yet falling: released
                break
            dx, dy = pos[:, 0] - px, pos[:, 1] - py
            d2 = (dx * dx + dy * dy) / var
            j = int(np.argmin(d2))
            extra_chance += min(1.0, density * math.pi * self.cfg.chain_sigma**2 * var)
            if d2[j] > self.cfg.chain_sigma**2:
                missed += 1
                all_missed += 1
                extra_ev += _MISS_LLR
                if missed > max_missed:
                    break
                continue
            gain = _HIT_LLR - math.log(density * 2 * math.pi * var) - d2[j] / 2
            if to_release and gain <= 0:
                break
            # Found after a longer gap than a track may have, a blob stands only once the next one back (within
            # max_missed frames) agrees: one stray blob on the line above a light object's release (whose
            # straight curve never stops falling) would otherwise name the floor above.
            lone, missed = missed > self.cfg.max_missed, 0
            extra_ev += gain
            back.append((frame, blobs[j]))
            curve = None
            if not lone:
                kept = len(back), extra_ev, extra_chance, all_missed
        found, evidence, chance, unfound = kept
        if not found:
            return None
        # Only up to its earliest blob: the misses before that are frames it was not yet in view.
        return LeadIn(tuple(reversed(back[:found])), evidence, chance, unfound)

    def _keep_lost(self, frame: int, ended: list[Track]) -> None:
        """Remember tracks that ended before they were judged a fall, for `stitch_gap_s`."""
        # Seen by the prefilter itself that often: what a gated search found only continues a track it knows.
        self._lost += [t for t in ended if not t.falling and t.hits - t.gated >= self.cfg.stitch_min_hits]
        self._lost = [t for t in self._lost if frame - t.points[-1][0] <= self._stitch_frames][-_MAX_LOST:]

    def _stitch(self, t: Track) -> None:
        """Join a new track to the lost track it continues: one object that went unseen for a while.

        A light object (paper, a bag) tumbles and fades out of sight for a few frames, and its track ends;
        when it reappears a new track starts. Coasting the old track through the gap would let it take up
        any blob (a swaying leaf, a raindrop); instead the new track, once seen three times on its own, is
        joined to a lost one only when a single curve of constant acceleration, falling, passes within
        `stitch_sigma` position sigmas of every detection of both. The fall decision then judges the whole.
        """
        first = t.points[0][0]
        candidates = [lost for lost in reversed(self._lost) if lost.points[-1][0] < first]  # newest first
        if not candidates:
            return
        # A curve through each lost track's last detections and the new track's, all fitted at once: shorter
        # runs are padded to the longest by repeating their last point, left out of the fit (weight 0).
        runs = [lost.points[-_STITCH_TAIL:] + t.points for lost in candidates]
        n = max(len(run) for run in runs)
        pts = np.array([run + run[-1:] * (n - len(run)) for run in runs], dtype=np.float64)  # (lost, n, 3)
        weight = np.array([[1.0] * len(run) + [0.0] * (n - len(run)) for run in runs])
        f = pts[:, :, 0] - first
        coef = fit_poly(f, pts[:, :, 1:3], 2, weight)  # (lost, 3, 2): of x and y, highest power first
        a, b, c = (coef[:, None, k] for k in range(3))  # each (lost, 1, 2): to broadcast over the run
        # It must be moving down the image where it is now.
        down = b[:, 0, 1] + 2 * a[:, 0, 1] * (t.points[-1][0] - first) > 0
        off = (a * f[..., None] + b) * f[..., None] + c - pts[:, :, 1:3]
        worst = np.hypot(off[..., 0], off[..., 1]).max(axis=1)  # a repeated point is no new worst
        sizes = [median(lost.lengths[-_STITCH_TAIL:] + t.lengths) for lost in candidates]
        joins = np.flatnonzero(down & (worst <= self.cfg.stitch_sigma * self._sigmas(sizes)))
        if len(joins):
            lost = candidates[joins[0]]
            gap = first - lost.points[-1][0] - 1
            # The frames it went unseen count against it, as misses do in any track.
            t.prepend(lost, lost.evidence_at_hit + gap * _MISS_LLR, lost.chance_at_hit)
            t.tone += lost.tone
            t.gated += lost.gated
            self._lost.remove(lost)

    def _evict_tentative(self, weak: list[Track], b: Blob) -> bool:
        """Make room for a blob by dropping a weaker track seen only once or twice; False when there is none.

        Otherwise a busy night (IR grain, insects) fills every slot with one-frame tracks and the object
        that appears next gets none. `weak` holds the tracks seen once or twice, weakest first: the first
        that missed a frame or is fainter than the blob goes.
        """
        for i, t in enumerate(weak):
            if t.missed > 0 or (t.strengths[-1] if t.strengths else 0.0) < b.strength:
                del weak[i]
                self.tracks.remove(t)
                self._evicted.append(t)
                return True
        return False

    def flush(self) -> list[Track]:
        """End every track (end of stream)."""
        ended, self.tracks = self.tracks, []
        return ended

    def _associate(
        self, blobs: list[Blob], pos: np.ndarray, state: np.ndarray, cov: np.ndarray
    ) -> list[tuple[int, int]]:
        """(track index, blob index) pairs: established tracks choose first, then the tentative ones.

        In clutter (rain, IR grain) a track seen once or twice has a wide gate that reaches an established
        track's blob; letting the established tracks choose first keeps a falling object's track whole.
        `pos` holds the blobs' positions; `state` and `cov` are the tracks' predictions, stacked (`_predict`).
        """
        if not self.tracks or not blobs:
            return []
        r = self._blob_rs(blobs)
        established = [i for i, t in enumerate(self.tracks) if t.hits > _TENTATIVE_HITS]
        tentative = [i for i, t in enumerate(self.tracks) if t.hits <= _TENTATIVE_HITS]
        pairs: list[tuple[int, int]] = []
        free = np.arange(len(blobs))
        for group in (established, tentative):
            if not group or not len(free):
                continue
            found = self._match(group, state[group], cov[group], pos[free], r[free])
            pairs += [(ti, int(free[bi])) for ti, bi in found]
            free = np.delete(free, [bi for _, bi in found])
        return pairs

    def _predict(
        self, tracks: list[Track], density: float, local: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move tracks on one frame, all at once; each counts the clutter its gate could catch this frame.

        Returns the new states (n, 6) and covariances (n, 6, 6) stacked, for matching and updating at once, and
        the clutter density at each: the frame's `density`, or with `local` the clutter map's where it is.
        """
        if not tracks:
            return np.zeros((0, 6)), np.zeros((0, 6, 6)), np.zeros(0)
        state = np.stack([t.state for t in tracks]) @ _F.T
        cov = _F @ np.stack([t.cov for t in tracks]) @ _F.T + self._q
        if local and self._map is not None:
            dens = self._map.density(state[:, 0], state[:, 3], density)
        else:
            dens = np.full(len(tracks), density)
        expected = np.minimum(1.0, dens * self._gate_areas(state, cov)).tolist()
        for t, s, c, e in zip(tracks, state, cov, expected, strict=True):
            t.state, t.cov = s, c
            if t.hits > 1:  # from the second frame on: the first point is where the track began
                t.chance += e
        return state, cov, dens

    def _gate_areas(self, state: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """Pixels inside each track's gate this frame (for a small blob): how much clutter it can catch."""
        s = _position_cov(cov) + np.eye(2) * self.cfg.measurement_px**2
        det = s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0]
        ellipse = np.pi * self.cfg.gate_sigma**2 * np.sqrt(np.maximum(det, 0.0))
        return np.maximum(ellipse, np.pi * self._gate_floors(state) ** 2)

    def _gate_floors(self, state: np.ndarray) -> np.ndarray:
        """The gates' radius never falls below this many pixels: wider for a fast, blurred track."""
        return self.cfg.gate_min_px + self.cfg.gate_speed_frac * np.hypot(state[:, 1], state[:, 4])

    def _sigma(self, size_px: float) -> float:
        """Position noise of a blob this long: a blur streak, or a blob merged with a raindrop, centres loosely."""
        return self.cfg.measurement_px + min(
            self.cfg.measurement_size_frac * size_px, self.cfg.measurement_size_max_px
        )

    def _sigmas(self, sizes_px: list[float]) -> np.ndarray:
        """`_sigma` of many blobs at once."""
        frac = self.cfg.measurement_size_frac * np.asarray(sizes_px, dtype=np.float64)
        return self.cfg.measurement_px + np.minimum(frac, self.cfg.measurement_size_max_px)

    def _gravity(self, blobs: list[Blob]) -> np.ndarray:
        """g in pixels per frame squared at each blob; 0 without a calibration."""
        return self._gravity_at(np.array([b.x for b in blobs]), np.array([b.y for b in blobs]))

    def _gravity_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """g in pixels per frame squared at image points (x, y); 0 without a calibration."""
        if self.gravity_px is None or not len(x):
            return np.zeros(len(x))
        return self.gravity_px(x, y)

    def _blob_rs(self, blobs: list[Blob]) -> np.ndarray:
        """(n, 2, 2) position noise of each blob: its sigma along x from its width, along y from its height."""
        r = np.zeros((len(blobs), 2, 2))
        r[:, 0, 0] = self._sigmas([b.w for b in blobs]) ** 2
        r[:, 1, 1] = self._sigmas([b.h for b in blobs]) ** 2
        return r

    def _match(
        self, group: list[int], state: np.ndarray, cov: np.ndarray, pos: np.ndarray, r: np.ndarray
    ) -> list[tuple[int, int]]:
        """Globally cheapest assignment of blobs at `pos` to the tracks of `group`, within their gates."""
        ex, ey, d2, det = _gate_distances(state[:, _XY], _position_cov(cov), pos, r)
        near = (d2 <= self.cfg.gate_sigma**2) | (np.hypot(ex, ey) <= self._gate_floors(state)[:, None])
        cost = np.full(d2.shape, _UNASSIGNED)
        # The negative log-likelihood, not the bare distance: an uncertain track must not look close to all.
        cost[near] = d2[near] + np.log(np.maximum(det[near], 1e-9))
        rows, cols = linear_sum_assignment(cost)
        return [(group[r], int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _UNASSIGNED]

    def _update(
        self,
        frame: int,
        tracks: list[Track],
        blobs: list[Blob],
        state: np.ndarray,
        cov: np.ndarray,
        density: float | np.ndarray | None = None,
    ) -> None:
        """Correct each track by its blob in `frame`, all at once, and score how well it fits.

        `state` and `cov` are the tracks' predictions, stacked (`_predict`); `density` the clutter density
        the blobs were found among, when it is not the frame's.
        """
        if not tracks:
            return
        s_inv, det = _inverse_2x2(_position_cov(cov) + self._blob_rs(blobs))
        e = np.array([[b.x, b.y] for b in blobs]) - state[:, _XY]
        # Track score (Blackman): how much likelier this blob is where the object was predicted than a blob
        # of clutter at this frame's density; a wide gate or a far blob earns less.
        d2 = np.einsum("ni,nij,nj->n", e, s_inv, e)
        clutter = self._clutter if density is None else density
        gain = _HIT_LLR - np.log(clutter * 2 * np.pi * np.sqrt(det)) - d2 / 2
        k = cov[:, :, _XY] @ s_inv  # P H^T S^-1
        state = state + (k @ e[:, :, None])[:, :, 0]
        cov = (np.eye(6) - k @ _H) @ cov
        for t, b, s, c, g in zip(tracks, blobs, state, cov, gain.tolist(), strict=True):
            t.evidence += g
            t.state, t.cov = s, c
            t.record(frame, b)
            t.missed = 0

    def _start(self, frame: int, b: Blob, g: float) -> None:
        """A new track on blob `b` among the tracks; `g` is gravity there (`_gravity`)."""
        self.tracks.append(self._new_track(frame, b, g))

    def _new_track(self, frame: int, b: Blob, g: float) -> Track:
        """A new track on blob `b`, not yet among the tracks; `g` is gravity there (`_gravity`)."""
        state = np.array([b.x, 0.0, 0.0, b.y, 0.0, 0.0])
        cov = self._p0.copy()
        if self.gravity_px is not None:
            # With a scale, a new object's downward acceleration is known to lie between 0 (a bag at its
            # terminal speed) and g: start halfway, so a fast fall is caught from its third frame on.
            g = float(g)
            state[5] = g / 2
            cov[5, 5] = max(cov[5, 5], (g / 2) ** 2)
        t = Track(self._next_id, state, cov)
        t.record(frame, b)
        self._next_id += 1
        return t

    def _is_over(self, t: Track) -> bool:
        limit = self.cfg.max_missed_falling if t.falling else self.cfg.max_missed
        x, y = t.position
        outside = not (
            -0.05 * self.width <= x <= 1.05 * self.width and -0.05 * self.height <= y <= 1.05 * self.height
        )
        return t.missed > limit or (t.missed > 0 and outside)
