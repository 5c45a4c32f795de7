"""The tracker keeps small fast accelerating objects apart and bridges short gaps."""

import numpy as np
import pytest

from edge.config import TrackerConfig
from edge.detect.pipeline import GravityPx
from edge.detect.tracker import _MISS_LLR, LeadIn, Tracker, _gate_distances, _inverse_2x2
from edge.detect.types import Blob
from edge.geometry import FacadeMap


def _blob(x, y):
    return Blob(x, y, 2, 2, 4, 40.0)


def _fall(x0, y0, n, g=0.6):
    return [(x0 + 0.5 * i, y0 + 0.5 * g * i * i) for i in range(n)]


def test_an_accelerating_object_moving_more_than_its_size_is_one_track():
    tr = Tracker(TrackerConfig(), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 40)):
        tr.step(f, [_blob(x, y)])
    assert len(tr.tracks) == 1 and tr.tracks[0].hits == 40


def test_three_missed_frames_are_bridged():
    tr = Tracker(TrackerConfig(), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 40)):
        tr.step(f, [] if 20 <= f < 23 else [_blob(x, y)])
    assert len(tr.tracks) == 1 and tr.tracks[0].hits == 37


def test_two_throws_close_in_time_are_two_tracks():
    tr = Tracker(TrackerConfig(), (1920, 1080))
    a, b = _fall(600, 80, 40), _fall(1200, 120, 40)
    for f in range(40):
        blobs = [_blob(*a[f])] + ([_blob(*b[f - 8])] if f >= 8 else [])
        tr.step(f, blobs)
    assert sorted(t.hits for t in tr.tracks) == [32, 40]


def test_a_track_ends_after_too_many_misses():
    tr = Tracker(TrackerConfig(max_missed=4), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 8)):
        tr.step(f, [_blob(x, y)])
    ended = []
    for f in range(8, 14):
        ended += tr.step(f, [])
    assert len(ended) == 1 and not tr.tracks


def test_an_established_track_keeps_its_blob_when_a_new_track_could_take_it():
    tr = Tracker(TrackerConfig(), (1920, 1080))
    pts = _fall(900, 50, 30)
    for f, (x, y) in enumerate(pts):
        clutter = [Blob(x + 25, y - 30, 2, 2, 4, 40.0)] if f % 2 else []  # a speck that starts tentative tracks
        tr.step(f, [_blob(x, y), *clutter])
    main = max(tr.tracks, key=lambda t: t.hits)
    assert main.hits == 30


def _full_of_weak_tracks(strength):
    """A tracker whose 3 places hold two-hit tracks seen this frame, and a newcomer of `strength`."""
    tr = Tracker(TrackerConfig(max_tracks=3), (1920, 1080))
    weak = [Blob(100 + 300 * i, 100, 2, 2, 4, 10.0, strength=2.0) for i in range(3)]
    tr.step(0, weak)
    tr.step(1, [*weak, Blob(1500, 900, 3, 3, 9, 60.0, strength=strength)])
    return tr


def test_a_full_tracker_gives_a_stronger_newcomer_the_place_of_a_weak_track():
    tr = _full_of_weak_tracks(strength=12.0)
    assert len(tr.tracks) == 3
    assert any(t.points[0][1:] == (1500, 900) for t in tr.tracks)


def test_a_full_tracker_turns_away_a_weaker_newcomer():
    tr = _full_of_weak_tracks(strength=1.0)
    assert len(tr.tracks) == 3
    assert not any(t.points[0][1:] == (1500, 900) for t in tr.tracks)


def _scored_fall(clutter_per_frame, seed=0):
    """The score per frame a clean fall earns among `clutter_per_frame` random specks."""
    rng = np.random.default_rng(seed)
    tr = Tracker(TrackerConfig(), (1920, 1080))
    pts = _fall(900, 50, 30)
    for f, (x, y) in enumerate(pts):
        specks = [
            Blob(float(a), float(b), 2, 2, 4, 30.0)
            for a, b in rng.uniform((0, 0), (1920, 1080), (clutter_per_frame, 2))
        ]
        tr.step(f, [_blob(x, y), *specks])
    main = max(tr.tracks, key=lambda t: t.hits)
    return main.evidence_at_hit / (main.hits - 1)


