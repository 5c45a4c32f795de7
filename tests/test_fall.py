"""The fall decision, on tracks made from physics: falls alert, birds, leaves and short drops do not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.config import FallConfig
from edge.detect.fall import (
    LOW_SCORE,
    RULES,
    TOO_FEW,
    FallDecision,
    Measures,
    accelerates_like_gravity,
    falls_more_than_it_drifts,
    fell_far_enough,
    is_ballistic,
    no_faster_than_a_fall,
    no_slower_than_a_fall,
    rarely_rises,
    seen_from_the_start,
    seen_often_enough,
    small_enough_to_throw,
    speeds_up,
    stands_above_clutter,
    starts_on_the_facade,
    streaks_match_its_motion,
    weak_evidence_backed_by_a_fall,
)
from edge.detect.types import Origin
from edge.geometry import FacadeMap

from conftest import posed_facade

FPS = 25.0
# A facade 40 m wide and 80 m tall seen straight on at 10 px per metre (image y grows downward).
FACADE = FacadeMap.from_points(
    [(0, 800), (400, 800), (400, 0), (0, 0)], [(0, 0), (40, 0), (40, 80), (0, 80)], 3.0, 1
)


def _track(xs_m, ys_m, noise_px=0.3, seed=0):
    rng = np.random.default_rng(seed)
    px = FACADE.to_image(np.column_stack([xs_m, ys_m])) + rng.normal(0, noise_px, (len(xs_m), 2))
    return [(i, float(x), float(y)) for i, (x, y) in enumerate(px)]


def _free_fall(seconds, h0=60.0, vt=40.0, vx=0.5):
    t = np.arange(0, seconds, 1 / FPS)
    y = h0 - vt**2 / 9.81 * np.log(np.cosh(9.81 * t / vt))
    return 20 + vx * t, y


def decide(points, **cfg):
    return FallDecision(FallConfig(**cfg), FPS, 800, FACADE).judge(points)


def test_a_heavy_object_falling_three_floors_is_confirmed():
    v = decide(_track(*_free_fall(1.3)))  # 8.3 m
    assert v.level == "confirmed", v.reasons
    assert 0.7 < v.accel_g < 1.2


def test_the_origin_floor_is_where_it_was_released():
    v = decide(_track(*_free_fall(1.2, h0=61.5)))
    assert v.origin.floor == 21  # 61.5 m is in the 21st storey of 3 m


def test_origin_is_extrapolated_when_first_seen_already_falling():
    x, y = _free_fall(2.0, h0=61.5)
    v = decide(_track(x[12:], y[12:]))  # first seen 0.48 s after release, 1.1 m lower
    assert v.origin.floor == 21 and abs(v.origin.height_m - 61.5) < 0.6


def test_a_light_object_at_terminal_speed_is_suspected():
    x, y = _free_fall(2.5, vt=4.5, vx=0.3)
    v = decide(_track(x, y))
    assert v.level == "suspected", v.reasons


def test_a_drop_of_under_one_and_a_half_floors_is_not_reported():
    v = decide(_track(*_free_fall(0.5)))  # 1.2 m
    assert v.level is None and any("fell" in r for r in v.reasons)


def test_a_fall_is_suspected_from_one_and_a_half_floors_and_confirmed_from_two():
    early = decide(_track(*_free_fall(1.04)))  # 4.9 m
    later = decide(_track(*_free_fall(1.2)))  # 6.6 m
    assert (early.level, later.level) == ("suspected", "confirmed"), (early.reasons, later.reasons)


def test_a_track_first_seen_mid_fall_counts_its_fall_from_the_origin():
    x, y = _free_fall(1.24)
    v = decide(_track(x[15:], y[15:]))  # first seen 0.6 s after release: 5.3 m seen, 7 m since release
    assert v.level == "confirmed" and v.fall_m > 6.0, v.reasons


def test_a_gliding_bird_is_not_a_fall():
    t = np.arange(0, 3, 1 / FPS)
    v = decide(_track(5 + 10 * t, 60 - 2.5 * t))
    assert v.level is None and any("sideways" in r for r in v.reasons)


def test_a_swaying_leaf_is_not_a_fall():
    t = np.arange(0, 6, 1 / FPS)
    v = decide(_track(20 + 0.5 * np.sin(2 * np.pi * 0.9 * t), 40 - 1.2 * t))
    assert v.level is None


def test_a_bird_that_pulls_up_is_not_a_fall():
    t = np.arange(0, 3, 1 / FPS)
    y = 60 - 8 * t + 4 * t**2  # dives, then climbs
    v = decide(_track(20 + 3 * t, y))
    assert v.level is None


def test_erratic_motion_is_not_ballistic():
    rng = np.random.default_rng(3)
    t = np.arange(0, 2, 1 / FPS)
    v = decide(_track(20 + rng.normal(0, 1.5, len(t)), 60 - 5 * t + rng.normal(0, 1.5, len(t))))
    assert v.level is None


def test_without_calibration_a_parabola_in_pixels_is_a_fall():
    t = np.arange(0, 1.2, 1 / FPS)
    pts = [(i, 200 + 5 * ti, 100 + 300 * ti**2) for i, ti in enumerate(t)]
    v = FallDecision(FallConfig(), FPS, 800, None).judge(pts)
    assert v.level is not None and v.origin.floor is None


def test_a_track_that_slows_its_fall_is_not_free_falling():
    t = np.arange(0, 1.5, 1 / FPS)
    v = decide(_track(20 + 0 * t, 60 - 20 * t + 8 * t**2))  # decelerates at 1.6 g
    assert v.level is None and any("accelerates" in r for r in v.reasons)


def test_faster_than_any_real_fall_is_rejected():
    t = np.arange(0, 0.6, 1 / FPS)
    v = decide(_track(20 + 0 * t, 75 - 60 * t))
    assert v.level is None and any("too fast" in r for r in v.reasons)


def test_a_track_seen_in_few_of_its_frames_is_rejected():
    pts = _track(*_free_fall(1.5))[::3]  # a chain of unrelated blobs, one every third frame
    v = decide(pts)
    assert v.level is None and any("seen in only" in r for r in v.reasons)


def test_a_fast_short_fall_that_appears_mid_view_should_have_been_seen_higher_up():
    t = np.arange(0, 0.4, 1 / FPS)
    v = decide(_track(20 + 0 * t, 40 - 12 * t - 4.9 * t**2))  # at 40 m already at 12 m/s, then 5.6 m more
    assert v.level is None and any("mid-view" in r for r in v.reasons)


def test_a_fast_fall_that_appears_mid_view_and_falls_the_whole_minimum_at_g_is_suspected():
    # Out from behind a balcony or out of the rain: no insect falls 15 m at g. Its origin is a guess,
    # so it is suspected, never confirmed.
    t = np.arange(0, 0.5, 1 / FPS)
    v = decide(_track(20 + 0 * t, 40 - 28 * t - 4.9 * t**2))  # first seen at 40 m already at 28 m/s
    assert v.level == "suspected", v.reasons


def _judge_with_evidence(points, per_frame, facade=FACADE):
    decision = FallDecision(FallConfig(), FPS, 800, facade)
    return decision.judge(points, evidence=per_frame * (points[-1][0] - points[0][0]))


def test_without_a_calibration_a_weak_score_is_no_fall_however_it_falls():
    pts = _track(*_free_fall(2.0))  # a heavy object falling 19 m, 0.46 of the 800 px frame
    assert _judge_with_evidence(pts, 2.0, facade=None).level is None
    assert _judge_with_evidence(pts, 5.0, facade=None).level is not None  # the positive control


def test_a_body_falling_at_g_on_weak_evidence_is_suspected_not_confirmed():
    # In IR grain a bottle's detections cost nearly what the clutter's do; its fall at g is what tells it.
    pts = _track(*_free_fall(1.3))
    weak, strong = _judge_with_evidence(pts, 2.0), _judge_with_evidence(pts, 5.0)
    assert (weak.level, strong.level) == ("suspected", "confirmed"), (weak.reasons, strong.reasons)


def test_a_light_fall_at_terminal_speed_on_weak_evidence_is_not_reported():
    pts = _track(*_free_fall(2.5, vt=4.5, vx=0.3))  # a paper bag: no acceleration to back a weak score
    assert _judge_with_evidence(pts, 2.0).level is None
    assert _judge_with_evidence(pts, 5.0).level == "suspected"  # the positive control: a strong score


def test_the_same_fall_seen_from_its_release_is_confirmed():
    v = decide(_track(*_free_fall(1.3)))  # the positive control: the same kind of fall, seen whole
    assert v.level == "confirmed", v.reasons


def test_a_fast_fall_entering_at_the_top_edge_is_a_fall():
    t = np.arange(0, 0.5, 1 / FPS)
    v = decide(_track(20 + 0 * t, 79.5 - 20 * t - 4.9 * t**2))  # enters the 80 m high view from above
    assert v.level is not None, v.reasons


def test_a_fall_that_starts_above_the_roof_is_not_from_a_window():
    roofed = replace(FACADE, top_m=45.0, extent_m=(0.0, 40.0))
    v = FallDecision(FallConfig(), FPS, 800, roofed).judge(_track(*_free_fall(1.4, h0=60.0)))
    assert v.level is None and any("off the facade" in r for r in v.reasons)


def test_a_fall_beside_the_building_is_not_from_a_window():
    narrow = replace(FACADE, extent_m=(0.0, 10.0))
    v = FallDecision(FallConfig(), FPS, 800, narrow).judge(_track(*_free_fall(1.4)))  # 20 m along
    assert v.level is None and any("off the facade" in r for r in v.reasons)


def test_an_insect_near_the_lens_is_too_big_to_be_thrown():
    pts = _track(*_free_fall(1.3))
    v = FallDecision(FallConfig(), FPS, 800, FACADE).judge(pts, [30.0] * len(pts))  # 30 px at 10 px/m: 2.6 m
    assert v.level is None and any("too big" in r for r in v.reasons)


def test_a_bag_sized_blob_is_not_too_big():
    pts = _track(*_free_fall(1.3))
    v = FallDecision(FallConfig(), FPS, 800, FACADE).judge(pts, [9.0] * len(pts))  # 0.5 m after the halo
    assert v.level == "confirmed", v.reasons


def test_a_faint_object_seen_in_half_its_frames_is_still_a_fall():
    pts = _track(*_free_fall(1.6))[::2]  # flickers in and out against a wall of its own shade
    v = FallDecision(FallConfig(), FPS, 800, FACADE).judge(pts, None, [2.0] * len(pts))
    assert v.level is not None, v.reasons


def test_a_strong_blob_seen_in_half_its_frames_is_not_a_fall():
    pts = _track(*_free_fall(1.6))[::2]  # could not have dropped below its threshold: a chain of other blobs
    v = FallDecision(FallConfig(), FPS, 800, FACADE).judge(pts, None, [12.0] * len(pts))
    assert v.level is None and any("seen in only" in r for r in v.reasons)


def test_without_calibration_a_steady_mover_down_the_image_is_no_fall():
    t = np.arange(0, 1.6, 1 / FPS)
    pts = [(i, 200 + 3 * ti, 100 + 250 * ti) for i, ti in enumerate(t)]  # a car or a walker: constant speed
    v = FallDecision(FallConfig(), FPS, 800, None).judge(pts)
    assert v.level is None and any("does not speed up" in r for r in v.reasons)


def test_a_long_blur_streak_may_wander_more_than_a_round_blob():
    # Seen close (no calibration), a fall crosses the view in half a second and smears into streaks.
    rng = np.random.default_rng(3)
    t = np.arange(0, 0.5, 1 / FPS)
    ys = 100 + 1500 * t**2 + rng.normal(0, 4, len(t))
    pts = [(i, 300 + float(rng.normal(0, 4)), float(y)) for i, y in enumerate(ys)]
    steps = np.abs(np.diff(ys, prepend=ys[0] - 1))
    judge = FallDecision(FallConfig(), FPS, 800, None).judge
    round_blobs = judge(pts, [6.0] * len(pts), None, [6.0] * len(pts))
    streaks = judge(pts, [6.0] * len(pts), None, list(6.0 + steps))  # a blur as long as each step
    assert any("not ballistic" in r for r in round_blobs.reasons)
    assert streaks.level is not None, streaks.reasons


def test_streaks_longer_than_the_motion_can_smear_are_not_one_object():
    pts = _track(*_free_fall(1.3))
    v = FallDecision(FallConfig(), FPS, 800, FACADE).judge(pts, [2.0] * len(pts), None, [40.0] * len(pts))
    assert v.level is None and any("streaks" in r for r in v.reasons)
    ok = FallDecision(FallConfig(), FPS, 800, FACADE).judge(pts, [2.0] * len(pts), None, [4.0] * len(pts))
    assert ok.level is not None, ok.reasons


def test_detections_that_clutter_alone_would_give_do_not_count():
    pts = _track(*_free_fall(1.3))
    sparse = [p for i, p in enumerate(pts) if i % 3 != 2]  # seen in two frames of three
    assert FallDecision(FallConfig(), FPS, 800, FACADE).judge(sparse).level is not None
    cluttered = FallDecision(FallConfig(), FPS, 800, FACADE).judge(sparse, chance=0.5 * len(pts))
    assert cluttered.level is None and any("seen in only" in r for r in cluttered.reasons)


# Each rule alone, on the measures of a track: a heavy object falling three floors passes every rule, and
# changing one measure past its limit makes that rule, and only that one, give its reason.

GOOD = Measures(
    calibrated=True,
    min_fall=6.0,
    tol=0.45,
    drop=9.0,
    fall=9.5,
    rise_frac=0.0,
    sideways=0.6,
    blur_excess=0.0,
    evidence_per_frame=5.0,
    detected=0.95,
    faint=False,
    rms=0.2,
    accel=9.0,
    accel_g=0.92,
    speed=7.0,
    end_speed=12.0,
    entry_speed=1.0,
    entry_y_frac=0.3,
    size_m=0.2,
    gained=0.9,
    linear_rms=1.5,
    origin=Origin(200.0, 200.0, 21, 20.0, 61.5),
    off_facade=False,
)
UNCALIBRATED = replace(GOOD, calibrated=False, min_fall=96.0, tol=1.5, drop=150.0, accel_g=None, size_m=0.0)


def reasons(m, **cfg):
    return [r for rule in RULES if (r := rule(m, FallConfig(**cfg))) is not None]


def test_a_refused_track_names_each_failed_rule_beside_its_reason():
    t = np.arange(0, 3, 1 / FPS)
    v = decide(_track(5 + 10 * t, 60 - 2.5 * t))  # a gliding bird
    names = {rule.__name__ for rule in RULES}
    assert v.level is None and len(v.rules) == len(v.reasons) > 0
    assert set(v.rules) <= names and "falls_more_than_it_drifts" in v.rules
    assert decide(_track(*_free_fall(0.1))).rules == [TOO_FEW]  # too short to judge
    passing = decide(_track(*_free_fall(1.5)))
    assert passing.level is not None and passing.rules == [] and passing.reasons == []


def test_a_track_that_passes_every_rule_but_scores_low_says_so():
    v = decide(_track(*_free_fall(1.5)), suspect_score=0.99)
    assert v.level is None and v.rules == [LOW_SCORE] and "under suspect_score 0.99" in v.reasons[0]


def test_a_good_fall_passes_every_rule_calibrated_or_not():
    assert reasons(GOOD) == [] and reasons(UNCALIBRATED) == []


def test_rule_fell_far_enough():
    assert fell_far_enough(replace(GOOD, drop=4.6), FallConfig()) is None  # 1.5 floors of 3 m suspects
    assert fell_far_enough(replace(GOOD, drop=4.4), FallConfig()) == "fell 4.4 < 4.5"
    # Without a calibration the whole minimum is needed: nothing else backs a shorter fall.
    assert fell_far_enough(replace(UNCALIBRATED, drop=80.0), FallConfig()) == "fell 80.0 < 96.0"


def test_rule_rarely_rises():
    assert rarely_rises(replace(GOOD, rise_frac=0.2), FallConfig()) is None
    assert rarely_rises(replace(GOOD, rise_frac=0.3), FallConfig()) == "goes up in 30% of steps"


def test_rule_falls_more_than_it_drifts():
    assert falls_more_than_it_drifts(replace(GOOD, sideways=7.0), FallConfig()) is None
    assert reasons(replace(GOOD, sideways=7.5)) == ["drifts sideways 7.5 for a fall of 9.0"]


def test_rule_streaks_match_its_motion():
    assert streaks_match_its_motion(replace(GOOD, blur_excess=3.9), FallConfig()) is None
    assert reasons(replace(GOOD, blur_excess=12.0)) == [
        "its blobs are streaks 12 px longer than its own motion (rain)"
    ]


def test_rule_stands_above_clutter():
    assert stands_above_clutter(replace(GOOD, evidence_per_frame=None), FallConfig()) is None  # not scored
    assert stands_above_clutter(replace(GOOD, evidence_per_frame=2.5), FallConfig()) is None
    assert reasons(replace(GOOD, evidence_per_frame=1.0)) == [
        "weak evidence: 1.00 < 1.50 nats per frame, as a chain of clutter gives"
    ]


def test_rule_stands_above_clutter_asks_the_whole_min_evidence_without_a_calibration():
    # No g to check a fall against, so nothing can back a weak score: the one reason is the floor's.
    assert reasons(replace(UNCALIBRATED, evidence_per_frame=2.0)) == [
        "weak evidence: 2.00 < 2.50 nats per frame, as a chain of clutter gives"
    ]
    assert stands_above_clutter(replace(GOOD, evidence_per_frame=2.0), FallConfig()) is None  # calibrated


def test_the_weak_band_runs_from_its_share_of_min_evidence_up_to_min_evidence():
    at = lambda e, **cfg: reasons(replace(GOOD, evidence_per_frame=e, accel_g=0.3), **cfg)  # noqa: E731
    assert at(1.49) == ["weak evidence: 1.49 < 1.50 nats per frame, as a chain of clutter gives"]
    assert at(1.5) == ["weak evidence: 1.50 < 2.50 nats per frame, and no body's fall to back it"]
    assert at(2.5) == []  # min_evidence itself is no weak score
    assert at(2.0, weak_evidence_share=1.0) == [  # a share of 1 believes no weak score
        "weak evidence: 2.00 < 2.50 nats per frame, as a chain of clutter gives"
    ]
    assert at(-0.5, min_evidence=-1.0) == []  # min_evidence <= 0: the share would lie above it, no band
    assert at(-1.5, min_evidence=-1.0) == [
        "weak evidence: -1.50 < -1.00 nats per frame, as a chain of clutter gives"
    ]


def test_rule_weak_evidence_backed_by_a_fall():
    weak = replace(GOOD, evidence_per_frame=2.0)  # from 0.6 of min_evidence (1.5) up to it (2.5)
    assert reasons(weak) == []  # fell the whole minimum on a tight curve at 0.92 g
    no_body = "weak evidence: 2.00 < 2.50 nats per frame, and no body's fall to back it"
    assert reasons(replace(weak, accel_g=0.3)) == [no_body]  # a paper at terminal speed, or a chain of drops
    assert weak_evidence_backed_by_a_fall(replace(weak, drop=5.0), FallConfig()) == no_body  # short of 6 m
    assert weak_evidence_backed_by_a_fall(replace(weak, rms=0.6), FallConfig()) == no_body  # not on a curve
    assert weak_evidence_backed_by_a_fall(replace(GOOD, accel_g=0.3), FallConfig()) is None  # strong evidence
    # Below the floor the other rule speaks, alone.
    assert reasons(replace(weak, evidence_per_frame=1.0, accel_g=0.3)) == [
        "weak evidence: 1.00 < 1.50 nats per frame, as a chain of clutter gives"
    ]


def test_rule_seen_often_enough_asks_less_of_a_faint_object():
    assert seen_often_enough(replace(GOOD, detected=0.6), FallConfig()) is None
    assert reasons(replace(GOOD, detected=0.5)) == ["seen in only 50% of its frames"]
    assert seen_often_enough(replace(GOOD, detected=0.5, faint=True), FallConfig()) is None
    assert (
        seen_often_enough(replace(GOOD, detected=0.3, faint=True), FallConfig())
        == "seen in only 30% of its frames"
    )


def test_rule_is_ballistic():
    assert is_ballistic(replace(GOOD, rms=0.9), FallConfig()) is None  # within twice the tolerance
    assert reasons(replace(GOOD, rms=1.0)) == ["not ballistic: residual 1.00 > 0.90"]


def test_rule_accelerates_like_gravity():
    assert accelerates_like_gravity(replace(GOOD, accel_g=0.1), FallConfig()) is None  # a bag at terminal speed
    assert reasons(replace(GOOD, accel_g=1.6)) == ["accelerates at 1.6 g"]
    assert reasons(replace(GOOD, accel_g=-0.8)) == ["accelerates at -0.8 g"]
    assert accelerates_like_gravity(UNCALIBRATED, FallConfig()) is None  # no g in pixels


def test_rule_no_faster_than_a_fall():
    assert no_faster_than_a_fall(replace(GOOD, end_speed=44.0), FallConfig()) is None
    assert reasons(replace(GOOD, end_speed=60.0)) == ["too fast: 60 m/s"]


def test_rule_seen_from_the_start():
    fast = replace(GOOD, entry_speed=12.0, drop=5.0)  # seen falling less than the whole minimum (6 m)
    assert reasons(fast) == ["appears mid-view already falling at 12 m/s"]
    assert seen_from_the_start(replace(fast, drop=9.0), FallConfig()) is None  # then fell it all at g
    assert seen_from_the_start(replace(fast, drop=9.0, accel_g=0.3), FallConfig()) is not None  # not at g
    assert seen_from_the_start(replace(fast, drop=9.0, rms=0.6), FallConfig()) is not None  # not on a curve
    assert seen_from_the_start(replace(fast, entry_y_frac=0.05), FallConfig()) is None  # entered at the top
    assert seen_from_the_start(replace(GOOD, entry_speed=7.5), FallConfig()) is None


def test_rule_no_slower_than_a_fall():
    assert no_slower_than_a_fall(replace(GOOD, speed=2.6), FallConfig()) is None  # a paper bag
    assert reasons(replace(GOOD, speed=1.2)) == ["too slow: 1.2 m/s"]  # a leaf


def test_rule_small_enough_to_throw():
    assert small_enough_to_throw(replace(GOOD, size_m=1.1), FallConfig()) is None
    assert reasons(replace(GOOD, size_m=2.6)) == ["too big to be thrown: 2.6 m across on the facade"]


def test_rule_speeds_up_without_a_calibration():
    assert speeds_up(replace(UNCALIBRATED, gained=0.35), FallConfig()) is None
    assert reasons(replace(UNCALIBRATED, gained=0.1)) == [
        "does not speed up: acceleration explains 10% of its fall"
    ]
    assert speeds_up(replace(GOOD, gained=0.1), FallConfig()) is None  # calibrated: g is checked instead


def test_rule_starts_on_the_facade():
    assert starts_on_the_facade(GOOD, FallConfig()) is None
    above = replace(GOOD, off_facade=True, origin=Origin(200.0, 20.0, 30, 20.0, 89.4))
    assert reasons(above) == ["starts off the facade (20.0 m along, 89.4 m up)"]


def test_a_track_that_began_on_another_blob_before_a_gap_is_judged_without_it():
    # A track seen once coasts through missed frames and takes up the object that then enters its gate.
    body = _track(*_free_fall(1.6, h0=61.5))[6:]  # the object, from frame 6
    f, x, y = body[0]
    stray = (0, x + 25.0, y - 50.0)  # another blob 5 m higher, then five frames with nothing
    v = decide([stray, *body])
    assert v.level == "confirmed" and v.origin.floor == 21, v.reasons
    # Without a gap, a head that bends away is part of the chain, and the rules judge it whole.
    kept = decide([(5, stray[1], stray[2]), *body])
    assert kept.level is None, kept.reasons


def _tracks_to_judge():
    """Falls, birds, leaves, short drops, clutter: tracks of every kind the rules tell apart."""
    rng = np.random.default_rng(7)
    t = np.arange(0, 2.5, 1 / FPS)
    yield _track(*_free_fall(1.3))
    yield _track(*_free_fall(0.5))
    yield _track(*_free_fall(2.5, vt=4.5, vx=0.3))
    yield _track(5 + 10 * t, 60 - 2.5 * t)
    yield _track(20 + 0.5 * np.sin(2 * np.pi * 0.9 * t), 40 - 1.2 * t)
    for _ in range(40):
        n = int(rng.integers(4, 60))
        vx, vy, g = rng.normal(0, 3), rng.normal(-3, 5), rng.uniform(-12, 2)
        tt = t[:n]
        yield _track(20 + vx * tt, 60 + vy * tt + g * tt**2 / 2, noise_px=float(rng.choice([0.3, 3.0])))


def test_a_track_that_could_not_alert_gets_no_level_and_a_fall_could():
    decision = FallDecision(FallConfig(), FPS, 800, FACADE)
    could = []
    for pts in _tracks_to_judge():
        for evidence in (None, 0.5 * len(pts), 2.0 * len(pts), 8.0 * len(pts)):  # 2.0: the weak band
            if not decision.could_alert(pts, evidence):
                assert decision.judge(pts, evidence=evidence).level is None
            could.append(decision.could_alert(pts, evidence))
    assert decision.could_alert(_track(*_free_fall(1.3)))
    assert 0 < sum(could) < len(could)


def test_an_object_released_in_front_of_the_wall_is_given_its_own_floor_not_the_wall_point_it_hides():
    cam, facade = posed_facade()
    x, y = _free_fall(1.2, h0=62.6)  # 2.6 m above the 21st storey's floor, half a metre out from the wall
    px, _ = cam.project(np.column_stack([x, y, np.full(len(x), 0.5)]))
    track = [(i, float(u), float(v)) for i, (u, v) in enumerate(px)]
    held_out_still = FallConfig(release_out_m=0.5, release_out_speed_mps=0.0)
    judged = FallDecision(held_out_still, FPS, 1080, facade).judge(track)
    assert judged.origin.floor == 21 and abs(judged.origin.height_m - 62.6) < 0.3
    seen_on_the_wall = FallDecision(FallConfig(release_out_m=0.0), FPS, 1080, facade).judge(track)
    assert seen_on_the_wall.origin.floor == 22  # control: uncorrected, it hides the 22nd storey's wall


def test_a_throw_moving_away_from_the_wall_and_first_seen_late_is_given_the_height_it_left_from():
    cam, facade = posed_facade()
    x, y = _free_fall(2.0, h0=62.8)  # 1.8 m above the 21st storey's floor
    t = np.arange(len(x)) / FPS
    out = 0.75 + 1.0 * t  # tossed out at 1 m/s from 0.75 m in front of the wall, as FallConfig assumes
    px, _ = cam.project(np.column_stack([x, y, out]))
    late = int(0.8 * FPS)  # first seen 0.8 s after release, already 0.8 m further out
    track = [(i, float(u), float(v)) for i, (u, v) in enumerate(px[late:])]
    judged = FallDecision(FallConfig(), FPS, 1080, facade).judge(track)
    assert judged.origin.floor == 21 and abs(judged.origin.height_m - 62.8) < 0.1
    # Control: taken to stay where it left the hand, it hides a higher wall point: the storey above.
    still = FallDecision(FallConfig(release_out_speed_mps=0.0), FPS, 1080, facade).judge(track)
    assert still.origin.floor == 22 and still.origin.height_m > 63.0


def test_a_heavy_object_first_seen_over_a_second_after_release_is_extrapolated_back_to_its_floor():
    x, y = _free_fall(2.4, h0=60.7)  # 0.7 m above the 21st storey's floor
    late = int(1.2 * FPS)  # first seen 1.2 s after release, 7 m lower, at 11.5 m/s
    track = _track(x[late:], y[late:])
    judged = FallDecision(FallConfig(), FPS, 800, FACADE).judge(track)
    assert judged.origin.floor == 21 and abs(judged.origin.height_m - 60.7) < 0.4
    # Control: extrapolated only 0.8 s back, as before, it names the storey below.
    capped = FallDecision(FallConfig(max_backtrack_s=0.8), FPS, 800, FACADE).judge(track)
    assert capped.origin.floor == 20


def test_the_fall_counted_from_a_posed_origin_is_in_the_tracks_own_seen_space():
    cam, facade = posed_facade()
    x, y = _free_fall(2.0, h0=62.8)
    t = np.arange(len(x)) / FPS
    px, _ = cam.project(np.column_stack([x, y, 0.75 + 1.0 * t]))
    late = int(0.8 * FPS)
    track = [(i, float(u), float(v)) for i, (u, v) in enumerate(px[late:])]
    cfg = FallConfig()
    m = FallDecision(cfg, FPS, 1080, facade).measure(track)
    seen_origin = facade.on_wall(m.origin.facade_x_m, m.origin.height_m, cfg.release_out_m)[1]
    last_seen = facade.to_facade(np.array([track[-1][1:]]))[0][1]
    assert seen_origin > m.origin.height_m + 0.5  # seen from below, the release point hides a higher wall point
    assert abs(m.fall - (seen_origin - last_seen)) < 1e-6


def test_without_a_calibration_the_origin_is_extrapolated_at_most_0_8_s_back():
    # Falling down the image at a nearly steady speed: speed over its own weak pull would reach far back.
    t = np.arange(0, 1.5, 1 / FPS)
    track = [(i, 200.0, 100.0 + 300.0 * ti + 20.0 * ti**2) for i, ti in enumerate(t)]

    def origin_y(max_backtrack_s):
        return FallDecision(FallConfig(max_backtrack_s=max_backtrack_s), FPS, 800, None).measure(track).origin.y

    assert origin_y(2.0) == origin_y(0.8)  # held at 0.8 s: without a scale there is no g to bound it by
    assert origin_y(0.7) > origin_y(0.8)  # control: a shorter setting is taken (less far back, lower)
