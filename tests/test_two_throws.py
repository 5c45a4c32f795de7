"""Two objects thrown in quick succession from windows one above the other are two falls; one object is one."""

import copy

import numpy as np

from edge.config import CameraConfig
from edge.detect.pipeline import Detector, _Duplicate
from edge.detect.tracker import Track
from edge.detect.types import AlertLevel, Blob, FallEvent, Origin, UpdateKind
from edge.geometry import CameraGeometry, FacadeMap

FPS = 25.0
# A facade 40 m wide and 80 m tall seen straight on at 10 px per metre (image y grows downward).
FACADE = FacadeMap.from_points(
    [(0, 800), (400, 800), (400, 0), (0, 0)], [(0, 0), (40, 0), (40, 80), (0, 80)], 3.0, 1
)
UPPER = (3, 70.5)  # release frame and height: the 24th storey
LOWER = (20, 64.5)  # two thirds of a second later, two storeys below on the same column: the 22nd


def _at(release: tuple[int, float], frame: int, terminal_mps: float | None = None) -> tuple[float, float] | None:
    """Where an object released at `release` (frame, metres) is seen at `frame`, None before or below view.

    With `terminal_mps`, air slows it (quadratic drag) towards that speed.
    """
    start, height = release
    t = (frame - start) / FPS
    if terminal_mps is None:
        h = height - 4.905 * t * t
    else:
        h = height - terminal_mps**2 / 9.81 * np.log(np.cosh(9.81 * t / terminal_mps))
    if t < 0 or h < 1.0:
        return None
    x, y = FACADE.to_image(np.array([[20 + 0.4 * t, h]]))[0]
    return float(x), float(y)


def _detector() -> Detector:
    cfg = CameraConfig(source="rtsp://127.0.0.1:8554/cam")
    return Detector("cam", cfg, FPS, CameraGeometry((400, 800), FACADE))


def _new_events(*objects, detector: Detector | None = None, frames: int = 110) -> list:
    """The new falls a detector reports when it sees these objects, each a function of the frame."""
    detector = detector or _detector()
    news = []
    for f in range(frames):  # the upper object leaves the view at frame 97
        blobs = [Blob(*xy, 2, 2, 4, 40.0) for xy in (where(f) for where in objects) if xy is not None]
        news += [u.event for u in detector.step(f, blobs) if u.kind == UpdateKind.NEW]
    return news


def test_the_lower_of_two_throws_is_reported_with_its_own_floor():
    # The upper object passes the lower window just after the lower one leaves it: their paths run together
    # for the lower one's first frames, and it is first taken for the upper one.
    upper, lower = _new_events(lambda f: _at(UPPER, f), lambda f: _at(LOWER, f))
    assert sorted([upper.origin.floor, lower.origin.floor]) == [22, 24]


def test_the_lower_throw_alone_is_reported():  # the positive control: its track is a fall on its own
    (lower,) = _new_events(lambda f: _at(LOWER, f))
    assert lower.origin.floor == 22


def test_a_second_track_trailing_one_object_by_a_frame_is_no_second_fall():
    # A blur streak's tail split off: the same object a frame late, 12 px aside (same_object_frac is 20 px).
    def tail(f):
        xy = _at(UPPER, f - 1)
        return None if xy is None or f < 20 else (xy[0] + 12.0, xy[1])

    detector = _detector()
    (only,) = _new_events(lambda f: _at(UPPER, f), tail, detector=detector)
    assert only.origin.floor == 24
    assert not detector.duplicates  # both tracks ended with the object out of view, and nothing is kept