def test_a_fall_scores_high_where_blobs_are_few_and_lower_in_clutter():
    clean, busy = _scored_fall(2), _scored_fall(300)
    assert clean > 8 and 2.5 < busy < clean


def _scored_fall_beside_clutter(fall_x, local, seed=0):
    """The score per frame of a clean fall at `fall_x` while 200 specks a frame crowd the left third."""
    rng = np.random.default_rng(seed)
    tr = Tracker(TrackerConfig(local_clutter=local), (1920, 1080))
    for f in range(40):
        specks = [Blob(float(a), float(b), 2, 2, 4, 30.0) for a, b in rng.uniform((0, 0), (640, 1080), (200, 2))]
        fall = [_blob(*_fall(fall_x, 50, 30)[f - 10])] if f >= 10 else []  # the map learns 10 frames first
        tr.step(f, fall + specks)
    main = min((t for t in tr.tracks if t.hits > 20), key=lambda t: abs(t.points[0][1] - fall_x))
    return main.evidence_at_hit / (main.hits - 1)


def test_with_the_clutter_map_a_fall_past_a_quiet_wall_scores_above_what_the_frames_clutter_allows():
    assert _scored_fall_beside_clutter(1500, local=True) > _scored_fall_beside_clutter(1500, local=False) + 0.5


def test_with_the_clutter_map_a_fall_through_the_clutter_scores_below_what_the_frames_clutter_allows():
    assert _scored_fall_beside_clutter(300, local=True) < _scored_fall_beside_clutter(300, local=False) - 0.5


def test_misses_after_the_last_detection_do_not_lower_the_score_it_is_judged_by():
    tr = Tracker(TrackerConfig(max_missed=4), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 8)):
        tr.step(f, [_blob(x, y)])
    at_end = tr.tracks[0].evidence
    ended = [t for f in range(8, 14) for t in tr.step(f, [])]
    assert ended[0].evidence < at_end and ended[0].evidence_at_hit == at_end


def test_a_full_tracker_keeps_its_established_tracks():
    tr = Tracker(TrackerConfig(max_tracks=1), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 5)):
        tr.step(f, [_blob(x, y)])
    tr.step(5, [Blob(200, 900, 3, 3, 9, 60.0, strength=50.0)])
    assert len(tr.tracks) == 1 and tr.tracks[0].hits == 5


def test_with_a_scale_a_fast_fall_is_followed_from_its_first_frames():
    g_px = 20.0  # a tabletop drop seen close: g is 20 px per frame squared
    tr = Tracker(TrackerConfig(), (640, 480), fps=15.0, gravity_px=lambda x, y: np.full(len(x), g_px))
    for f in range(6):
        tr.step(f, [Blob(300, 5 + 0.5 * g_px * f * f, 6, 12, 40, 60.0)])
    assert max(t.hits for t in tr.tracks) == 6


def test_an_object_unseen_for_longer_than_a_track_coasts_is_stitched_back_to_its_track():
    # A paper tumbles out of sight for 8 frames (a track ends after 4): the track that starts when it
    # reappears continues the lost one's curve, so the two are one object.
    tr = Tracker(TrackerConfig(), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 40, g=0.3)):
        tr.step(f, [] if 15 <= f < 23 else [_blob(x, y)])
    assert [t.hits for t in tr.tracks] == [32] and tr.tracks[0].points[0][0] == 0


def test_a_new_track_off_the_lost_tracks_curve_is_not_stitched():
    # The same gap, but what appears after it is another object 60 px to the side.
    tr = Tracker(TrackerConfig(), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 40, g=0.3)):
        tr.step(f, [] if 15 <= f < 23 else [_blob(x + (60 if f >= 23 else 0), y)])
    assert [t.hits for t in tr.tracks] == [17]


def _rain(rng, n, w=1920, h=1080, strength=50.0):
    """n strong blobs a frame at random places: raindrops, each seen for one frame."""
    return [Blob(float(rng.uniform(0, w)), float(rng.uniform(0, h)), 2, 2, 4, 40.0, strength) for _ in range(n)]


def _faint_fall_in_rain(cfg, seed=0, with_object=True):
    rng = np.random.default_rng(seed)
    tr = Tracker(cfg, (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 30)):
        faint = [Blob(x, y, 2, 2, 4, 10.0, 5.0)] if with_object else []
        tr.step(f, _rain(rng, 200) + faint)
    return tr


