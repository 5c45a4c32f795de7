"""A second track on a fall already reported is known as the same fall; a second throw, or a second object seen
elsewhere at the same moments, is not."""

from __future__ import annotations

import numpy as np

from edge.detect.pipeline import _parted, _path_distance

G_PX = 1.0  # pixels per frame squared: a facade at about 5 cm per pixel, 25 fps


def _fall(frames, released=0, x0=500.0, y0=100.0):
    """(frame, x, y) of an object released at frame `released` from (x0, y0), at `frames`."""
    t = np.asarray(frames, dtype=float) - released
    return np.column_stack([frames, x0 + 0.3 * t, y0 + 0.5 * G_PX * t**2])


def test_a_fragment_trailing_a_reported_fall_by_a_frame_lies_on_its_path():
    reported = _fall(range(0, 31))
    trailing = _fall(range(12, 24), released=1)  # a streak's tail split off: where the fall was a frame ago
    assert _path_distance(reported, trailing) < 1.0


def test_a_second_throw_from_the_same_window_a_second_later_is_not_on_the_path():
    reported = _fall(range(0, 31))
    second = _fall(range(30, 42), released=25)
    assert _path_distance(reported, second) > 50.0


def test_a_track_on_the_same_fall_in_step_with_it_lies_on_its_path():
    reported = _fall(range(0, 31))
    assert _path_distance(reported, _fall(range(12, 24))) < 1.0  # the positive control, no lag


SAME_PX = 27.0  # same_object_frac of a 1080-line frame


def _slowed(frames, released=0, x0=500.0, y0=100.0, slow_from=30):
    """As `_fall`, but from frame `slow_from` on the air holds it at the speed it had then (a light object)."""
    frames = np.asarray(frames, dtype=float)
    t = frames - released
    t0 = slow_from - released
    y = np.where(t <= t0, y0 + 0.5 * G_PX * t**2, y0 + 0.5 * G_PX * t0**2 + G_PX * t0 * (t - t0))
    return np.column_stack([frames, x0 + 0.3 * t, y])


def test_a_track_carrying_a_lost_fall_on_is_not_parted_from_it_where_the_lost_curve_is_only_a_guess():
    lost = _fall(range(0, 31))  # the reported fall's track, lost at frame 30
    carried_on = _slowed(range(26, 90))  # a second track on the object from frame 26: slowed by the air
    assert _path_distance(lost, carried_on) > SAME_PX  # control: against the lost curve's guess, far apart
    assert not _parted(lost, carried_on, SAME_PX)  # where both were seen, they were one


def test_a_second_object_seen_beside_a_fall_at_the_same_moments_is_parted_from_it():
    reported = _fall(range(0, 60))
    beside = _fall(range(20, 60), released=12, x0=520.0, y0=160.0)  # two storeys lower, 0.5 s later
    assert _parted(reported, beside, SAME_PX)
    assert not _parted(reported, _fall(range(20, 60)), SAME_PX)  # control: the same object is not


def test_a_track_that_shares_no_frame_with_a_fall_is_not_parted_from_it():
    lost = _fall(range(20, 31))  # a reported fall's track seen from frame 20 to 30 only
    assert not _parted(lost, _fall(range(31, 60)), SAME_PX)  # seen only after it
    assert not _parted(lost, _fall([*range(0, 16), *range(35, 60)]), SAME_PX)  # before and after, not during
    assert _parted(lost, _fall(range(10, 60), x0=560.0), SAME_PX)  # control: seen 60 px aside meanwhile


def test_the_parting_distance_is_same_object_frac():
    reported = _fall(range(0, 60))
    assert _parted(reported, _fall(range(20, 60), x0=500.0 + 1.3 * SAME_PX), SAME_PX)
    assert not _parted(reported, _fall(range(20, 60), x0=500.0 + 0.7 * SAME_PX), SAME_PX)
