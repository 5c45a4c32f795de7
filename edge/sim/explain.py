"""Why a simulated throw was missed: what the prefilter, the tracker and the fall decision made of it.

The clip is run again through the detector alone (the same frames, config and geometry as the replay),
following each missed throw's true path: were there blobs on it, did a track follow it, and what did the
fall decision say about the track that followed it longest.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import av
import numpy as np

from edge.config import CameraConfig
from edge.detect.pipeline import Detector
from edge.detect.tracker import Track
from edge.geometry import CameraGeometry
from edge.sim.score import match_tolerance
from edge.video import luma_plane


class Stage(StrEnum):
    """Where along the detector a throw was lost."""

    UNSEEN = "not seen: the prefilter found too few blobs on it"
    UNTRACKED = "seen, but no track followed it long enough to judge"
    RULED_OUT = "tracked, ruled no fall"
    DUPLICATE = "tracked, taken for a fall already reported"
    OFF_PATH = "reported, but the event follows something else for most of its path"
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
class _Following:
    """What the detector did along one throw's path."""

    path: dict[int, tuple[float, float]]  # frame -> true position in work pixels
    tol: float  # work pixels
    seen: int = 0  # frames with a blob on the path
    hits: dict[int, int] | None = None  # track id -> detections on the path
    tracks: dict[int, Track] | None = None
    duplicates: set[int] | None = None
    reported: set[int] | None = None

    def __post_init__(self):
        self.hits, self.tracks, self.duplicates, self.reported = {}, {}, set(), set()

    def watch(self, frame: int, det: Detector) -> None:
        """Count this frame's blobs and track detections on the path."""
        if frame not in self.path:
            return
        x, y = self.path[frame]
        blobs = det.last_motion.blobs if det.last_motion is not None else []
        if any(np.hypot(b.x - x, b.y - y) <= self.tol for b in blobs):
            self.seen += 1
        for t in det.tracker.tracks:
            f, tx, ty = t.points[-1]
            if f == frame and np.hypot(tx - x, ty - y) <= self.tol:
                self.hits[t.id] = self.hits.get(t.id, 0) + 1
                self.tracks[t.id] = t
                if t.id in det._duplicates:
                    self.duplicates.add(t.id)
                if t.falling:
                    self.reported.add(t.id)

    def cause(self, det: Detector) -> MissCause:
        """The stage the throw was lost at, from what was watched."""
        need = det.cfg.fall.min_points
        frames = len(self.path)
        best = max(self.hits, key=self.hits.get) if self.hits else None
        if best is None or self.hits[best] < need:
            on = self.hits[best] if best is not None else 0
            if self.seen < need:
                return MissCause(Stage.UNSEEN, (), f"blobs on it in {self.seen} of {frames} frames")
            return MissCause(Stage.UNTRACKED, (), f"blobs on it in {self.seen} of {frames} frames, tracked {on}")
        # A reported track on its path says more than a longer one that was not: the event was there.
        for kind, ids in ((Stage.OFF_PATH, self.reported), (Stage.DUPLICATE, self.duplicates)):
            on = [i for i in ids if self.hits[i] >= need]
            if on:
                i = max(on, key=self.hits.get)
                off = self.tracks[i].hits - self.hits[i]
                return MissCause(kind, (), f"a track followed it {self.hits[i]} of {frames} frames, {off} off it")
        t = self.tracks[best]
        followed = f"a track followed it {self.hits[best]} of {frames} frames"
        v = det.decision.judge(t.points, t.widths, t.strengths, t.lengths, t.chance_at_hit, t.evidence_at_hit)
        if v.level is None:
            return MissCause(Stage.RULED_OUT, tuple(v.rules), f"{followed}; no fall: {'; '.join(v.reasons)}")
        return MissCause(Stage.NOT_LIVE, (), followed)


def explain_misses(clip: Path, truth: dict, cfg: CameraConfig, missed: list[int]) -> list[MissCause]:
    """Why each throw of `truth['throws']` indexed in `missed` was not found in `clip`, in that order."""
    if not missed:
        return []
    size = (truth["width"], truth["height"])
    det = Detector("explain", cfg, truth["fps"], CameraGeometry.build(cfg, size, measured_at=size))
    following = []
    for i in missed:
        throw = truth["throws"][i]
        path = {int(f): (x * det.scale, y * det.scale) for f, x, y, _ in throw["track"]}
        following.append(_Following(path, match_tolerance(truth, throw) * det.scale))
    with av.open(str(clip)) as container:
        for frame, picture in enumerate(container.decode(video=0)):
            det.process(frame, luma_plane(picture))
            for f in following:
                f.watch(frame, det)
    det.finish()
    return [f.cause(det) for f in following]