def test_a_faint_object_among_stronger_raindrops_gets_a_track_from_its_chain_of_blobs():
    tr = _faint_fall_in_rain(TrackerConfig(max_tracks=20))
    assert any(t.chained and t.hits >= 20 and abs(t.position[0] - 914) < 3 for t in tr.tracks)


def test_without_chains_the_stronger_raindrops_take_every_track():
    tr = _faint_fall_in_rain(TrackerConfig(max_tracks=20, chain_tracks=0))
    assert not any(t.hits >= 20 for t in tr.tracks)


def test_raindrops_alone_line_up_too_rarely_to_keep_a_chain_track():
    tr = _faint_fall_in_rain(TrackerConfig(max_tracks=20), with_object=False)
    assert not any(t.chained and t.hits >= 8 for t in tr.tracks)


def _gappy_faint_fall_in_rain(cfg, seed=0):
    """The faint object is missed one frame in four at first, so no chain_len run of blobs forms early."""
    rng = np.random.default_rng(seed)
    tr = Tracker(cfg, (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 30)):
        faint = [] if f % 4 == 2 and f <= 12 else [Blob(x, y, 2, 2, 4, 10.0, 5.0)]
        tr.step(f, _rain(rng, 200) + faint)
    return [t for t in tr.tracks if t.chained and t.hits >= 10]


def test_a_chain_track_is_followed_back_to_where_the_object_first_showed():
    found = _gappy_faint_fall_in_rain(TrackerConfig(max_tracks=20))
    assert len(found) == 1 and found[0].points[0][0] == 0


def test_without_looking_back_a_chain_track_begins_only_where_its_run_of_blobs_did():
    found = _gappy_faint_fall_in_rain(TrackerConfig(max_tracks=20, chain_back_s=0.0))
    assert len(found) == 1 and found[0].points[0][0] > 8


def test_the_closed_form_2x2_inverse_and_determinant_agree_with_numpy_for_every_pair():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 5, (7, 9, 2, 2))
    s = a @ np.swapaxes(a, -1, -2) + np.eye(2)  # covariances: symmetric, positive definite
    inv, det = _inverse_2x2(s)
    assert np.allclose(inv, np.linalg.inv(s), rtol=1e-12, atol=0)
    assert np.allclose(det, np.linalg.det(s), rtol=1e-12, atol=0)


def test_gravity_at_many_pixels_at_once_is_g_over_the_facades_metres_per_pixel_at_each():
    # A facade seen from below at an angle: metres per pixel vary across the image.
    facade = FacadeMap.from_points(
        [(100, 900), (1800, 950), (1500, 80), (300, 40)], [(0, 0), (40, 0), (40, 60), (0, 60)], 3.0, 1
    )
    xy = np.random.default_rng(4).uniform((0, 0), (1920, 1080), (50, 2))
    g = GravityPx(facade, 9.81 / 25**2)(xy[:, 0], xy[:, 1])
    assert g.tolist() == [9.81 / 25**2 / facade.metres_per_pixel((x, y)) for x, y in xy]


def test_the_gate_distances_of_every_track_and_blob_agree_with_a_matrix_inverse_per_pair():
    rng = np.random.default_rng(5)
    a = rng.normal(0, 5, (6, 2, 2))
    p = a @ np.swapaxes(a, -1, -2) + np.eye(2)  # the tracks' position covariances
    r = np.zeros((11, 2, 2))
    r[:, 0, 0], r[:, 1, 1] = rng.uniform(1, 30, 11), rng.uniform(1, 30, 11)  # the blobs' noises
    z, pos = rng.uniform(0, 100, (6, 2)), rng.uniform(0, 100, (11, 2))
    ex, ey, d2, det = _gate_distances(z, p, pos, r)
    for i in range(6):
        for j in range(11):
            e, s = pos[j] - z[i], p[i] + r[j]
            assert (ex[i, j], ey[i, j]) == tuple(e)
            assert np.isclose(d2[i, j], e @ np.linalg.inv(s) @ e, rtol=1e-12, atol=0)
            assert np.isclose(det[i, j], np.linalg.det(s), rtol=1e-12, atol=0)


def _from_3_missed_one_in_three(f: int) -> bool:
    return f >= 3 and not (f < 20 and f % 3 == 2)


