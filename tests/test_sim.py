"""The simulator's domain randomisation: wide, seeded, and the plain scenes left as they were."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import av

from edge.bench import SUITES, limit_cells, limit_plot_path, summarise
from edge.sim.randomise import FRAME_RATES
from edge.sim.scenes import build_scene
from edge.sim.score import SceneScore, ThrowOutcome
from edge.sim.simulate import simulate


def test_a_randomised_scene_is_the_same_for_the_same_seed():
    assert asdict(build_scene("night", 7, randomised=True)) == asdict(build_scene("night", 7, randomised=True))


def test_randomised_scenes_spread_over_frame_rates_resolutions_bitrates_and_noise():
    scenes = [build_scene("throw", s, randomised=True) for s in range(40)]
    assert {sc.fps for sc in scenes} == set(FRAME_RATES)
    assert len({sc.height for sc in scenes}) == 3
    assert max(sc.bitrate_kbps for sc in scenes) > 4 * min(sc.bitrate_kbps for sc in scenes)
    greys = [t.grey for sc in scenes for t in sc.throws]
    assert min(greys) < 60 and max(greys) > 200  # darker and brighter than the wall
    assert len({round(sc.noise, 1) for sc in scenes}) > 20


def test_night_scenes_draw_heavier_noise_than_day_scenes():
    day = [build_scene("throw", s, randomised=True).noise for s in range(30)]
    night = [build_scene("night", s, randomised=True).noise for s in range(30)]
    assert sum(night) / 30 > 1.5 * sum(day) / 30


def test_the_plain_scene_is_not_randomised():
    sc = build_scene("throw", 1)
    assert (sc.fps, sc.width, sc.bitrate_kbps, sc.gamma, sc.randomised) == (25.0, 1920, None, 1.0, False)
    assert all(t.grey is None and t.size_scale == 1.0 for t in sc.throws)


def test_a_randomised_render_has_its_frame_rate_and_each_throws_contrast_to_noise(tmp_path):
    scene = build_scene("night", 3, randomised=True, width=480, height=270, duration_s=3.0)
    truth = simulate(scene, tmp_path)
    with av.open(str(tmp_path / "scene.mp4")) as c:
        assert abs(float(c.streams.video[0].average_rate) - scene.fps) < 0.01
    assert truth["condition"] == "night" and truth["look"]["randomised"] is True
    seen = [t for t in truth["throws"] if t["track"]]
    assert seen and all(t["cnr"] > 0 for t in seen)
    assert all(t["must_detect"] <= (t["cnr"] >= 1.5) for t in truth["throws"])
    assert json.loads((tmp_path / "truth.json").read_text())["fps"] == scene.fps


def test_tuning_and_held_out_suites_share_no_clip():
    tuning = {(n, s) for n, s, *_ in SUITES["tuning"]}
    held = {(n, s) for n, s, *_ in SUITES["held_out"]}
    assert tuning and held and not tuning & held
    assert {n for n, _ in tuning} == {n for n, _ in held}


def test_the_more_tuning_seeds_are_neither_tuning_nor_held_out_clips_and_hold_every_scene():
    more = {(n, s) for n, s, *_ in SUITES["tuning_more"]}
    others = {(n, s) for split in ("tuning", "held_out") for n, s, *_ in SUITES[split]}
    assert more and {s for _, s in more}.isdisjoint({s for _, s in others})  # by seed: some draws use it alone
    assert {n for n, _ in more} == {n for n, *_ in SUITES["held_out"]}


def test_the_bench_reports_recall_per_condition_and_by_visibility():
    day = SceneScore(
        "throw/1", 12.0, "day", must=2, found=2, throws=[ThrowOutcome(8.0, 5.0, True, True, True)] * 2
    )
    night = SceneScore(
        "night/1",
        12.0,
        "night",
        must=2,
        found=1,
        throws=[ThrowOutcome(1.2, 5.0, False, False, True), ThrowOutcome(3.0, 3.0, True, True, True)],
    )
    total = summarise([day, night])
    assert total["recall_day"] == 1.0 and total["recall_night"] == 0.5 and total["recall_rain"] == 1.0
    assert total["throws_visible"] == 3 and total["recall_visible"] == 1.0
    cells = limit_cells([day, night])
    assert sum(n for row in cells for _, n in row) == 4
    assert sum(f for row in cells for f, _ in row) == 3


def test_grainy_noise_keeps_the_spread_the_scene_asks_for():
    import numpy as np

    from edge.sim.render import _Looks
    from edge.sim.scenes import Scene

    for grain in (0.0, 0.8, 1.6):
        scene = Scene("insects", 1, width=640, height=360, night=True, randomised=True, noise=6.0)
        scene.noise_grain_px = grain
        looks = _Looks(scene, np.random.default_rng(0), 10)
        out, _ = looks.apply(np.full((360, 640, 3), 100, np.uint8), 3, 1.0)
        assert abs(float(out[..., 1].std()) - 6.0) < 0.4, grain


def test_a_single_suite_run_writes_its_own_detection_limit_plot():
    default = limit_plot_path("docs/benchmarks/accuracy.md", None)
    assert default == Path("docs/benchmarks/detection-limit.png")  # what the README shows
    assert limit_plot_path("docs/benchmarks/more.md", "tuning_more") == Path(
        "docs/benchmarks/detection-limit-tuning_more.png"
    )
