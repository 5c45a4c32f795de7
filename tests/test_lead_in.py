"""A new fall's track is followed back to where its object first showed before its origin is reported."""

from dataclasses import replace

import numpy as np

from edge.config import CameraConfig, FallConfig, TrackerConfig
from edge.detect.pipeline import Detector
from edge.detect.types import Blob
from edge.geometry import CameraGeometry, FacadeMap

FPS = 25.0
# A facade 40 m wide and 80 m tall seen straight on at 10 px per metre (image y grows downward).
FACADE = FacadeMap.from_points(
    [(0, 800), (400, 800), (400, 0), (0, 0)], [(0, 0), (40, 0), (40, 80), (0, 80)], 3.0, 1
)
RELEASE_FRAME, RELEASE_M = 3, 60.5  # half a metre above the 21st storey's floor


def _late_fall(lead_in: bool = True, facade: FacadeMap = FACADE):
    """A detector whose only track place is held by another object until frame 15, and the track of a heavy
    fall from RELEASE_M that it picks up at frame 19; with `lead_in`, the object shows (one frame in three
    missed) from its release on. The origin is extrapolated at most 0.2 s back, so the late track alone
    names the floor below."""
    cfg = CameraConfig(
        source="rtsp://127.0.0.1:8554/cam",
        tracker=TrackerConfig(max_tracks=1),
        fall=FallConfig(max_backtrack_s=0.2),
    )
    detector = Detector("cam", cfg, FPS, CameraGeometry((400, 800), facade))
    for f in range(45):
        t = (f - RELEASE_FRAME) / FPS
        blobs = [Blob(300.0, 700.0, 2, 2, 4, 40.0)] if f < 15 else []
        seen = f >= RELEASE_FRAME and not (f < 20 and f % 3 == 2)
        if seen and (lead_in or f >= 19):
            x, y = FACADE.to_image(np.array([[20 + 0.5 * t, RELEASE_M - 4.905 * t * t]]))[0]
            blobs.append(Blob(float(x), float(y), 2, 2, 4, 40.0))
        detector.tracker.step(f, blobs)
    (track,) = [t for t in detector.tracker.tracks if t.points[-1][0] == 44]
    return detector, track


def test_a_fall_picked_up_late_is_given_the_floor_its_object_left_from_when_its_first_blobs_are_found():
    detector, track = _late_fall()
    late = detector._verdict(track)
    assert track.points[0][0] == 19 and late.origin.floor == 20  # from where it was first tracked: too low
    followed = detector._followed_back(track, late)
    assert followed.level is not None and followed.origin.floor == 21
    assert abs(followed.origin.height_m - RELEASE_M) < 0.3
    assert track.points[0][0] == RELEASE_FRAME  # the event's trajectory starts where the object did


def test_a_fall_whose_object_left_no_earlier_blobs_keeps_its_verdict_and_track():
    detector, track = _late_fall(lead_in=False)
    late = detector._verdict(track)
    assert detector._followed_back(track, late) is late and track.points[0][0] == 19


def test_blobs_that_would_make_the_track_no_fall_are_left_out():
    # A roof at 58 m (and 2 m of slack): from its first blobs the track would start above it, off the facade.
    detector, track = _late_fall(facade=replace(FACADE, top_m=58.0))
    late = detector._verdict(track)
    assert late.level is not None  # control: as first tracked, it starts on the facade and is a fall
    assert detector._verdict(detector.tracker.lead_in(track).before(track)).level is None
    assert detector._followed_back(track, late) is late and track.points[0][0] == 19
