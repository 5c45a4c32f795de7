"""The human alert line: what an installer or the community center reads in a log or terminal."""

from __future__ import annotations

from edge.events import alert_line, announcement

RECORD = {
    "id": "east-0000091-52",
    "camera": "east",
    "level": "confirmed",
    "score": 0.91,
    "alert_s": 3.64,
    "end_s": 4.12,
    "origin": {"x": 900.0, "y": 300.0, "floor": 13, "facade_x_m": 30.8},
    "fall_m": 7.2,
}


def test_a_new_alert_names_floor_level_and_the_time_of_the_alert():
    line = alert_line({**RECORD, "level": "suspected"})
    assert line.startswith("ALERT SUSPECTED east: object from floor 13")
    assert "at 3.64 s" in line and "raised" not in line


def test_a_raised_alert_says_when_its_level_rose():
    line = alert_line(RECORD, raised=True)
    assert line.startswith("ALERT CONFIRMED east") and "raised at 4.12 s" in line and RECORD["id"] in line


def test_a_live_alert_gives_wall_clock_time():
    line = alert_line({**RECORD, "alert_utc": "2026-11-28T02:40:01.120Z"})
    assert "at 2026-11-28T02:40:01.120Z" in line


def test_only_a_new_fall_or_a_raised_level_is_announced():
    said = {kind: announcement(kind, RECORD) for kind in ("new", "update", "end", "clip_ready")}
    assert said["new"] == alert_line(RECORD) and said["update"] == alert_line(RECORD, raised=True)
    assert said["end"] is None and said["clip_ready"] is None
