"""A new fall's track is followed back to where its object first showed before its origin is reported."""

import math
from dataclasses import replace

import numpy as np

from edge.config import CameraConfig, FallConfig, TrackerConfig
from edge.detect.pipeline import Detector
from edge.detect.types import Blob, UpdateKind
from edge.geometry import CameraGeometry, FacadeMap

FPS = 25.0
# A facade 40 m wide and 80 m tall seen straight on at 10 px per metre (image y grows downward).
FACADE = FacadeMap.from_points(
    [(0, 800), (400, 800), (400, 0), (0, 0)], [(0, 0), (40, 0), (40, 80), (0, 80)], 3.0, 1
)
RELEASE_FRAME, RELEASE_M = 3, 60.5  # half a metre above the 21st storey's floor


def _late_fall(lead_in: bool = True, facade: FacadeMap = FACADE, jitter_px: float = 0.0, seed: int = 0, **tracker):
    """A detector whose only track place is held by another object until frame 15, and the track of a heavy
    fall from RELEASE_M that it picks up at frame 19; with `lead_in`, the object shows (one frame in three
    missed) from its release on. The origin is extrapolated at most 0.2 s back, so the late track alone
    names the floor below."""
    cfg = CameraConfig(
        source="rtsp://127.0.0.1:8554/cam",
        tracker=TrackerConfig(max_tracks=1, **tracker),
        fall=FallConfig(max_backtrack_s=0.2),
    )
    detector = Detector("cam", cfg, FPS, CameraGeometry((400, 800), facade))
    rng = np.random.default_rng(seed)
    for f in range(45):
        t = (f - RELEASE_FRAME) / FPS
        blobs = [Blob(300.0, 700.0, 2, 2, 4, 40.0)] if f < 15 else []
        seen = f >= RELEASE_FRAME and not (f < 20 and f % 3 == 2)
        if seen and (lead_in or f >= 19):
            x, y = FACADE.to_image(np.array([[20 + 0.5 * t, RELEASE_M - 4.905 * t * t]]))[0]
            x, y = (x, y) + rng.normal(0, jitter_px, 2)
            blobs.append(Blob(float(x), float(y), 2, 2, 4, 40.0))
        detector.tracker.step(f, blobs)
    (track,) = [t for t in detector.tracker.tracks if t.points[-1][0] == 44]
    return detector, track


def test_a_fall_picked_up_late_is_reported_from_where_its_object_first_showed():
    detector, track = _late_fall()
    alone = detector._verdict(track)
    assert track.points[0][0] == 19 and alone.origin.floor == 20  # control: as first tracked, the floor below
    (update,) = detector._judge(track, 44)
    event = update.event
    assert update.kind == UpdateKind.NEW and event.start_frame == RELEASE_FRAME
    assert event.trajectory[0][0] == RELEASE_FRAME
    assert event.origin.floor == 21 and abs(event.origin.height_m - RELEASE_M) < 0.3
    assert event.level == alone.level  # its level is judged on the track as tracked
    assert track.points[0][0] == 19  # which is left as it was


def test_earlier_blobs_each_only_a_nat_likelier_the_objects_than_clutters_still_give_the_origin():
    detector, track = _late_fall()
    lead = detector.tracker.lead_in(track)
    # The same blobs scoring as if each were only 1 nat likelier the object's than clutter's (as in rain).
    barely = replace(lead, evidence=1.0 * len(lead.blobs) + lead.missed * math.log(0.1))
    assert barely.outweighs_its_misses()
    detector.tracker.lead_in = lambda t: barely
    (update,) = detector._judge(track, 44)
    assert update.event.start_frame == RELEASE_FRAME and update.event.origin.floor == 21


def test_with_noisy_blobs_the_lead_in_still_reaches_the_release():
    # 2 px of noise bends a curve through a few blobs harder than gravity: it must not seem to stop falling.
    floors = []
    for seed in (0, 2, 3, 4, 5, 6):
        detector, track = _late_fall(jitter_px=2.0, seed=seed)
        (update,) = detector._judge(track, 44)
        assert update.event.start_frame <= RELEASE_FRAME + 3
        floors.append(update.event.origin.floor)
    assert floors.count(21) >= 5