def test_a_track_seen_apart_from_a_fall_is_never_taken_for_it_again():
    detector = _detector()
    frames = np.arange(0, 31.0)
    fall = np.column_stack([frames, 200.0 + 2 * frames, 100.0 + 0.5 * frames**2])  # its track lost at 30
    event = FallEvent(
        "cam-1", "cam", AlertLevel.SUSPECTED, 1.0, 0, 20, 30, [], Origin(0, 0, None, None), None, None, None, FPS
    )
    detector._recent = [(event, fall)]
    # A second track 60 px aside while the fall's track was seen, then on the lost track's curve for longer.
    later = np.arange(31.0, 60.0)
    points = [(int(f), 260.0 + 2 * f, 100.0 + 0.5 * f * f) for f in range(20, 31)]
    points += [(int(f), 200.0 + 2 * f, 100.0 + 0.5 * f * f) for f in later]
    track = Track(9, np.zeros(6), np.eye(6), points=points)
    assert detector._known_fall(track) == "cam-1"  # control: over its whole path, it runs along that fall
    detector._duplicates[9] = _Duplicate("cam-1")
    assert not detector._still_duplicate(track)  # but where both were seen, it was elsewhere
    assert detector._known_fall(track) is None


def test_a_track_on_a_fall_whose_own_track_ends_in_that_frame_is_no_second_fall():
    detector = _detector()
    (fall,) = _new_events(lambda f: _at(UPPER, f), detector=detector, frames=60)
    (reported,) = [t for t in detector.tracker.tracks if t.falling]
    twin = copy.deepcopy(reported)  # a second track on the same object, judged as the first one ends
    twin.id = 99
    detector.tracker.step = lambda frame, blobs, look=None: [reported]
    detector.tracker.tracks = [twin]
    updates = detector.step(60, [])
    assert [(u.kind, u.event.id) for u in updates] == [(UpdateKind.END, fall.id)]
    assert detector.duplicates == {99}


def _picked_up_from_a_track_gone_astray() -> tuple[Detector, Track, np.ndarray]:
    """A reported fall whose track lost its object at frame 30 and took clutter far off at 34 and 38; a new
    track on the object from frame 31; and the blobs the object left before that track began (its lead-in),
    which are the reported track's own."""
    detector = _detector()

    def curve(f):
        return (f, 200.0 + 2 * f, 100.0 + 0.5 * f * f)

    fall = np.array([curve(f) for f in range(31)] + [(34, 150.0, 900.0), (38, 120.0, 1000.0)])
    event = FallEvent(
        "cam-1", "cam", AlertLevel.SUSPECTED, 1.0, 0, 20, 38, [], Origin(0, 0, None, None), None, None, None, FPS
    )
    detector._recent = [(event, fall)]
    track = Track(9, np.zeros(6), np.eye(6), points=[curve(f) for f in range(31, 51)])
    return detector, track, np.array([curve(f) for f in range(12, 31)])


def test_a_track_whose_lead_in_is_a_reported_falls_own_blobs_is_that_fall():
    detector, track, before = _picked_up_from_a_track_gone_astray()
    assert detector._known_fall(track) is None  # control: its own points alone meet only the clutter
    assert detector._known_fall(track, before) == "cam-1"


def test_a_track_taken_for_a_fall_by_its_lead_in_stays_taken_for_it():
    detector, track, before = _picked_up_from_a_track_gone_astray()
    detector._duplicates[9] = _Duplicate("cam-1")
    assert not detector._still_duplicate(track)  # control: without its lead-in, the clutter parts them
    detector._parted.clear()
    detector._duplicates[9] = _Duplicate("cam-1", before)
    assert detector._still_duplicate(track)


def test_a_track_that_shares_one_blob_with_an_ended_fall_is_not_that_fall():
    # A raindrop the fall's track took in its last frame starts another object's track, which goes elsewhere.
    detector, _, _ = _picked_up_from_a_track_gone_astray()
    fall = detector._recent[0][1]
    shared = tuple(fall[-1])
    elsewhere = [
        (int(shared[0]) + k, shared[1] + 300.0 + 2 * k, shared[2] - 40.0 + 0.5 * k * k) for k in range(1, 20)
    ]
    track = Track(9, np.zeros(6), np.eye(6), points=[shared, *elsewhere])
    assert detector._known_fall(track) is None
    # Control: the same track, met at the fall's places for five frames before that, is the fall.
    before = fall[-6:-1]
    assert detector._known_fall(track, before) == "cam-1"
