"""Two objects thrown in quick succession from windows one above the other are two falls; one object is one."""

import numpy as np

from edge.config import CameraConfig
from edge.detect.pipeline import Detector
from edge.detect.types import Blob, UpdateKind
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


def _new_events(*objects, detector: Detector | None = None) -> list:
    """The new falls a detector reports when it sees these objects, each a function of the frame."""
    detector = detector or _detector()
    news = []
    for f in range(110):  # the upper object leaves the view at frame 97
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
