"""The gated search finds a tracked object below the blob threshold where its track predicts it, and only there."""

import numpy as np

from edge.config import TrackerConfig
from edge.detect.gated import FrameLook, Probe, search
from edge.detect.tracker import Tracker
from edge.detect.types import Blob

NOISE = 4.0  # luma levels of noise per pixel
NOISE_K = 4.0  # the motion threshold is this many times the noise: 16 levels
SIZE = (400, 300)
SEARCH = TrackerConfig(search_tracks=32)  # the search is off by default (edge.config: why)


def _frame(rng, objects=(), contrast=0.0, side=6):
    """A noisy flat frame with square objects `contrast` levels off the background, and its background plane."""
    w, h = SIZE
    background = np.full((h, w), 100.0, np.float32)
    image = background + rng.normal(0.0, NOISE, (h, w)).astype(np.float32)
    for x, y in objects:
        image[int(y) - side // 2 : int(y) + side // 2, int(x) - side // 2 : int(x) + side // 2] += contrast
    threshold = np.full((h, w), NOISE * NOISE_K, np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), background, threshold


def test_an_object_at_half_its_pixel_threshold_is_found_where_its_track_predicts_it():
    rng = np.random.default_rng(1)
    image, bg, thr = _frame(rng, [(200, 150)], contrast=0.5 * NOISE * NOISE_K)  # 8 levels, under the 16 threshold
    found = search(image, bg, thr, NOISE_K, Probe(203, 148, 8.0, 6, 6, +1), 5.0)
    assert found is not None
    assert abs(found.blob.x - 199.5) < 1.5 and abs(found.blob.y - 149.5) < 1.5


def test_the_same_object_outside_the_gate_is_not_taken():
    rng = np.random.default_rng(1)
    image, bg, thr = _frame(rng, [(200, 150)], contrast=0.5 * NOISE * NOISE_K)
    assert search(image, bg, thr, NOISE_K, Probe(230, 150, 8.0, 6, 6, +1), 5.0) is None


def test_noise_alone_is_not_found():
    misses = 0
    for seed in range(20):
        image, bg, thr = _frame(np.random.default_rng(seed))
        misses += search(image, bg, thr, NOISE_K, Probe(200, 150, 12.0, 6, 6, +1), 5.0) is None
    assert misses == 20


def test_an_object_of_the_other_sign_is_not_the_tracked_one():
    rng = np.random.default_rng(2)
    image, bg, thr = _frame(rng, [(200, 150)], contrast=-0.5 * NOISE * NOISE_K)
    assert search(image, bg, thr, NOISE_K, Probe(200, 150, 8.0, 6, 6, +1), 5.0) is None
    assert search(image, bg, thr, NOISE_K, Probe(200, 150, 8.0, 6, 6, -1), 5.0) is not None


def test_an_object_among_many_like_it_stands_out_less_than_alone():
    rng = np.random.default_rng(3)
    lone = search(*_frame(rng, [(200, 150)], contrast=12.0), NOISE_K, Probe(200, 150, 8.0, 6, 6, +1), 5.0)
    crowd = [(200 + dx, 150 + dy) for dx in (-16, 0, 16) for dy in (-16, 0, 16)]  # the object and 8 like it
    busy = search(*_frame(rng, crowd, contrast=12.0), NOISE_K, Probe(200, 150, 8.0, 6, 6, +1), 5.0)
    assert lone is not None
    # Its window's own spread is what it is judged against: clutter of its kind raises that spread.
    assert busy is None or busy.snr < lone.snr / 2


def _fall(f):
    return 200.0, 40.0 + 2.0 * f + 0.1 * f * f


def _faint_fall(cfg, frames=40, fades_at=8, strength=2.5):
    """A falling square seen by the prefilter for `fades_at` frames (blobs `strength` times over threshold),
    then only at half its threshold."""
    rng = np.random.default_rng(7)
    tr = Tracker(cfg, SIZE)
    for f in range(frames):
        x, y = _fall(f)
        image, bg, thr = _frame(rng, [(x, y)], contrast=(40.0 if f < fades_at else 8.0))
        blobs = [Blob(x - 0.5, y - 0.5, 6, 6, 36, 40.0, strength)] if f < fades_at else []
        tr.step(f, blobs, FrameLook(image, bg, thr, NOISE_K, cfg.search_snr))
    return tr


def test_a_track_keeps_its_object_through_frames_where_it_is_under_the_blob_threshold():
    tr = _faint_fall(SEARCH)
    assert len(tr.tracks) == 1
    t = tr.tracks[0]
    assert t.hits >= 36 and t.gated >= 28
    assert abs(t.points[-1][2] - _fall(39)[1]) < 3


def test_without_the_search_the_track_ends_where_the_blobs_do():
    tr = _faint_fall(TrackerConfig())
    assert not tr.tracks


def test_a_track_whose_blobs_were_strong_does_not_search():
    # A strong object does not fade below the threshold from one frame to the next: it was hidden or left.
    tr = _faint_fall(SEARCH, strength=12.0)
    assert not tr.tracks


def test_a_track_that_does_not_move_down_does_not_search():
    rng = np.random.default_rng(9)
    cfg = SEARCH
    tr = Tracker(cfg, SIZE)
    for f in range(20):
        x, y = 100.0 + 3.0 * f, 150.0  # sideways, as a bird or an insect
        image, bg, thr = _frame(rng, [(x, y)], contrast=(40.0 if f < 6 else 8.0))
        blobs = [Blob(x - 0.5, y - 0.5, 6, 6, 36, 40.0, 2.5)] if f < 6 else []
        tr.step(f, blobs, FrameLook(image, bg, thr, NOISE_K, cfg.search_snr))
    assert not tr.tracks
