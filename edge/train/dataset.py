"""The verifier's training data: candidate tracks cut by the node's own detector from replayed clips, labelled.

A candidate is a track that passes the relaxed physics gate (`FallDecision.could_alert`: it fell far enough,
straight enough, above clutter), sampled as the verifier will see it live (edge.detect.sample). Simulated
clips are labelled by their ground truth; real clips by the fall frames of the bench's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edge.config import CameraConfig, load_config
from edge.detect.pipeline import Detector
from edge.detect.sample import SAMPLE_FRAMES, SAMPLE_PX
from edge.geometry import CameraGeometry
from edge.sim.score import ON_PATH_SHARE, match_tolerance
from edge.video import luma_frames

SAMPLE_EVERY = 2  # hits between two samples of one track: consecutive samples share most of their crops
MAX_SAMPLES_PER_TRACK = 12  # a long track (a bird circling) must not outweigh many short ones
# Tracks that fail the relaxed gate never reach the verifier, but they show it what else moves (rain, birds,
# grain): a couple of samples each, so that the hard candidates still weigh most.
MAX_UNGATED_SAMPLES = 2
MATCH_SHARE = ON_PATH_SHARE  # a track is a throw's when this share of its points lie on it (as the bench scores)
UNRELATED_SHARE = 0.1  # ... and no throw's at all below this share; in between it is left out as unclear


class Label:
    """Sample labels: a falling object, or anything else that moved."""

    OTHER = 0
    FALL = 1
    UNCLEAR = -1


@dataclass
class Candidates:
    """Samples of one clip's candidate tracks, with their labels and where they came from."""

    samples: np.ndarray  # (n, SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX) float16
    labels: np.ndarray  # (n,) int8, Label values
    tracks: np.ndarray  # (n,) int32: the track each sample came from (samples of one track are not independent)
    gated: np.ndarray  # (n,) bool: the track passed the relaxed physics gate, as everything the verifier sees
    clip: str

    @classmethod
    def empty(cls, clip: str) -> Candidates:
        return cls(np.zeros((0, SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX), np.float16), np.zeros(0, np.int8),
                   np.zeros(0, np.int32), np.zeros(0, bool), clip)  # fmt: skip

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, samples=self.samples, labels=self.labels, tracks=self.tracks, gated=self.gated, clip=self.clip
        )

    @classmethod
    def load(cls, path: Path) -> Candidates:
        z = np.load(path)
        return cls(z["samples"], z["labels"], z["tracks"], z["gated"], str(z["clip"]))


class _Neutral:
    """A verifier with no opinion: it makes the detector keep crops and leaves every level to physics."""

    def score(self, sample: np.ndarray) -> float:
        return 0.5


def video_fps(video: Path) -> float:
    with av.open(str(video)) as container:
        rate = container.streams.video[0].average_rate
        return float(rate) if rate else 25.0


def collect(
    video: Path, cam: CameraConfig, label: Callable[[list[tuple[int, float, float]]], int], clip: str
) -> Candidates:
    """Every candidate track of `video`, sampled every SAMPLE_EVERY hits and labelled by `label`.

    `label` gets a track's points in source pixels and returns a Label.
    """
    fps = cam.fps or video_fps(video)
    detector: Detector | None = None
    samples, labels, tracks, gated = [], [], [], []
    taken: dict[int, int] = {}
    for index, luma in enumerate(luma_frames(video)):
        if detector is None:
            geometry = CameraGeometry.build(cam, (luma.shape[1], luma.shape[0]))
            detector = Detector(clip, cam, fps, geometry, _Neutral())
        detector.process(index, luma)
        for track in detector.tracker.tracks:
            if not _due(track, cam.fall.min_points, taken.get(track.id, 0)):
                continue
            gate = detector.decision.could_alert(track.points, track.evidence_at_hit)
            if not gate and taken.get(track.id, 0) >= MAX_UNGATED_SAMPLES:
                continue
            s = 1.0 / detector.scale
            kind = label([(f, x * s, y * s) for f, x, y in track.points])
            if kind == Label.UNCLEAR:
                continue
            taken[track.id] = taken.get(track.id, 0) + 1
            samples.append(detector.sample(track).astype(np.float16))
            labels.append(kind)
            tracks.append(track.id)
            gated.append(gate)
    if not samples:
        return Candidates.empty(clip)
    return Candidates(
        np.stack(samples), np.asarray(labels, np.int8), np.asarray(tracks, np.int32), np.asarray(gated), clip
    )


def _due(track, min_points: int, taken: int) -> bool:
    """Sample a track detected this frame at min_points hits and every SAMPLE_EVERY hits after, a few times."""
    if track.missed != 0 or track.hits < min_points or taken >= MAX_SAMPLES_PER_TRACK:
        return False
    return (track.hits - min_points) % SAMPLE_EVERY == 0


def simulated_labeller(truth: dict) -> Callable[[list[tuple[int, float, float]]], int]:
    """Labels by the clip's ground truth: on a thrown object's path, off every one, or in between."""
    paths = []
    for throw in truth["throws"]:
        if throw["track"]:
            paths.append(({int(f): (x, y) for f, x, y, _ in throw["track"]}, match_tolerance(truth, throw)))

    def label(points: list[tuple[int, float, float]]) -> int:
        best = 0.0
        for path, tol_px in paths:
            on = [np.hypot(x - path[f][0], y - path[f][1]) <= tol_px for f, x, y in points if f in path]
            best = max(best, sum(on) / len(points))
        if best >= MATCH_SHARE:
            return Label.FALL
        return Label.OTHER if best < UNRELATED_SHARE else Label.UNCLEAR

    return label


def simulated_clip(folder: Path) -> Candidates:
    """The candidates of a clip rendered by `edge sim` (scene.mp4, truth.json, config.yaml)."""
    truth = json.loads((folder / "truth.json").read_text())
    _, cam = load_config(folder / "config.yaml").camera(None)
    return collect(folder / "scene.mp4", cam, simulated_labeller(truth), folder.name)


def real_labeller(entry: dict) -> Callable[[list[tuple[int, float, float]]], int]:
    """Labels by a real clip's manifest entry: within a labelled fall, clear of every fall, or unclear."""
    from edge.realbench import MATCH_SLACK_FRAMES

    falls = [tuple(f["frames"]) for f in entry.get("falls", [])]

    def label(points: list[tuple[int, float, float]]) -> int:
        frames = np.array([p[0] for p in points])
        slack = MATCH_SLACK_FRAMES
        inside = max((int(np.sum((frames >= a - slack) & (frames <= b + slack))) for a, b in falls), default=0)
        share = inside / len(frames)
        if share >= MATCH_SHARE:
            return Label.FALL
        return Label.OTHER if share < UNRELATED_SHARE else Label.UNCLEAR

    return label


def real_clip(entry: dict, video: Path, calibrated: bool, work: Path) -> Candidates:
    """The candidates of a real clip of the bench's manifest, with or without its facade calibration."""
    from edge.realbench import write_config

    folder = work / f"{Path(entry['file']).stem}-{'cal' if calibrated else 'uncal'}"
    folder.mkdir(parents=True, exist_ok=True)
    _, cam = load_config(write_config(entry, video, folder, calibrated)).camera(None)
    return collect(video, cam, real_labeller(entry), folder.name)
