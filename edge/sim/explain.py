"""Why a simulated throw was missed: what the prefilter, the tracker and the fall decision made of it.

The clip is run again through the detector alone (the same frames, config and geometry as the replay),
following each missed throw's true path: were there blobs on it, did a track follow it, and what did the
fall decision say about the track that followed it longest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from edge.config import CameraConfig
from edge.detect.pipeline import Detector
from edge.detect.tracker import Track
from edge.geometry import CameraGeometry
from edge.sim.score import ON_PATH_SHARE, match_tolerance
from edge.verifier import load_verifier
from edge.video import luma_frames


class Stage(StrEnum):
    """Where along the detector a throw was lost."""

    UNSEEN = "not seen: too few blobs on it"
    UNTRACKED = "seen, but no track followed it long enough to judge"
    RULED_OUT = "tracked, ruled no fall"
    DUPLICATE = "tracked, taken for a fall already reported"
    OFF_PATH = "reported, but the event follows something else for most of its path"
    REPORTED = "reported along its path"  # asked about a throw the replay found, or the two runs differ
    NOT_LIVE = "tracked, passes at its end but was never reported while it fell"


@dataclass(frozen=True)
class MissCause:
    """Why one throw was missed: the stage, the failed rules (RULED_OUT) and a line for the report."""

    stage: Stage
    rules: tuple[str, ...]
    detail: str

    @property
    def key(self) -> str:
        """What the report counts it under: the stage, or the rule when one rule alone ruled it out."""
        if self.stage is Stage.RULED_OUT:
            return f"{self.stage}: {self.rules[0] if len(self.rules) == 1 else 'several rules'}"
        return str(self.stage)


@dataclass
class _Path:
    """One throw's true path in work pixels, and what the detector put on it."""

    points: dict[int, tuple[float, float]]  # frame -> true position
    tol: float  # work pixels
    seen: int = 0  # frames in which the tracker was given a blob on the path

    def on(self, frame: int, x: float, y: float) -> bool:
        """True when (x, y) in `frame` lies on the path."""
        p = self.points.get(frame)
        return p is not None and float(np.hypot(x - p[0], y - p[1])) <= self.tol

    def hits(self, track: Track) -> int:
        """The track's detections that lie on the path, however they joined it (chained, stitched)."""
        return sum(self.on(f, x, y) for f, x, y in track.points)


@dataclass
class _Watch:
    """Every track the detector made, which were taken for duplicates, and the blobs on each path."""

    paths: list[_Path]
    tracks: dict[int, Track] = field(default_factory=dict)
    duplicates: set[int] = field(default_factory=set)

    def frame(self, frame: int, det: Detector) -> None:
        for t in det.tracker.tracks:
            self.tracks[t.id] = t  # an ended track keeps its last state
        # A duplicate released (seen apart from its fall) is judged on its own from then on.
        live = {t.id for t in det.tracker.tracks}
        self.duplicates = (self.duplicates - live) | det.duplicates
        for path in self.paths:
            path.seen += any(path.on(frame, b.x, b.y) for b in det.last_blobs)

    def cause(self, path: _Path, det: Detector) -> MissCause:
        """The stage the throw on `path` was lost at."""
        need = det.cfg.fall.min_points
        frames = len(path.points)
        hits = {i: n for i, t in self.tracks.items() if (n := path.hits(t)) > 0}
        best = max(hits, key=hits.get) if hits else None
        if best is None or hits[best] < need:
            if path.seen < need:
                return MissCause(Stage.UNSEEN, (), f"blobs on it in {path.seen} of {frames} frames")
            on = hits[best] if best is not None else 0
            return MissCause(Stage.UNTRACKED, (), f"blobs on it in {path.seen} of {frames} frames, tracked {on}")
        # A reported track on its path says more than a longer one that was not: the event was there.
        reported = [i for i in hits if hits[i] >= need and self.tracks[i].falling]
        if reported:
            i = max(reported, key=hits.get)
            share = hits[i] / self.tracks[i].hits
            stage = Stage.REPORTED if share >= ON_PATH_SHARE else Stage.OFF_PATH
            detail = f"a track followed it {hits[i]} of {frames} frames, {share:.0%} of its own"
            return MissCause(stage, (), detail)
        t = self.tracks[best]
        followed = f"a track followed it {hits[best]} of {frames} frames"
        if best in self.duplicates:
            return MissCause(Stage.DUPLICATE, (), followed)
        v = det.decision.judge(t.points, t.widths, t.strengths, t.lengths, t.chance_at_hit, t.evidence_at_hit)
        if v.level is None:
            return MissCause(Stage.RULED_OUT, tuple(v.rules), f"{followed}; no fall: {'; '.join(v.reasons)}")
        vetoed = " (or the verifier vetoed it)" if det.verifier is not None else ""
        return MissCause(Stage.NOT_LIVE, (), followed + vetoed)


def explain_misses(clip: Path, truth: dict, cfg: CameraConfig, missed: list[int]) -> list[MissCause]:
    """Why each throw of `truth['throws']` indexed in `missed` was not found in `clip`, in that order."""
    if not missed:
        return []
    size = (truth["width"], truth["height"])
    verifier = load_verifier(cfg.fall.verifier.model) if cfg.fall.verifier.model is not None else None
    geometry = CameraGeometry.build(cfg, size, measured_at=size)
    det = Detector("explain", cfg, cfg.fps or truth["fps"], geometry, verifier)
    paths = []
    for i in missed:
        throw = truth["throws"][i]
        points = {int(f): (x * det.scale, y * det.scale) for f, x, y, _ in throw["track"]}
        paths.append(_Path(points, match_tolerance(truth, throw) * det.scale))
    watch = _Watch(paths)
    for frame, luma in enumerate(luma_frames(clip)):
        det.process(frame, luma)
        watch.frame(frame, det)
    det.finish()
    return [watch.cause(p, det) for p in paths]