def test_the_lead_in_needs_no_chain_tracks():
    detector, track = _late_fall(chain_tracks=0)
    (update,) = detector._judge(track, 44)
    assert update.event.start_frame == RELEASE_FRAME and update.event.origin.floor == 21


def test_a_fall_whose_object_left_no_earlier_blobs_is_reported_from_its_first_detection():
    detector, track = _late_fall(lead_in=False)
    (update,) = detector._judge(track, 44)
    assert update.event.start_frame == 19 and update.event.origin.floor == 20


def test_earlier_blobs_that_would_make_the_track_no_fall_are_left_out():
    # A roof at 58 m (and 2 m of slack): from its first blobs the track would start above it, off the facade.
    detector, track = _late_fall(facade=replace(FACADE, top_m=58.0))
    assert detector._verdict(track).level is not None  # control: as first tracked, it is a fall
    assert detector._verdict(detector.tracker.lead_in(track).before(track)).level is None
    (update,) = detector._judge(track, 44)
    assert update.event.start_frame == 19 and update.event.origin.floor == 20


def test_the_lead_in_is_forgotten_when_its_event_ends():
    detector, track = _late_fall()
    detector._judge(track, 44)
    (end,) = detector._end(track)
    assert end.event.origin.floor == 21 and end.event.trajectory[0][0] == RELEASE_FRAME  # kept to the end
    assert track.id not in detector._lead_ins


def _late_fall_in_rain(seed: int, drops: int = 600):
    """A fall from frame 70 seen every other frame among `drops` raindrops a frame until its track begins
    (frame 86): the tracker's only place is held by another object until then."""
    rng = np.random.default_rng(seed)
    # No chain tracks: the object's blobs, once every frame, would start one, and this is the lead-in's test.
    cfg = CameraConfig(source="rtsp://127.0.0.1:8554/cam", tracker=TrackerConfig(max_tracks=1, chain_tracks=0))
    detector = Detector("cam", cfg, FPS, CameraGeometry((400, 800), FACADE))
    release, picked = 70, 86
    for f in range(release + 42):
        blobs = []
        if f < picked - 4:
            blobs.append(Blob(300.0, 700.0, 2, 2, 4, 40.0))
            xs, ys = rng.uniform(0, 400, drops), rng.uniform(0, 800, drops)
            blobs += [Blob(float(x), float(y), 2, 2, 4, 2.0) for x, y in zip(xs, ys, strict=True)]
        if f >= release and (f >= picked or f % 2 == 0):
            t = (f - release) / FPS
            x, y = FACADE.to_image(np.array([[20 + 0.5 * t, RELEASE_M - 4.905 * t * t]]))[0]
            blobs.append(Blob(float(x), float(y), 2, 2, 4, 40.0))
        detector.tracker.step(f, blobs)
    (track,) = [t for t in detector.tracker.tracks if t.points[-1][0] == release + 41 and not t.chained]
    return detector, track, release


def test_in_rain_a_lead_in_stops_at_the_release_and_takes_no_raindrop_before_it():
    ran_on = near = 0
    for seed in range(4, 10):
        detector, track, release = _late_fall_in_rain(seed)
        # Control: followed back as a chain is, without stopping at the release, raindrops lead it on.
        ran_on += min(f for f, _ in detector.tracker.look_back(track, 200).blobs) < release
        (update,) = detector._judge(track, track.points[-1][0])
        assert update.event.start_frame >= release and update.event.origin.floor == 21
        near += update.event.start_frame <= release + 4  # it was first tracked 16 frames after release
    assert ran_on >= 2 and near >= 4  # 3 and 5 of these 6