def _picked_up_late(tracker, seen=_from_3_missed_one_in_three):
    """A fall whose object shows in the frames `seen` passes (by default from frame 3, missed one frame in three
    at first), while another object holds the tracker's only place until frame 15: its track begins at frame
    19. Returns that track."""
    for f, (x, y) in enumerate(_fall(900, 50, 45)):
        blobs = [_blob(300, 900)] if f < 15 else []
        if seen(f):
            blobs.append(_blob(x, y))
        tracker.step(f, blobs)
    (track,) = [t for t in tracker.tracks if t.points[-1][0] == 44]
    return track


def test_a_track_picked_up_late_finds_the_blobs_its_object_left_before_it_began():
    tracker = Tracker(TrackerConfig(max_tracks=1), (1920, 1080))
    track = _picked_up_late(tracker)
    assert track.points[0][0] == 19
    lead = tracker.lead_in(track)
    assert lead is not None and [f for f, _ in lead.blobs] == [3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18]
    assert track.points[0][0] == 19  # looking back leaves the track as it was
    longer = lead.before(track)
    assert longer.points[0][0] == 3 and longer.hits == track.hits + 11 and longer.evidence > track.evidence


def test_nothing_is_found_behind_a_track_whose_object_left_no_blobs_before_it():
    tracker = Tracker(TrackerConfig(max_tracks=1), (1920, 1080))
    assert tracker.lead_in(_picked_up_late(tracker, seen=lambda f: f >= 19)) is None


def test_blobs_off_a_tracks_curve_before_it_began_are_not_taken_for_its_object():
    tracker = Tracker(TrackerConfig(max_tracks=1), (1920, 1080))
    for f, (x, y) in enumerate(_fall(900, 50, 45)):
        blobs = [_blob(300, 900)] if f < 15 else []
        if f >= 3 and not (f < 20 and f % 3 == 2):
            blobs.append(_blob(x + (80 if f < 19 else 0), y))  # another thing, beside its path
        tracker.step(f, blobs)
    (track,) = [t for t in tracker.tracks if t.points[-1][0] == 44]
    assert track.points[0][0] == 19 and tracker.lead_in(track) is None


def test_a_new_falls_track_is_followed_back_no_further_than_lead_in_s():
    tracker = Tracker(TrackerConfig(max_tracks=1, lead_in_s=1.2), (1920, 1080), fps=25.0)  # frames 15-44
    track = _picked_up_late(tracker)
    lead = tracker.lead_in(track)
    assert lead is not None and [f for f, _ in lead.blobs] == [15, 16, 18]  # its blobs from 3 on are older


def _tumbling_before_its_track(tracker):
    """As `_picked_up_late`, but before its track begins the object shows only at frames 2-3 and 10-11 and
    from 15 on: gaps of six frames, longer than max_missed, as a paper tumbling edge-on leaves. (The
    tracker starts no chain tracks: one would begin at 17 and be followed back as a chain is.)"""
    return _picked_up_late(tracker, seen=lambda f: f >= 15 or f in (2, 3, 10, 11))


def test_a_new_falls_lead_in_reaches_across_gaps_of_up_to_lead_in_gap_s():
    tracker = Tracker(TrackerConfig(max_tracks=1, chain_tracks=0), (1920, 1080), fps=25.0)
    track = _tumbling_before_its_track(tracker)
    assert track.points[0][0] == 19
    assert [f for f, _ in tracker.lead_in(track).blobs] == [2, 3, 10, 11, 15, 16, 17, 18]
    # Control: a chain's look back, not yet known to fall, ends after max_missed misses in a row.
    assert [f for f, _ in tracker.look_back(track, 100).blobs] == [10, 11, 15, 16, 17, 18]


@pytest.mark.parametrize(("gap_s", "earliest"), [(0.24, 2), (0.2, 10)])
def test_a_new_falls_lead_in_ends_at_a_gap_longer_than_lead_in_gap_s(gap_s, earliest):
    # Six frames missed between 3 and 10: within 0.24 s (6 frames at 25 fps), beyond 0.2 s (5 frames).
    tracker = Tracker(TrackerConfig(max_tracks=1, chain_tracks=0, lead_in_gap_s=gap_s), (1920, 1080), fps=25.0)
    track = _tumbling_before_its_track(tracker)
    assert tracker.lead_in(track).blobs[0][0] == earliest


