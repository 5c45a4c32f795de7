"""The tracker keeps small fast accelerating objects apart and bridges short gaps."""

from edge.config import TrackerConfig
from edge.detect.tracker import Tracker
from edge.detect.types import Blob


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
    for f, (x, y) in enumerate(_fall(900, 50, 10)):
        tr.step(f, [_blob(x, y)])
    ended = []
    for f in range(10, 16):
        ended += tr.step(f, [])
    assert len(ended) == 1 and not tr.tracks
