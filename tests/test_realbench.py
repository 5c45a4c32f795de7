"""The real-footage bench: scoring on hand-made events, the manifest against SOURCES.md, one real replay."""

from __future__ import annotations

import re

import pytest

from edge.config import parse_config
from edge.realbench import (
    ClipScore,
    camera_settings,
    footage_dir,
    load_manifest,
    matches,
    real_table,
    real_totals,
    run_real,
    score_clip,
    write_config,
)

POSITIVE = {
    "file": "pos_x.mp4",
    "split": "tuning",
    "kind": "positive",
    "falls": [
        {"frames": [100, 110], "note": "drop"},
        {"frames": [40, 50], "note": "arc", "optional": True},
    ],
    "not_falls": [{"frames": [200, 220], "note": "rocking"}],
}
NEGATIVE = {"file": "neg_x.mp4", "split": "held_out", "kind": "negative"}


def _event(first: int, last: int, level: str = "suspected") -> dict:
    return {
        "start_frame": first,
        "alert_frame": first + 2,
        "end_frame": last,
        "level": level,
        "trajectory": [[f, 10.0, 5.0 * f] for f in range(first, last + 1)],
    }


def _footage():
    try:
        return footage_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_event_inside_a_labelled_fall_finds_it():
    s = score_clip(POSITIVE, [_event(98, 112, "confirmed")], 10.0)
    assert (s.falls, s.found, s.extra_confirmed, s.extra_suspected, s.missed) == (1, 1, 0, 0, [])


def test_event_outside_every_fall_is_extra_and_the_fall_missed():
    s = score_clip(POSITIVE, [_event(150, 170)], 10.0)
    assert (s.found, s.extra_suspected) == (0, 1)
    assert s.extras == ["f150-170 suspected"] and s.missed == ["f100-110 (drop)"]


def test_event_on_an_optional_fall_counts_neither_way():
    s = score_clip(POSITIVE, [_event(41, 52, "confirmed")], 10.0)
    assert (s.falls, s.found, s.extra_confirmed, s.extra_suspected) == (1, 0, 0, 0)


def test_event_on_labelled_non_fall_motion_is_extra_and_says_where():
    s = score_clip(POSITIVE, [_event(205, 215)], 10.0)
    assert s.extras == ["f205-215 suspected (rocking)"]


def test_event_mostly_outside_the_widened_range_is_extra():
    s = score_clip(POSITIVE, [_event(80, 102)], 10.0)  # 6 of 23 points within 97..113
    assert (s.found, s.extra_suspected) == (0, 1)


def test_every_event_on_a_negative_clip_is_extra():
    s = score_clip(NEGATIVE, [_event(10, 20, "confirmed"), _event(30, 40)], 20.0)
    assert (s.falls, s.extra_confirmed, s.extra_suspected) == (0, 1, 1)
    totals = real_totals([s])
    assert totals["held_out"]["neg_events"] == 2 and totals["tuning"]["neg_events"] == 0


def test_table_has_both_modes_and_totals():
    s = [ClipScore("neg_x", "held_out", "negative", 20.0, extra_suspected=1, extras=["f1-9 suspected"])]
    text = real_table(s, s)
    assert text.startswith("## Real footage")
    assert "### Without a facade calibration" in text and "### With a facade calibration" in text
    assert "events on negative clips" in text and "falls found" in text and "f1-9 suspected" in text


def test_every_calibration_is_a_valid_config(tmp_path):
    for entry in load_manifest():
        for calibrated in (False, True):
            cfg = parse_config(write_config(entry, tmp_path / entry["file"], tmp_path, calibrated).read_text())
            cam = cfg.cameras["real"]
            assert (cam.facade is not None) == (calibrated and entry.get("calibrated", True))


def test_scale_overrides_are_never_given_to_negatives():
    for entry in load_manifest():
        if entry["kind"] == "negative":
            assert "overrides" not in entry and "m_per_px" not in entry
            assert set(camera_settings(entry, True)) == {"facade"}
        elif entry.get("calibrated", True):
            assert entry["scale_note"] and entry["m_per_px"] > 0
        else:
            assert entry["scale_note"]


def test_manifest_lists_exactly_the_footage_with_the_splits_of_sources():
    folder = _footage()
    entries = load_manifest()
    assert sorted(e["file"] for e in entries) == sorted(p.name for p in folder.glob("*.mp4"))
    text = " ".join((folder / "SOURCES.md").read_text().split())
    tuning = re.search(r"Tune on these only: (.*?)\.\s", text).group(1)
    held = re.search(r"Held out \([^)]*\): (.*?)\.\s", text).group(1)
    split = {e["file"].removesuffix(".mp4"): e["split"] for e in entries}
    assert {n.strip() for n in tuning.split(",")} == {k for k, v in split.items() if v == "tuning"}
    assert {n.strip() for n in held.split(",")} == {k for k, v in split.items() if v == "held_out"}
    for e in entries:
        assert e["kind"] == ("positive" if e["file"].startswith("pos_") else "negative")
        assert bool(e.get("falls")) == (e["kind"] == "positive")


def test_real_replay_of_the_shortest_clip_gives_a_sane_score():
    _footage()
    (s,) = run_real(True, ["pos_falling_pen_motion_blur"])
    assert isinstance(s, ClipScore) and s.clip == "pos_falling_pen_motion_blur"
    assert (s.split, s.kind, s.falls) == ("tuning", "positive", 1)
    assert s.frames == s.expected_frames == 8 and s.error is None
    assert s.seconds == pytest.approx(8 / 6, abs=0.01)
    assert s.extra_confirmed + s.extra_suspected == len(s.extras)
    assert not s.calibrated  # the pen's scale cannot be represented (see the manifest)


def test_missing_footage_folder_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_FOOTAGE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="EDGE_FOOTAGE_DIR") as exc:
        footage_dir()
    assert str(tmp_path / "nowhere") in str(exc.value)


def test_an_event_in_the_falls_frames_that_moves_up_is_not_the_fall():
    up = _event(90, 95)
    up["trajectory"] = [[f, 10.0, 500.0 - 5.0 * f] for f in range(90, 96)]
    assert not matches(up, (90, 95))
    assert matches(_event(90, 95), (90, 95))