def _seen_then_gone_in_a_quiet_scene(tracker):
    """A fall (moving from frame -5 on) whose object shows in frames 0-3 and from 15 on, and nothing else
    in any frame: frames 4-14 hold no blob at all, so the tracker's history of blobs has no frame of them."""
    for f, (x, y) in enumerate(_fall(900, 50, 50)):
        if f >= 5:
            tracker.step(f - 5, [_blob(x, y)] if f - 5 < 4 or f - 5 >= 15 else [])
    (track,) = [t for t in tracker.tracks if t.points[-1][0] == 44]
    return track


@pytest.mark.parametrize(("gap_s", "earliest"), [(0.48, 0), (0.4, None)])
def test_in_a_new_falls_lead_in_frames_with_no_blob_at_all_count_as_misses(gap_s, earliest):
    # Eleven frames without a blob between 3 and 15: within 0.48 s (12 frames), beyond 0.4 s (10 frames).
    tracker = Tracker(TrackerConfig(chain_tracks=0, lead_in_gap_s=gap_s), (1920, 1080), fps=25.0)
    track = _seen_then_gone_in_a_quiet_scene(tracker)
    assert track.points[0][0] == 15
    lead = tracker.lead_in(track)
    assert (lead.blobs[0][0] if lead else None) == earliest
    if lead:
        assert lead.missed == 11


def _straight_fall_with_earlier_blobs(earlier: tuple[int, ...]) -> tuple[Tracker, object]:
    """A light object at its top speed (a straight line down, whose curve going back never stops falling)
    seen from frame 15 on, and blobs on that line, above it, at the `earlier` frames; no other blob."""
    tracker = Tracker(TrackerConfig(chain_tracks=0), (1920, 1080), fps=25.0)
    for f in range(45):
        tracker.step(f, [_blob(900, 100 + 8 * f)] if f >= 15 or f in earlier else [])
    (track,) = [t for t in tracker.tracks if t.points[-1][0] == 44]
    return tracker, track


def test_a_lone_blob_after_a_longer_gap_than_a_track_may_have_does_not_start_a_new_falls_lead_in():
    tracker, track = _straight_fall_with_earlier_blobs((3,))  # one stray blob, eleven frames before
    assert track.points[0][0] == 15 and tracker.lead_in(track) is None
    # Control: two blobs in a row there stand, as a tumbling paper's do.
    tracker, track = _straight_fall_with_earlier_blobs((2, 3))
    assert [f for f, _ in tracker.lead_in(track).blobs] == [2, 3]


def _lead_seen_one_frame_in_three(gain: float) -> LeadIn:
    """A lead-in of four blobs, each `gain` nats likelier the object's than clutter's, with two frames
    missed after each: scored as the tracker scores, every miss at its 90% detection rate."""
    blobs = tuple((f, _blob(900, 50 + 3 * f)) for f in (0, 3, 6, 9))
    return LeadIn(blobs, evidence=4 * gain + 8 * _MISS_LLR, chance=0.0, missed=8)


def test_a_lead_in_seen_in_a_third_of_its_frames_outweighs_its_misses_at_that_rate():
    lead = _lead_seen_one_frame_in_three(gain=3.0)
    assert lead.evidence < 0  # at the tracker's rate, its misses outweigh it
    assert lead.outweighs_its_misses()


def test_a_lead_in_seen_in_nearly_every_frame_is_weighed_at_the_trackers_rate_at_most():
    # 19 of 20 frames: at its own 95% a miss would cost less than at the tracker's 90%, and it would outweigh.
    blobs = tuple((f, _blob(900, 50 + 3 * f)) for f in range(19))
    assert not LeadIn(blobs, evidence=-0.1, chance=0.0, missed=1).outweighs_its_misses()
    assert LeadIn(blobs, evidence=0.1, chance=0.0, missed=1).outweighs_its_misses()  # control


def test_a_lead_in_of_blobs_barely_likelier_the_objects_than_clutters_does_not_outweigh_its_misses():
    assert not _lead_seen_one_frame_in_three(gain=0.5).outweighs_its_misses()
    # Control: the same blobs seen in every frame.
    assert LeadIn(_lead_seen_one_frame_in_three(0.5).blobs, evidence=2.0, chance=0.0).outweighs_its_misses()


