"""Multi-object tracker for small, fast, accelerating objects.

Each track is a constant-acceleration Kalman filter in pixels per frame. Association is by the
Mahalanobis distance of a blob to the predicted position (not box overlap: a falling object moves
more than its own size per frame), solved globally with the Hungarian method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.config import TrackerConfig
from edge.detect.types import Blob

_F1 = np.array([[1.0, 1.0, 0.5], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
_F = np.kron(np.eye(2), _F1)  # state [x, vx, ax, y, vy, ay], one frame per step
_H = np.zeros((2, 6))
_H[0, 0] = _H[1, 3] = 1.0
# Discrete white-jerk process noise for one frame (per unit jerk variance).
_Q1 = np.array([[1 / 20, 1 / 8, 1 / 6], [1 / 8, 1 / 3, 1 / 2], [1 / 6, 1 / 2, 1.0]])
_UNASSIGNED = 1e9


@dataclass
class Track:
    """One tracked object: Kalman state and the detections assigned to it."""

    id: int
    state: np.ndarray
    cov: np.ndarray
    points: list[tuple[int, float, float]] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)  # each blob's narrower side: its size across the blur
    strengths: list[float] = field(default_factory=list)  # each blob's Blob.strength
    missed: int = 0
    falling: bool = False

    @property
    def position(self) -> tuple[float, float]:
        return float(self.state[0]), float(self.state[3])

    @property
    def hits(self) -> int:
        return len(self.points)

    def record(self, frame: int, b: Blob) -> None:
        """Keep the blob assigned to this track in `frame`."""
        self.points.append((frame, b.x, b.y))
        self.widths.append(float(min(b.w, b.h)))
        self.strengths.append(b.strength)

    def innovation(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted measurement and its covariance."""
        return _H @ self.state, _H @ self.cov @ _H.T + r


class Tracker:
    """Keeps several tracks at once; call `step` once per frame with that frame's blobs."""

    def __init__(self, cfg: TrackerConfig, frame_size: tuple[int, int]):
        self.cfg = cfg
        self.width, self.height = frame_size
        self.tracks: list[Track] = []
        self._next_id = 1
        self._r = np.eye(2) * cfg.measurement_px**2
        self._q = np.kron(np.eye(2), _Q1) * cfg.jerk_px**2
        max_step = cfg.max_step_frac * self.height
        # A new track knows nothing of its speed: its gate must reach `max_step` at `gate_sigma`.
        v_sigma = max_step / cfg.gate_sigma
        self._p0 = np.diag([cfg.measurement_px**2, v_sigma**2, 1.0, cfg.measurement_px**2, v_sigma**2, 1.0])

    def step(self, frame: int, blobs: list[Blob]) -> list[Track]:
        """Predict, associate and update; returns the tracks that ended this frame."""
        for t in self.tracks:
            t.state = _F @ t.state
            t.cov = _F @ t.cov @ _F.T + self._q
        assigned = self._associate(blobs)
        used = set()
        for ti, bi in assigned:
            self._update(self.tracks[ti], frame, blobs[bi])
            used.add(bi)
        assigned_tracks = {ti for ti, _ in assigned}
        for i, t in enumerate(self.tracks):
            if i not in assigned_tracks:
                t.missed += 1
        ended = [t for t in self.tracks if self._is_over(t)]
        self.tracks = [t for t in self.tracks if not self._is_over(t)]
        for bi, b in enumerate(blobs):
            if bi not in used and len(self.tracks) < self.cfg.max_tracks:
                self._start(frame, b)
        return ended

    def flush(self) -> list[Track]:
        """End every track (end of stream)."""
        ended, self.tracks = self.tracks, []
        return ended

    def _associate(self, blobs: list[Blob]) -> list[tuple[int, int]]:
        if not self.tracks or not blobs:
            return []
        pos = np.array([[b.x, b.y] for b in blobs])
        cost = np.full((len(self.tracks), len(blobs)), _UNASSIGNED)
        gate2 = self.cfg.gate_sigma**2
        for i, t in enumerate(self.tracks):
            z, s = t.innovation(self._r)
            e = pos - z
            d2 = np.einsum("ni,ij,nj->n", e, np.linalg.inv(s), e)
            floor = self.cfg.gate_min_px + self.cfg.gate_speed_frac * float(np.hypot(t.state[1], t.state[4]))
            near = (d2 <= gate2) | (np.hypot(e[:, 0], e[:, 1]) <= floor)
            cost[i, near] = d2[near]
        rows, cols = linear_sum_assignment(cost)
        return [(r, c) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _UNASSIGNED]

    def _update(self, t: Track, frame: int, b: Blob) -> None:
        z = np.array([b.x, b.y])
        zp, s = t.innovation(self._r)
        k = t.cov @ _H.T @ np.linalg.inv(s)
        t.state = t.state + k @ (z - zp)
        t.cov = (np.eye(6) - k @ _H) @ t.cov
        t.record(frame, b)
        t.missed = 0

    def _start(self, frame: int, b: Blob) -> None:
        state = np.array([b.x, 0.0, 0.0, b.y, 0.0, 0.0])
        t = Track(self._next_id, state, self._p0.copy())
        t.record(frame, b)
        self._next_id += 1
        self.tracks.append(t)

    def _is_over(self, t: Track) -> bool:
        limit = self.cfg.max_missed_falling if t.falling else self.cfg.max_missed
        x, y = t.position
        outside = not (
            -0.05 * self.width <= x <= 1.05 * self.width and -0.05 * self.height <= y <= 1.05 * self.height
        )
        return t.missed > limit or (t.missed > 0 and outside)
