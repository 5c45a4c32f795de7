"""`edge replay` on simulated footage: throws alert from the right floor, distractors stay silent.

Clips are small (640x360, 8 s) so the suite stays fast; `edge bench accuracy` measures the full suite.
"""

from __future__ import annotations

import json
import os

import av
import pytest

from edge.sim.score import score_scene

from conftest import read_events, run_edge


def _replay(folder, out, *extra):
    proc = run_edge(
        "replay", str(folder / "scene.mp4"), "--config", str(folder / "config.yaml"), "--out", str(out), *extra
    )
    assert proc.returncode == 0, proc.stderr
    truth = json.loads((folder / "truth.json").read_text())
    return truth, read_events(out), proc


@pytest.mark.parametrize(
    ("scene", "seed"), [("throw", 1), ("throw", 2), ("throw", 3), ("light", 1), ("night", 1), ("two_throws", 1)]
)
def test_every_throw_alerts_with_its_origin_floor(sim_clip, tmp_path, scene, seed):
    truth, events, _ = _replay(sim_clip(scene, seed), tmp_path, "--no-media")
    score = score_scene(truth, events)
    assert score.must >= 1
    assert score.found == score.must, score.missed
    assert score.floor_near == score.found, score.wrong_floor
    assert score.floor_exact >= score.found - 1, score.wrong_floor
    assert score.false_confirmed + score.false_suspected == 0


def test_a_tiny_object_from_a_high_floor_alerts_at_full_hd(sim_clip, tmp_path):
    truth, events, _ = _replay(sim_clip("tiny", 2, 1920, 1080, 7.0), tmp_path, "--no-media")
    score = score_scene(truth, events)
    assert score.must >= 1 and all(t["kind"] in ("cigarette", "bottle_cap", "lighter") for t in truth["throws"])
    assert score.found == score.must, score.missed
    assert score.floor_near == score.found, score.wrong_floor


@pytest.mark.parametrize(
    ("scene", "seed"),
    [
        ("birds", 1),
        ("birds", 2),
        ("leaves", 1),
        ("laundry", 1),
        ("rain", 1),
        ("insects", 1),
        ("windows", 1),
        ("exposure", 1),
        ("clouds", 1),
        ("shake", 1),
        ("calm", 1),
        ("calm", 2),
    ],
)
def test_distractors_alone_write_an_empty_events_file(sim_clip, tmp_path, scene, seed):
    _, events, _ = _replay(sim_clip(scene, seed, duration_s=10.0), tmp_path, "--no-media")
    assert events == [], [(e["level"], e["origin"]) for e in events]
    assert (tmp_path / "events.jsonl").exists()


def _frames(path) -> int:
    with av.open(str(path)) as clip:
        return sum(1 for _ in clip.decode(video=0))


def test_replay_writes_the_documented_event_record(sim_clip, tmp_path):
    _, events, proc = _replay(sim_clip("throw", 1), tmp_path)
    ev = events[0]
    for key in (
        "id",
        "camera",
        "level",
        "score",
        "start_frame",
        "alert_frame",
        "end_frame",
        "trajectory",
        "origin",
        "fall_m",
        "clip",
        "still",
        "original",
        "manifest",
    ):
        assert key in ev
    assert ev["level"] in ("suspected", "confirmed") and 0 <= ev["score"] <= 1
    assert ev["start_frame"] <= ev["alert_frame"] <= ev["end_frame"]
    assert set(ev["origin"]) >= {"x", "y", "floor", "facade_x_m"} and ev["fall_m"] > 6
    assert "ALERT" in proc.stdout


def test_the_original_clip_is_the_source_packets_from_pre_roll_to_post_roll(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    truth, events, _ = _replay(folder, tmp_path)
    fps = truth["fps"]
    for ev in events:
        first = max(0, ev["start_frame"] - 4 * fps)  # record.pre_s defaults to 4 s
        last = min(truth["frames"] - 1, ev["end_frame"] + 2 * fps)  # and post_s to 2 s
        n = _frames(tmp_path / ev["original"])
        assert n >= last - first + 1  # starts at the keyframe at or before the pre-roll
        assert _frames(tmp_path / ev["clip"]) == n  # the annotated copy shows the same frames
        assert (tmp_path / ev["still"]).stat().st_size > 10_000
        assert not os.access(tmp_path / ev["original"], os.W_OK) or os.geteuid() == 0
        assert oct((tmp_path / ev["original"]).stat().st_mode & 0o777) == "0o444"


def test_without_calibration_events_have_no_floor(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    cfg = tmp_path / "nocal.yaml"
    cfg.write_text(f"version: 1\nnode: {{id: n}}\ncameras:\n  c: {{source: {folder / 'scene.mp4'}}}\n")
    proc = run_edge(
        "replay", str(folder / "scene.mp4"), "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-media"
    )
    assert proc.returncode == 0, proc.stderr
    events = read_events(tmp_path / "o")
    assert events and all(e["origin"]["floor"] is None and e["fall_m"] is None for e in events)


def test_an_uncalibrated_camera_is_warned_about_and_a_calibrated_one_is_not(sim_clip, tmp_path):
    import yaml

    folder = sim_clip("calm", 1, duration_s=3.0)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    del cfg["cameras"]["sim"]["facade"]
    bare = tmp_path / "uncalibrated.yaml"
    bare.write_text(yaml.safe_dump(cfg))
    video = str(folder / "scene.mp4")
    warned = run_edge("replay", video, "--config", str(bare), "--out", str(tmp_path / "a"), "--no-media")
    quiet = run_edge(
        "replay", video, "--config", str(folder / "config.yaml"), "--out", str(tmp_path / "b"), "--no-media"
    )
    assert warned.returncode == 0 and quiet.returncode == 0
    assert "no facade calibration" in warned.stderr
    assert "no facade calibration" not in quiet.stderr