def test_a_new_falls_lead_in_ends_at_its_release_where_its_curve_stops_falling():
    # Blobs all along one parabola whose top is at frame 12: before that the thing was rising, not falling.
    tracker = Tracker(TrackerConfig(max_tracks=1), (1920, 1080))
    for f in range(45):
        blobs = [_blob(300, 900)] if f < 15 else []
        if not (f < 20 and f % 3 == 2):  # missed one frame in three at first
            blobs.append(_blob(900 + 0.5 * f, 50 + 0.3 * (f - 12) ** 2))
        tracker.step(f, blobs)
    (track,) = [t for t in tracker.tracks if t.points[-1][0] == 44]
    lead = tracker.lead_in(track)
    assert lead is not None and min(f for f, _ in lead.blobs) >= 12
    # Control: a chain's look back, which does not stop there, follows the curve up past its top.
    assert min(f for f, _ in tracker.look_back(track, 100).blobs) < 12


def test_the_blobs_found_before_a_track_count_in_the_score_it_is_judged_by():
    tracker = Tracker(TrackerConfig(max_tracks=1), (1920, 1080))
    track = _picked_up_late(tracker)
    longer = tracker.lead_in(track).before(track)
    assert longer.evidence_at_hit > track.evidence_at_hit and longer.chance_at_hit > track.chance_at_hit
    assert len(longer.widths) == len(longer.strengths) == len(longer.lengths) == len(longer.boxes) == longer.hits


def _chain_slots_full_of_clutter(score: float) -> tuple[Tracker, list]:
    """A tracker whose one chain slot holds a chain track of `score` nats, when a faint object's blobs, left
    over by the ordinary tracks (all taken by strong raindrops), line up."""
    rng = np.random.default_rng(5)
    tr = Tracker(TrackerConfig(max_tracks=20, chain_tracks=1), (1920, 1080))
    tr.step(0, _rain(rng, 200))
    tr.tracks += tr._start_chains([[(f - 5, _blob(100.0, 500.0 + 3 * f)) for f in range(5)]])
    (clutter,) = [t for t in tr.tracks if t.chained]
    clutter.evidence = score
    ended = []
    for f, (x, y) in enumerate(_fall(900, 50, 12), start=1):
        still_there = _blob(100.0, 500.0 + 3 * f)  # the clutter track goes on being fed
        ended += tr.step(f, _rain(rng, 200) + [still_there, Blob(x, y, 2, 2, 4, 10.0, 5.0)])
    return tr, ended


def test_a_chain_track_scored_as_clutter_gives_its_slot_to_a_new_chain():
    tr, ended = _chain_slots_full_of_clutter(-50.0)
    assert any(t.chained and t.hits >= 8 and abs(t.position[0] - 905) < 3 for t in tr.tracks)
    assert any(t.chained and t.points[0][0] == -5 for t in ended)  # and the clutter track is reported ended


def test_a_chain_track_scored_above_the_new_chain_keeps_its_slot():  # the control
    tr, _ = _chain_slots_full_of_clutter(500.0)
    assert not any(t.chained and abs(t.position[0] - 905) < 3 for t in tr.tracks)


def test_a_track_that_gives_up_its_place_is_reported_as_ended():
    # Twenty strong raindrops a frame fill every slot: each frame's tentative tracks give way to the next.
    rng = np.random.default_rng(2)
    tr = Tracker(TrackerConfig(max_tracks=20, chain_tracks=0), (1920, 1080))
    live: set[int] = set()
    for f in range(6):
        ended = tr.step(f, _rain(rng, 20, strength=50.0 + f))
        live -= {t.id for t in ended}
        live |= {t.id for t in tr.tracks}
    assert live == {t.id for t in tr.tracks}  # no track vanished without being reported


def test_chains_filtered_together_must_cover_the_same_frames():
    tr = Tracker(TrackerConfig(), (1920, 1080))
    same = [[(f, _blob(100.0 + 50 * k, 10.0 * f)) for f in range(4)] for k in range(2)]
    assert len(tr._start_chains(same)) == 2  # control: two chains of the same frames are filtered together
    shifted = [same[0], [(f + 1, b) for f, b in same[1]]]
    with pytest.raises(ValueError, match="same frames"):
        tr._start_chains(shifted)
