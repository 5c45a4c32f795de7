"""The clutter map says how many blobs no track explains near each place, never far below the frame's own."""

import numpy as np

from edge.detect.clutter import _FLOOR_SHARE, ClutterMap

_SIZE = (1920, 1080)


def _learned(xy, frames=50, frame_density=1e-4):
    m = ClutterMap(_SIZE, 25.0, 1e-6)
    for _ in range(frames):
        m.learn(np.asarray(xy, dtype=np.float64).reshape(-1, 2), frame_density)
    return m


def test_before_any_frame_the_density_everywhere_is_the_frames_own():
    m = ClutterMap(_SIZE, 25.0, 1e-6)
    assert np.all(m.density(np.array([10.0, 1500.0]), np.array([10.0, 900.0])) == 1e-6)


def test_blobs_that_keep_coming_back_to_one_place_make_it_denser_than_elsewhere():
    m = _learned([(300.0, 300.0)] * 20)
    there, far = m.density(np.array([300.0, 1600.0]), np.array([300.0, 900.0]))
    assert there > 10 * far


def test_a_quiet_place_is_never_taken_for_clearer_than_a_share_of_the_frames_density():
    m = _learned([(300.0, 300.0)] * 20, frame_density=1e-4)
    assert m.density(np.array([1600.0]), np.array([900.0]))[0] == _FLOOR_SHARE * 1e-4


def test_points_outside_the_frame_read_the_nearest_cell():
    m = _learned([(5.0, 5.0)] * 20)
    assert m.density(np.array([-40.0]), np.array([-40.0]))[0] == m.density(np.array([5.0]), np.array([5.0]))[0]
