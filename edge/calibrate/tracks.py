"""A minute of the camera through the detector with the page's calibration: every track, with its floor.

For a live camera the minute is the one before the click, from the page's own buffer (`minute`); for a file
it is the file's first minute. Either runs through the same Detector as the node, with the calibration being
edited.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from edge.calibrate.minute import decoded
from edge.capture.packets import KeptPacket
from edge.capture.source import Clock, SourceError, SourceOptions, StreamEnded, VideoSource
from edge.config import CameraConfig, FacadeConfig
from edge.detect.pipeline import Detector
from edge.detect.tracker import Track
from edge.geometry import CameraGeometry

REPLAY_S = 60.0  # the minute the issue asks for
MIN_HITS = 5  # shorter tracks are noise flickering, not something that moved
MIN_TRAVEL_FRAC = 0.02  # and it must have moved this share of the frame height
MAX_TRACKS = 40  # the longest ones; more would hide the facade
DEFAULT_FPS = 25.0
log = logging.getLogger(__name__)


@dataclass
class DrawnTrack:
    points: list[list[float]]  # full-resolution pixels, first detection first
    floor: int | None  # of its first (highest) point, by the calibration
    fall: bool  # the fall decision reported it


@dataclass
class ReplayJob:
    """One replay, run in a thread; the page polls it."""

    state: str = "running"  # running, done, failed
    frames: int = 0
    total: int | None = None
    message: str = ""
    tracks: list[DrawnTrack] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "state": self.state,
            "frames": self.frames,
            "total": self.total,
            "message": self.message,
            "tracks": [t.__dict__ for t in self.tracks] if self.state == "done" else [],
        }


def start(source: str, cam: CameraConfig, facade: dict, opts: SourceOptions, seconds: float = REPLAY_S):
    """Replay the first `seconds` of a file `source` in a thread with this facade calibration; poll the job."""
    job = ReplayJob()
    cfg = cam.model_copy(update={"facade": FacadeConfig.model_validate(facade)})
    args = (job, _replay, (job, source, cfg, opts, seconds))
    threading.Thread(target=_run, args=args, daemon=True, name="calib-replay").start()
    return job


def start_buffered(packets: list[KeptPacket], cam: CameraConfig, facade: dict) -> ReplayJob:
    """Replay packets kept from a live camera (the minute before the click) with this calibration."""
    job = ReplayJob()
    cfg = cam.model_copy(update={"facade": FacadeConfig.model_validate(facade)})
    span = packets[-1].t - packets[0].t if packets else 0.0
    job.message = f"the {span:.0f} s before the click" if packets else ""
    args = (job, _replay_packets, (job, packets, cfg))
    threading.Thread(target=_run, args=args, daemon=True, name="calib-replay").start()
    return job


def _run(job: ReplayJob, replay, args) -> None:
    try:
        replay(*args)
        job.state = "done"
    except SourceError as exc:
        job.state, job.message = "failed", f"cannot read the camera: {exc}"
    except Exception as exc:  # the page must say what happened rather than spin forever
        log.exception("replay failed")
        job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"


def _replay(job: ReplayJob, source: str, cfg: CameraConfig, opts: SourceOptions, seconds: float) -> None:
    """The first `seconds` of a file through the detector."""
    video = VideoSource(source, SourceOptions(**{**opts.__dict__, "clock": Clock.STREAM, "realtime": False}))
    params = video.open()
    fps = cfg.fps or (float(params.rate) if params.rate else DEFAULT_FPS)
    job.total = round(seconds * fps)

    def frames():
        first = None
        try:
            for _, got in video.packets():
                for f in got:
                    yield f.luma
                    first = f.t if first is None else first
                    if f.t - first >= seconds or job.frames >= job.total:
                        return
        except StreamEnded:
            return
        finally:
            video.close()

    _detect(job, cfg, fps, frames(), "no frame could be decoded")


def _replay_packets(job: ReplayJob, packets: list[KeptPacket], cfg: CameraConfig) -> None:
    """The buffered packets decoded and run through the detector, every frame of them."""
    params = packets[0].params if packets else None
    fps = cfg.fps or (float(params.rate) if params is not None and params.rate else DEFAULT_FPS)
    span = packets[-1].t - packets[0].t if packets else 0.0
    job.total = max(1, round(span * fps))
    _detect(job, cfg, fps, decoded(packets), "nothing buffered from the camera could be decoded")


def _detect(job: ReplayJob, cfg: CameraConfig, fps: float, frames, empty: str) -> None:
    """Every luma frame through a Detector built for this calibration; the job gets the tracks drawn."""
    detector: Detector | None = None
    ended: list[Track] = []
    falls: dict[int, int | None] = {}  # track id -> origin floor the fall decision gave
    for luma in frames:
        if detector is None:
            h, w = luma.shape
            detector = Detector("calibrate", cfg, fps, CameraGeometry.build(cfg, (w, h)))
            _keep_ended(detector, ended)
        for u in detector.process(job.frames, luma):
            falls[int(u.event.id.rsplit("-", 1)[1])] = u.event.origin.floor
        job.frames += 1
    if detector is None:
        raise SourceError(empty)
    for u in detector.finish():
        falls[int(u.event.id.rsplit("-", 1)[1])] = u.event.origin.floor
    job.tracks = _drawn(detector, ended, falls)


def _keep_ended(detector: Detector, ended: list[Track]) -> None:
    """Collect every track the tracker ends or flushes, not only those the fall decision reports."""
    tracker = detector.tracker
    step, flush = tracker.step, tracker.flush

    def stepped(*args, **kwargs):  # whatever the tracker's step takes (blobs, and the frame to search)
        gone = step(*args, **kwargs)
        ended.extend(gone)
        return gone

    def flushed():
        gone = flush()
        ended.extend(gone)
        return gone

    tracker.step, tracker.flush = stepped, flushed


def _drawn(detector: Detector, tracks: list[Track], falls: dict[int, int | None]) -> list[DrawnTrack]:
    s = 1.0 / detector.scale
    height = detector.frame_size[1]
    fm = detector.decision.facade
    out_m = detector.decision.cfg.release_out_m if fm is not None else 0.0
    out = []
    for t in tracks:
        pts = np.array([(x * s, y * s) for _, x, y in t.points])
        noise = len(pts) < MIN_HITS or np.ptp(pts[:, 1]) < MIN_TRAVEL_FRAC * height
        if noise and t.id not in falls:  # a decided fall is always drawn (fall.min_points may be 4)
            continue
        floor = falls.get(t.id)
        if floor is None and fm is not None:
            top = pts[int(np.argmin(pts[:, 1]))] / s  # work pixels, where the facade map of the detector is
            along, up = fm.to_facade(top[None])[0]
            # Brought out from the wall as a fall's origin is at release (its top point has not yet moved out).
            floor = fm.floor_at(fm.wall_behind(float(along), float(up), out_m)[1])
        out.append(DrawnTrack([[round(x, 1), round(y, 1)] for x, y in pts], floor, t.id in falls))
    out.sort(key=lambda d: (not d.fall, -len(d.points)))
    return out[:MAX_TRACKS]