def test_every_update_of_a_followed_back_event_starts_its_trajectory_at_its_start_frame():
    # A body with drag (terminal 27 m/s) under a roof at 61 m, seen every other frame until its track begins:
    # late in its fall the track with its first blobs may no longer pass for one while the track alone does.
    rng = np.random.default_rng(57)
    cfg = CameraConfig(source="rtsp://127.0.0.1:8554/cam", tracker=TrackerConfig(max_tracks=1))
    detector = Detector("cam", cfg, FPS, CameraGeometry((400, 800), replace(FACADE, top_m=61.0)))
    vt, release, picked, updates = 27.11, 10, 35, []
    for f in range(90):
        blobs = [Blob(300.0, 700.0, 2, 2, 4, 40.0)] if f < picked - 4 else []
        if f >= release and (f >= picked or f % 2 == 0):
            t = (f - release) / FPS
            fallen = vt * vt / 9.81 * np.log(np.cosh(9.81 * t / vt))
            x, y = FACADE.to_image(np.array([[20 + 0.8 * t, RELEASE_M - fallen]]))[0] + rng.normal(0, 2, 2)
            blobs.append(Blob(float(x), float(y), 2, 2, 4, 40.0))
        ended = detector.tracker.step(f, blobs)
        for track in detector.tracker.tracks:
            if not track.missed and track.hits >= cfg.fall.min_points:
                updates += detector._judge(track, f)
        for track in ended:
            updates += detector._end(track)
    updates += detector.finish()
    assert updates and updates[0].event.start_frame < picked  # control: it was followed back
    assert all(u.event.trajectory[0][0] == u.event.start_frame for u in updates)


def _tumbling_fall(lead_in: bool = True):
    """A detector whose only track place is held until frame 34, and a fall from RELEASE_M whose object (a
    paper tumbling edge-on) shows before then only in pairs of frames ten apart: 8 of the 31 frames from its
    release to the place's freeing. Its track begins at 38; without `lead_in`, it is not seen before."""
    cfg = CameraConfig(
        source="rtsp://127.0.0.1:8554/cam",
        tracker=TrackerConfig(max_tracks=1, chain_tracks=0),
        fall=FallConfig(max_backtrack_s=0.2),
    )
    detector = Detector("cam", cfg, FPS, CameraGeometry((400, 800), FACADE))
    for f in range(60):
        blobs = [Blob(300.0, 700.0, 2, 2, 4, 40.0)] if f < 34 else []
        seen = f >= 36 or (f >= RELEASE_FRAME and (f - RELEASE_FRAME) % 10 < 2)
        if seen and (lead_in or f >= 36):
            t = (f - RELEASE_FRAME) / FPS
            x, y = FACADE.to_image(np.array([[20 + 0.5 * t, RELEASE_M - 4.905 * t * t]]))[0]
            blobs.append(Blob(float(x), float(y), 2, 2, 4, 40.0, strength=20.0))  # not faint: seen in 60%
        detector.tracker.step(f, blobs)
    (track,) = [t for t in detector.tracker.tracks if t.points[-1][0] == 59]
    return detector, track


def test_a_fall_seen_in_few_frames_before_its_track_began_is_reported_from_its_release():
    detector, track = _tumbling_fall()
    lead = detector.tracker.lead_in(track)
    # Seen at 3-4, 13-14, 23-24, 33-34 and from 36: missed in 3 x 8 frames and in 35, which had no blob at all.
    assert lead.blobs[0][0] == RELEASE_FRAME and lead.missed == 25
    # Control: with those blobs in front, the track is seen in too few of its frames to pass for a fall.
    assert "seen_often_enough" in detector._judged(lead.before(track)).rules
    (update,) = detector._judge(track, 59)
    assert update.event.start_frame == RELEASE_FRAME and update.event.trajectory[0][0] == RELEASE_FRAME
    assert update.event.origin.floor == 21 and abs(update.event.origin.height_m - RELEASE_M) < 0.5
    assert update.event.level == detector._verdict(track).level  # judged on its track alone


def test_a_fall_that_left_no_blobs_before_its_track_is_reported_from_its_first_detection():
    detector, track = _tumbling_fall(lead_in=False)
    (update,) = detector._judge(track, 59)
    assert update.event.start_frame >= 36 and update.event.origin.floor < 21


def test_a_lead_in_outweighed_by_the_frames_its_object_was_missed_in_is_left_out():
    detector, track = _tumbling_fall()
    lead = detector.tracker.lead_in(track)
    assert lead.outweighs_its_misses()  # control: as found it does, and it is kept (the test above)
    detector.tracker.lead_in = lambda t: replace(lead, evidence=lead.missed * math.log(0.1))  # blobs worth 0
    (update,) = detector._judge(track, 59)
    assert update.event.start_frame == track.points[0][0] and update.event.origin.floor < 21
