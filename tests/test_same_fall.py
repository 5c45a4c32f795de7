"""A second track on a fall already reported is known as the same fall; a second throw is not."""

from __future__ import annotations

import numpy as np

from edge.detect.pipeline import _path_distance

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
