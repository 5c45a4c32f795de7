"""Why the bench says a throw was missed: the stage of the detector that lost it, found along its true path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.bench import miss_table
from edge.config import load_config
from edge.detect.pipeline import Detector
from edge.detect.tracker import Track
from edge.geometry import CameraGeometry
from edge.sim.explain import MissCause, Stage, _Path, _Watch, explain_misses
from edge.sim.score import SceneScore


@pytest.fixture(scope="module")
def clip(sim_clip):
    folder = sim_clip("throw", 1)
    return folder, json.loads((folder / "truth.json").read_text())


def _camera(folder, section=None, **values):
    cam = load_config(folder / "config.yaml").cameras["sim"]
    for key, value in values.items():
        setattr(getattr(cam, section), key, value)
    return cam


def _first_must(truth):
    return next(i for i, t in enumerate(truth["throws"]) if t["must_detect"])


def test_a_throw_the_detector_reports_is_followed_to_its_event(clip):
    folder, truth = clip
    [cause] = explain_misses(folder / "scene.mp4", truth, _camera(folder), [_first_must(truth)])
    assert cause.stage is Stage.REPORTED, cause  # asked about a throw it finds, it finds the event on its path


def test_a_track_the_fall_decision_refuses_names_the_rule(clip):
    folder, truth = clip
    cam = _camera(folder, "fall", min_evidence=50.0)  # no track stands this far above clutter
    [cause] = explain_misses(folder / "scene.mp4", truth, cam, [_first_must(truth)])
    assert cause.stage is Stage.RULED_OUT and "stands_above_clutter" in cause.rules, cause
    assert "weak evidence" in cause.detail


@pytest.fixture
def detector(clip):
    folder, truth = clip
    cam = _camera(folder)
    size = (truth["width"], truth["height"])
    return Detector("sim", cam, truth["fps"], CameraGeometry.build(cam, size, measured_at=size))


def _on(frames, x=100.0):
    return [(f, x, 10.0 * f) for f in frames]


def test_blobs_on_a_path_that_no_track_followed_long_enough_are_seen_not_tracked(detector):
    path = _Path({f: (100.0, 10.0 * f) for f in range(30)}, tol=3.0, seen=20)
    watch = _Watch([path], tracks={1: Track(1, np.zeros(6), np.eye(6), points=_on(range(3)))})
    assert watch.cause(path, detector).stage is Stage.UNTRACKED
    path.seen = 2  # fewer blobs on it than a track needs
    assert watch.cause(path, detector).stage is Stage.UNSEEN


def test_every_detection_of_a_track_counts_however_it_joined_the_path(detector):
    path = _Path({f: (100.0, 10.0 * f) for f in range(30)}, tol=3.0, seen=30)
    # a chained track is made with its first detections at once, and a stitched one takes a lost one's
    stitched = Track(1, np.zeros(6), np.eye(6), points=_on(range(0, 10)) + _on(range(14, 20)))
    assert path.hits(stitched) == 16
    assert path.hits(Track(2, np.zeros(6), np.eye(6), points=_on(range(0, 10), x=140.0))) == 0  # beside it


def test_a_reported_track_mostly_off_the_path_is_off_path_and_one_on_it_is_reported(detector):
    path = _Path({f: (100.0, 10.0 * f) for f in range(30)}, tol=3.0, seen=30)
    wandered = Track(1, np.zeros(6), np.eye(6), points=_on(range(8)) + _on(range(8, 30), x=160.0), falling=True)
    watch = _Watch([path], tracks={1: wandered})
    assert watch.cause(path, detector).stage is Stage.OFF_PATH
    wandered.points = _on(range(30))
    assert watch.cause(path, detector).stage is Stage.REPORTED


def test_a_track_taken_for_a_reported_fall_is_a_duplicate(detector):
    path = _Path({f: (100.0, 10.0 * f) for f in range(30)}, tol=3.0, seen=30)
    watch = _Watch([path], tracks={7: Track(7, np.zeros(6), np.eye(6), points=_on(range(30)))}, duplicates={7})
    assert watch.cause(path, detector).stage is Stage.DUPLICATE
    watch.duplicates.clear()
    assert watch.cause(path, detector).stage is not Stage.DUPLICATE


def test_a_throw_below_every_motion_threshold_is_not_seen(clip):
    folder, truth = clip
    cam = _camera(folder, "motion", min_diff=128)  # nothing short of half the luma range counts as motion
    [blind] = explain_misses(folder / "scene.mp4", truth, cam, [_first_must(truth)])
    [seeing] = explain_misses(folder / "scene.mp4", truth, _camera(folder), [_first_must(truth)])
    assert blind.stage is Stage.UNSEEN and "blobs on it in 0 of" in blind.detail, blind
    assert seeing.stage is not Stage.UNSEEN


def test_the_report_counts_misses_by_stage_and_by_a_lone_rule():
    ruled = MissCause(Stage.RULED_OUT, ("stands_above_clutter",), "")
    several = MissCause(Stage.RULED_OUT, ("stands_above_clutter", "seen_often_enough"), "")
    unseen = MissCause(Stage.UNSEEN, (), "")
    a = SceneScore("night/1", 12.0, miss_causes=[ruled, unseen])
    b = SceneScore("night/2", 12.0, miss_causes=[ruled, several])
    table = miss_table({"tuning": [a], "held_out": [b]})
    assert "| tracked, ruled no fall: stands_above_clutter | 1 | 1 |" in table
    assert "| tracked, ruled no fall: several rules | 0 | 1 |" in table
    assert f"| {Stage.UNSEEN} | 1 | 0 |" in table
    rows = [line for line in table.splitlines()[2:]]
    assert rows[0].startswith("| tracked, ruled no fall: stands_above_clutter |")  # the most first


def test_a_report_with_no_miss_says_so():
    assert miss_table({"tuning": [SceneScore("throw/1", 12.0)]}) == "No throw was missed."


def test_a_duplicate_released_while_its_track_lives_is_no_longer_one(detector):
    path = _Path({f: (100.0, 10.0 * f) for f in range(30)}, tol=3.0, seen=30)
    track = Track(7, np.zeros(6), np.eye(6), points=_on(range(30)))
    watch = _Watch([path], tracks={7: track})

    class _Live:  # what the watch reads of a detector in a frame
        def __init__(self, duplicates):
            self.duplicates, self.last_blobs = frozenset(duplicates), []
            self.tracker = type("T", (), {"tracks": [track]})()

    watch.frame(0, _Live({7}))
    assert watch.cause(path, detector).stage is Stage.DUPLICATE  # control: taken for a fall
    watch.frame(1, _Live(set()))  # seen apart from that fall, and judged on its own since
    assert watch.cause(path, detector).stage is not Stage.DUPLICATE
