"""The clutter map says how many blobs no track explains near each place, never far below the frame's own."""

import numpy as np

from edge.detect.clutter import _FLOOR_SHARE, ClutterMap

_SIZE = (1920, 1080)
_SPOT = (300.0, 700.0)  # x and y apart, so a map with the two swapped would read another cell


def _learned(xy, frames=50):
    m = ClutterMap(_SIZE, 25.0, 1e-6)
    for _ in range(frames):
        m.learn(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    return m


def _at(m, x, y, frame_density=1e-4):
    return m.density(np.array([x]), np.array([y]), frame_density)[0]


def test_before_any_frame_the_density_everywhere_is_the_frames_own():
    m = ClutterMap(_SIZE, 25.0, 1e-6)
    assert np.all(m.density(np.array([10.0, 1500.0]), np.array([10.0, 900.0]), 3e-5) == 3e-5)


def test_blobs_that_keep_coming_back_to_one_place_make_it_denser_than_elsewhere():
    m = _learned([_SPOT] * 20)
    assert _at(m, *_SPOT) > 10 * _at(m, 1600.0, 200.0)


def test_the_place_is_read_by_x_along_and_y_down_not_the_other_way_round():
    m = _learned([_SPOT] * 20)
    assert _at(m, *_SPOT) > 10 * _at(m, _SPOT[1], _SPOT[0])


def test_a_quiet_place_is_never_taken_for_clearer_than_a_share_of_the_frames_density_now():
    m = _learned([_SPOT] * 20)
    assert _at(m, 1600.0, 200.0, frame_density=1e-4) == _FLOOR_SHARE * 1e-4
    assert _at(m, 1600.0, 200.0, frame_density=4e-4) == _FLOOR_SHARE * 4e-4  # this frame's, not the last learned


def test_points_outside_the_frame_read_the_nearest_cell():
    m = _learned([(5.0, 5.0)] * 20)
    assert _at(m, -40.0, -40.0) == _at(m, 5.0, 5.0)
