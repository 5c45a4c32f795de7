"""Scoring a replay against the simulator's truth: the latency the alert rule itself allows."""

from __future__ import annotations

import math

import numpy as np

from edge.bench import alert_bar, summarise, totals_table
from edge.config import CameraConfig, FacadeConfig, FacadePoint, FallConfig
from edge.sim.score import AlertBar, rule_latency, score_scene

FPS = 25.0
PX_PER_M = 100.0  # the test facade: 100 pixels a metre, up the image is up the wall
G = 9.81


def _to_facade(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([xy[:, 0] / PX_PER_M, -xy[:, 1] / PX_PER_M])


BAR = AlertBar(4.5, _to_facade)


def _throw(up_speed: float = 0.0, seconds: float = 2.0, first: int = 10) -> dict:
    """A throw leaving the hand at `first` with `up_speed` m/s upwards, then falling freely."""
    t = np.arange(0, seconds, 1 / FPS)
    height = 60.0 + up_speed * t - 0.5 * G * t**2
    track = [[first + i, 500.0, -h * PX_PER_M, 4.0] for i, h in enumerate(height)]
    return {"first_visible_frame": first, "track": track}


def _first_frame_after(seconds: float) -> float:
    """The time of the first frame at or after `seconds`."""
    return math.ceil(seconds * FPS) / FPS


def test_a_throw_dropped_from_rest_allows_an_alert_at_the_first_frame_it_has_fallen_the_bar():
    assert rule_latency(_throw(), FPS, BAR) == _first_frame_after(math.sqrt(2 * 4.5 / G))  # 0.96 s


def test_a_throw_tossed_up_first_is_counted_from_its_highest_point():
    # 5 m/s up: it rises for 0.51 s, then falls the bar in 0.96 s (4.5 m below its first point: 1.60 s).
    allowed = rule_latency(_throw(up_speed=5.0), FPS, BAR)
    assert allowed == _first_frame_after(5.0 / G + math.sqrt(2 * 4.5 / G))  # 1.48 s


def test_a_throw_that_never_falls_the_bar_in_view_allows_no_alert():
    assert rule_latency(_throw(seconds=0.8), FPS, BAR) is None  # 2.8 m in view
    assert rule_latency(_throw(seconds=1.2), FPS, BAR) is not None  # 6.6 m


def _truth(throws: list[dict]) -> dict:
    for th in throws:
        th.update(kind="bottle", origin={"floor": 20}, release_frame=th["first_visible_frame"], must_detect=True)
        th.update(fall_in_view_m=20.0, width_px=4.0, cnr=8.0)
    facade = {"floor_height_m": 3.0}
    return {
        "fps": FPS,
        "scene": "throw",
        "seed": 1,
        "frames": 100,
        "height": 1080,
        "facade": facade,
        "throws": throws,
    }


def _event_on(throw: dict, alert_after: int) -> dict:
    trajectory = [p[:3] for p in throw["track"][:alert_after]]
    return {
        "type": "new",
        "level": "suspected",
        "alert_frame": trajectory[-1][0],
        "trajectory": trajectory,
        "origin": {"floor": 20, "height_m": 60.0},
    }


def test_the_bench_reports_the_rule_s_latency_of_found_throws_only():
    found, missed = _throw(), _throw(up_speed=5.0, first=40)
    score = score_scene(_truth([found, missed]), [_event_on(found, 30)], BAR)
    assert score.found == 1 and len(score.latencies) == 1
    assert score.rule_latencies == [rule_latency(found, FPS, BAR)]
    table = totals_table({"tuning": summarise([score])})
    assert f"{score.rule_latencies[0]:.2f} s after they were first visible" in table


def test_the_bench_reports_the_median_and_the_longest_of_the_rule_s_latencies():
    scores = []
    for up in (0.0, 2.0, 5.0):
        throw = _throw(up_speed=up)
        scores.append(score_scene(_truth([throw]), [_event_on(throw, 45)], BAR))
    allowed = sorted(s.rule_latencies[0] for s in scores)
    total = summarise(scores)
    assert (total["rule_latency_median_s"], total["rule_latency_max_s"]) == (allowed[1], allowed[2])


def test_the_bench_s_bar_is_the_suspected_share_of_the_minimum_fall_on_the_clip_s_own_facade():
    wall = [(0.0, 0.0), (30.0, 0.0), (30.0, 60.0), (0.0, 60.0)]
    image = [(100.0, 1000.0), (1800.0, 1000.0), (1500.0, 100.0), (400.0, 100.0)]
    points = [FacadePoint(image=i, facade=f) for i, f in zip(image, wall, strict=True)]
    facade = FacadeConfig(points=points, floor_height_m=3.5)
    cam = CameraConfig(source="rtsp://cam", facade=facade, fall=FallConfig(suspect_fall_share=0.5))
    truth = {"width": 1920, "height": 1080}
    bar = alert_bar(cam, truth)
    assert bar is not None and bar.fall_m == 0.5 * 2.0 * 3.5  # the default min_fall_floors is 2
    assert np.allclose(bar.to_facade(np.array(image)), wall, atol=1e-6)
    assert alert_bar(CameraConfig(source="rtsp://cam"), truth) is None  # uncalibrated: no metres to fall


def test_without_a_bar_the_bench_reports_no_rule_latency():
    found = _throw()
    score = score_scene(_truth([found]), [_event_on(found, 30)])
    assert score.found == 1 and score.rule_latencies == []
    assert "suspected alert's bar" not in totals_table({"tuning": summarise([score])})
