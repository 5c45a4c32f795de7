"""One camera's path from stream to events and evidence: the same code for `edge run` and `edge replay`.

It is fed, in order, what capture delivered: stream starts and stops, packets (kept for evidence) and
decoded frames (for detection). Time comes from the stream's own timestamps, never from how many frames
arrived, so frames dropped or delivered in a burst do not bend the physics.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import __version__
from edge.capture.feed import StreamStarted, StreamStopped
from edge.capture.packets import KeptPacket, PacketRing
from edge.capture.source import CapturedFrame, redact
from edge.config import CameraConfig, EdgeConfig
from edge.detect.moved import same_shape
from edge.detect.pipeline import Detector, EventUpdate
from edge.detect.tamper import CameraHealth, OfflineWatch, Problem, ProblemState, Transition
from edge.detect.types import FallEvent, UpdateKind
from edge.events import Sink, event_record, problem_record
from edge.geometry import CameraGeometry
from edge.publish.evidence import EVENT, EvidenceJob, save_original, write_json
from edge.publish.manifest import iso
from edge.verifier import load_verifier

log = logging.getLogger(__name__)
_WALL_CLOCK = 1e9  # capture times above this are Unix time (live); below, seconds into a file (replay)
RUN_ID_FORMAT = "%Y%m%dT%H%M%S-"  # event ids start with their run's start time: unique across restarts
_RATE_WINDOW = 50  # timestamp steps that re-measure the frame rate (2 s at 25 fps)
_RATE_DRIFT = 0.05  # a rate this far from the one in use, over a whole window, replaces it
_MAX_FPS = 120  # frames per second the frame log is sized for
_DEFAULT_FPS = 25.0  # a stream whose rate neither the config, the stream nor its timestamps tell
# OpenCV's worker threads for the whole process (`edge run`, `edge replay`): none. A camera's detection
# runs beside its decoding, and a node's cameras beside each other, which keeps the cores busy already;
# OpenCV's pool split each call over both cores and spun waiting for work: ~3 ms of CPU per 1080p frame
# for no gain in speed (busy clip replayed: 29.4 -> 26.1 ms per frame, same wall time).
OPENCV_THREADS = 1
MAX_REFERENCE_BYTES = 64 * 1024 * 1024  # an 8K JPEG still is ~20 MB; a bigger file is no still
UNCALIBRATED = (
    "no facade calibration: no floors, and falls are judged in pixels only, which lets more false alarms "
    "through and misses more falls; calibrate it (README: Calibrating the facade)"
)


@dataclass
class EvidenceOutput:
    """Where and how evidence is written; None in a pipeline that only detects (benchmarks)."""

    events_dir: Path
    signer: Ed25519PrivateKey
    config_sha256: str
    annotate: Callable[[Path, str, CameraGeometry], None]  # queue the annotated clip of saved evidence


def manifest_info(node: str, camera: str, source: str | None, config_sha256: str | None) -> dict:
    """Who and what made a camera's evidence, as its manifests record it (never the camera's password)."""
    return {
        "node": node,
        "camera": camera,
        "software": f"edge {__version__}",
        "config_sha256": config_sha256,
        "source": redact(source) if source is not None else None,
    }


class FrameLog:
    """Frame number, capture time and stream timestamp of the recent frames."""

    def __init__(self, keep: int):
        self._entries: deque[tuple[int, float, int | None]] = deque(maxlen=keep)
        self._stream_from = 0  # frame number of the current connection's first frame

    def add(self, index: int, t: float, pts: int | None) -> None:
        self._entries.append((index, t, pts))

    def t_of(self, index: int) -> float | None:
        for i, t, _ in reversed(self._entries):
            if i <= index:
                return t
        return self._entries[0][1] if self._entries else None

    def new_stream(self, first_index: int) -> None:
        """Frames from `first_index` on come from a new connection, whose timestamps start afresh."""
        self._stream_from = first_index

    def by_pts(self) -> dict[int, tuple[int, float]]:
        """(frame number, capture time) by stream timestamp, for the current connection's frames still logged:
        an earlier connection's timestamps repeat the new one's (RTSP's start near 0 each time)."""
        return {pts: (i, t) for i, t, pts in self._entries if pts is not None and i >= self._stream_from}


def reference_for(config: EdgeConfig, camera: str) -> Path | None:
    """A camera's reference still: health.reference, or beside the config where `edge calibrate` stores it."""
    from edge.calibrate.still import reference_paths  # local: the calibration page's modules are not needed else

    cam = config.cameras[camera]
    if cam.health.reference is not None:
        return cam.health.reference
    return reference_paths(config._file, camera)[0] if config._file is not None else None


def load_reference(path: Path | None, camera: str) -> np.ndarray | None:
    """A camera's reference still as a grey image, or None (then the moved check learns one at start)."""
    if path is None:
        log.info("camera %s: no reference still; the moved check learns its reference at start", camera)
        return None
    try:
        size = path.stat().st_size if path.is_file() else None
        data = path.read_bytes() if size is not None and size <= MAX_REFERENCE_BYTES else None
        why = "there is none" if size is None else "it cannot be read as an image"
        if size is not None and data is None:
            why = f"{size} bytes is no still (at most {MAX_REFERENCE_BYTES})"
    except OSError as exc:  # not allowed to look (a sandbox, its mode): the node runs on without it
        data, why = None, f"cannot read it ({exc.strerror or exc})"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if image is None:
        log.warning(
            "camera %s: reference still %s: %s; the moved check learns one at start (run edge calibrate)",
            camera,
            path,
            why,
        )
    return image


class ProblemEvents:
    """One camera's problems (offline, covered, blinded, defocused, moved) → camera_problem records to the sink."""

    def __init__(self, pipeline: CameraPipeline, reference: Path | None):
        self.pipeline = pipeline
        self.cfg = pipeline.cfg.health
        self.reference = load_reference(reference, pipeline.camera)
        self.health: CameraHealth | None = None  # made at the first frame, when the picture's shape is known
        self.offline = OfflineWatch(self.cfg)
        self.ids: dict[str, str] = {}  # problem -> id of its open episode
        self.count = 0

    def on_frame(self, frame: CapturedFrame) -> None:
        """Check the frame's picture when a check is due (one per health.sample_s)."""
        if self.health is None:
            self.health = CameraHealth(self.cfg, self._fitting_reference(frame.luma.shape))
        if self.health.due(frame.t):
            self._report(self.health.update(frame.t, frame.luma), frame.t > _WALL_CLOCK)

    def on_state(self, t: float, online: bool, reason: str) -> None:
        """The camera's capture state at wall-clock time `t` (the worker tells it about once a second)."""
        tr = self.offline.update(t, online, reason)
        if tr is not None:
            self._report([tr], True)

    def _fitting_reference(self, shape: tuple[int, int]) -> np.ndarray | None:
        ref = self.reference
        if ref is None:
            return None
        if not same_shape(ref.shape, shape):
            log.warning(
                "camera %s: the reference still is %dx%d, the stream %dx%d (another shape); the moved check "
                "learns its reference at start instead",
                self.pipeline.camera,
                ref.shape[1],
                ref.shape[0],
                shape[1],
                shape[0],
            )
            return None
        return ref

    def active(self) -> list[str]:
        return sorted(self.ids)

    def stand_down(self, t: float, reason: str) -> None:
        """Clear every problem still raised, saying why: new checks take over (reloaded health settings)
        and raise again, after their persistence, what is still wrong. Else nothing would ever clear them."""
        ended = [
            Transition(Problem(key), ProblemState.CLEARED, t, t, None, None, reason) for key in sorted(self.ids)
        ]
        self._report(ended, t > _WALL_CLOCK)

    def _report(self, transitions: list[Transition], wall_clock: bool) -> None:
        p = self.pipeline
        for tr in transitions:
            key = str(tr.problem)
            if tr.state is ProblemState.RAISED:
                self.count += 1
                self.ids[key] = f"{p.id_prefix}{p.camera}-{key}-{self.count}"
                pid = self.ids[key]
            else:
                pid = self.ids.pop(key, f"{p.id_prefix}{p.camera}-{key}-0")
            record = problem_record(tr, p.node, p.camera, pid, self.active(), wall_clock)
            p.sink.on_problem(record)


class CameraPipeline:
    """Stream events, packets and frames in order → detector → alerts now, evidence once post-roll is in."""

    def __init__(
        self,
        node: str,
        camera: str,
        cfg: CameraConfig,
        sink: Sink,
        evidence: EvidenceOutput | None,
        id_prefix: str = "",
        on_geometry: Callable[[CameraGeometry], None] | None = None,
        reference: Path | None = None,
    ):
        self.node, self.camera, self.cfg = node, camera, cfg
        if cfg.facade is None:
            log.warning("camera %s: %s", camera, UNCALIBRATED)
        self.sink, self.evidence = sink, evidence
        self.id_prefix = id_prefix
        self.on_geometry = on_geometry
        self.info = manifest_info(node, camera, cfg.source, evidence.config_sha256 if evidence else None)
        self.ring = PacketRing(cfg.record.buffer_s)
        self.frames = FrameLog(keep=int(cfg.record.buffer_s * _MAX_FPS) + 1)
        self.detector: Detector | None = None
        # Loaded once (checked with the config at start): a detector rebuilt after a reconnect or a new frame
        # size must not find the file gone or replaced by one that was never checked.
        model = cfg.fall.verifier.model
        self.verifier = load_verifier(model) if model is not None else None
        self.geometry: CameraGeometry | None = None
        self.jobs: dict[str, EvidenceJob] = {}
        self.session = 0
        self.fps: float | None = None
        self.index = -1
        self._pts0: float | None = None
        self._base = 0
        self._last_t: float | None = None
        self._first_size: tuple[int, int] | None = None
        self._steps: deque[float] = deque(maxlen=_RATE_WINDOW)  # recent packet timestamp steps: the rate
        self._last_pts: float | None = None  # the last packet's decoding time, seconds
        self._reference = reference
        self.problems = ProblemEvents(self, reference or cfg.health.reference) if cfg.health.enabled else None

    # -- what capture delivers ---------------------------------------------------------------------------
    def start_stream(self, started: StreamStarted) -> None:
        """A new connection: end what the last one saw; its packets cannot share a clip with the new ones."""
        if self.session:
            self.end_stream(StreamStopped(self.session, "the stream restarted"))
        self.ring.clear()
        self.frames.new_stream(self.index + 1)
        self.session = started.session
        self.fps = self.cfg.fps or started.rate or _DEFAULT_FPS
        self._pts0 = None
        self._last_pts = None
        self._steps.clear()

    def on_packet(self, pkt: KeptPacket) -> None:
        """Keep a packet for evidence: in the ring, and in every clip being recorded."""
        self._watch_rate(pkt)
        self.ring.add(pkt)
        for key, job in list(self.jobs.items()):
            try:
                job.add(pkt)
            except Exception:  # one clip that cannot grow (disk error) is saved as it is; the others go on
                log.exception("event %s: recording its clip failed; saving what it has", key)
                job.past_post_roll = job.until_t is not None
                del self.jobs[key]
                self._save(job, note="the clip ends early: writing it failed")
                continue
            if job.complete:
                del self.jobs[key]
                self._save(job)

    def on_frame(self, frame: CapturedFrame, detect: bool = True) -> None:
        """A decoded frame; with detection off it only moves time on (and ends what was being tracked)."""
        self._frame(frame, detect)

    def end_stream(self, stopped: StreamStopped) -> None:
        """The stream ended or failed: end every track and save every clip with what was captured."""
        if stopped.session != self.session:
            return
        self._stop_detecting()
        for job in list(self.jobs.values()):
            self._save(job, note=f"the clip ends early: {stopped.reason}" if not job.complete else None)
        self.jobs.clear()

    def finish(self) -> None:
        """Nothing more will come (end of a file, or the node stopping)."""
        self.end_stream(StreamStopped(self.session, "the node stopped"))

    def reconfigure(self, cfg: CameraConfig, config_sha256: str | None = None) -> None:
        """Reloaded settings from the next frame on: detection restarts with them (tracks in progress end);
        the stream, the packet ring and clips being recorded go on. Unchanged settings leave detection as it
        is; evidence records the new config's hash either way. Call it from the worker's thread."""
        if cfg != self.cfg:
            self._stop_detecting()
            if cfg.fall.verifier.model != self.cfg.fall.verifier.model:
                model = cfg.fall.verifier.model
                self.verifier = load_verifier(model) if model is not None else None
            health_changed = cfg.health != self.cfg.health
            self.cfg = cfg
            self.ring.seconds = cfg.record.buffer_s
            self.geometry = None  # rebuilt at the next frame, with the new facade and masks
            if health_changed:
                self._restart_problem_checks()
        if self.evidence is not None and config_sha256 is not None:
            self.evidence.config_sha256 = config_sha256
        sha = self.evidence.config_sha256 if self.evidence is not None else None
        self.info = manifest_info(self.node, self.camera, cfg.source, sha)

    def use_reference(self, reference: Path | None) -> None:
        """Check for a moved camera against this still from the next frame (`edge calibrate` stored a new one).
        Call it from the worker's thread."""
        self._reference = reference
        self._restart_problem_checks()

    def _restart_problem_checks(self) -> None:
        """New camera health settings: checks made with them (or none, when switched off) from the next frame."""
        old = self.problems
        self.problems = (
            ProblemEvents(self, self._reference or self.cfg.health.reference) if self.cfg.health.enabled else None
        )
        if old is not None:
            t = self._last_t if self._last_t is not None else time.time()
            old.stand_down(t, "the camera's health settings were reloaded: checked again from now")
            if self.problems is not None:
                self.problems.count = old.count  # episode ids stay unique

    # -- frames ------------------------------------------------------------------------------------------
    def _frame(self, frame: CapturedFrame, detect: bool) -> None:
        self.index = self._index_of(frame)
        self._last_t = frame.t
        self.frames.add(self.index, frame.t, frame.pts)
        if self.problems is not None:
            self.problems.on_frame(frame)  # switching detection off does not stop watching the camera
        if not detect:
            self._stop_detecting()
            return
        size = (frame.luma.shape[1], frame.luma.shape[0])
        if self.detector is None or size != self.detector.frame_size or self.fps != self.detector.fps:
            self._stop_detecting()
            self._geometry_for(size)
            self.detector = Detector(self.camera, self.cfg, self.fps, self.geometry, self.verifier)
        self._route(self.detector.process(self.index, frame.luma))

    def _watch_rate(self, pkt: KeptPacket) -> None:
        """Follow the stream's real rate: one measured over the first frames may not hold (exposure settling).

        Measured on packets, which all arrive: frames are dropped when detection falls behind, and the steps
        between the frames that are left would read as a lower rate. Decoding timestamps rise one frame
        at a time even when B-frames reorder the presentation ones.
        """
        stamp = pkt.dts if pkt.dts is not None else pkt.pts
        if stamp is None or self.cfg.fps:
            return
        t = float(stamp * pkt.params.time_base)
        if self._last_pts is not None and t > self._last_pts:
            self._steps.append(t - self._last_pts)
        self._last_pts = t
        if len(self._steps) < _RATE_WINDOW:
            return
        rate = 1.0 / statistics.median(self._steps)  # the median: a lost packet only lengthens one step
        if abs(rate / self.fps - 1.0) > _RATE_DRIFT:
            log.warning(
                "camera %s: frame rate now %.2f fps (was %.2f); detection restarts", self.camera, rate, self.fps
            )
            self._stop_detecting()
            self.fps, self._pts0 = round(rate, 3), None  # frame numbers go on from here at the new rate
            self._steps.clear()

    def _index_of(self, frame: CapturedFrame) -> int:
        """Frame number from the stream's timestamps, so a dropped frame leaves a gap in time as it should."""
        nxt = self.index + 1
        if frame.pts_s is None:
            return nxt
        if self._pts0 is None:
            gap = 0
            if self._last_t is not None and frame.t > _WALL_CLOCK:
                gap = max(0, round((frame.t - self._last_t) * self.fps) - 1)
            self._base, self._pts0 = nxt + gap, frame.pts_s
        return max(nxt, self._base + round((frame.pts_s - self._pts0) * self.fps))

    def _geometry_for(self, size: tuple[int, int]) -> None:
        if self.geometry is not None and self.geometry.frame_size == size:
            return
        if self._first_size is None:
            self._first_size = size
        elif size != self._first_size:
            log.warning("camera %s: frame size changed to %dx%d", self.camera, *size)
        self.geometry = CameraGeometry.build(self.cfg, size, measured_at=self._first_size)
        if self.geometry.problem:
            log.warning("camera %s: %s", self.camera, self.geometry.problem)
        self._log_pose()
        if self.on_geometry:
            self.on_geometry(self.geometry)

    def _log_pose(self) -> None:
        """Say where the calibration puts the camera: an installer can check it, and origins depend on it."""
        facade = self.geometry.facade if self.geometry else None
        if facade is None:
            return
        pose, out_m = facade.camera, self.cfg.fall.release_out_m
        if not facade.brings_out(out_m):
            if pose is None:
                why = "the calibration cannot place the camera: too little perspective, or an implausible place"
            else:
                why = f"release_out_m {out_m:g} is not between 0 and half the camera's distance"
            log.info("camera %s: origins are taken on the wall (%s)", self.camera, why)
            return
        log.info(
            "camera %s: the calibration places the camera %.1f m from the facade, %.1f m up, %.1f m along it; "
            "origins are brought %.2g m out from the wall along its view, and tracks %.2g m further each second",
            self.camera,
            pose.distance_m,
            pose.up_m,
            pose.along_m,
            out_m,
            self.cfg.fall.release_out_speed_mps,
        )

    def _stop_detecting(self) -> None:
        if self.detector is not None:
            self._route(self.detector.finish())
            self.detector = None

    # -- events and evidence -----------------------------------------------------------------------------
    def _route(self, updates: list[EventUpdate]) -> None:
        for u in updates:
            ev = u.event
            ev.id = self.id_prefix + ev.id
            record = self._record(ev)
            if u.kind == UpdateKind.NEW and self.evidence is not None:
                try:
                    self._start_job(ev, record)
                except Exception:  # the alert goes out even when its clip cannot be recorded
                    log.exception("event %s: cannot record its original clip", ev.id)
            # An update's alert does not wait for event.json's fsync; a new event's folder got its event.json
            # in _start_job, so a kill just after the alert leaves a folder that start-up recovery can sign.
            self.sink.on_update(u.kind, record)
            job = self.jobs.get(ev.id)
            if job is not None:
                job.event = ev
                if u.kind == UpdateKind.END:
                    job.until_t = (self.frames.t_of(ev.end_frame) or 0.0) + self.cfg.record.post_s
                if u.kind != UpdateKind.NEW:
                    self._write_event(job, record)
            if job is not None and job.complete:
                del self.jobs[ev.id]
                self._save(job)

    def _start_job(self, ev: FallEvent, record: dict) -> None:
        first_t = self.frames.t_of(ev.start_frame) or 0.0
        folder = self.evidence.events_dir / ev.id
        folder.mkdir(parents=True, exist_ok=True)
        job = EvidenceJob(ev, folder, first_t - self.cfg.record.pre_s, first_t)
        for _, pkt in self.ring.since(job.clip_from_t):
            job.add(pkt)
        if job.original is not None:
            job.original.sync()  # the pre-roll is on disk before anyone hears of the alert
        self.jobs[ev.id] = job
        self._write_event(job, record)  # before the alert goes out: recovery needs it to sign the folder

    def _write_event(self, job: EvidenceJob, record: dict) -> None:
        try:
            write_json(job.folder / EVENT, record)
        except OSError:  # the record is also in events.jsonl, and event.json is written again on save
            log.exception("event %s: cannot update event.json", job.event.id)

    def _record(self, ev: FallEvent) -> dict:
        rec = event_record(ev, self.node)
        moments = (("start_utc", ev.start_frame), ("alert_utc", ev.alert_frame), ("end_utc", ev.end_frame))
        for key, frame in moments:
            t = self.frames.t_of(frame)
            rec[key] = iso(t) if t is not None and t > _WALL_CLOCK else None  # replay has stream time only
        return rec

    def _save(self, job: EvidenceJob, note: str | None = None) -> None:
        """Write the original clip and its signed manifest now; queue the annotated copy for later."""
        if job.original is None:
            log.error("event %s: no video packets kept, no evidence clip", job.event.id)
            return
        record = self._record(job.event)
        try:
            files = save_original(job, record, self.info, self.evidence.signer, self.frames.by_pts(), note)
        except Exception:
            log.exception("event %s: saving the original clip failed", job.event.id)
            return
        self.sink.on_evidence(record, files)
        caption = f"{self.node}/{self.camera} {job.event.level}"
        if self.geometry is None:  # reloaded, and no frame detected on since: the privacy masks apply all the same
            self._geometry_for((job.original.params.width, job.original.params.height))
        self.evidence.annotate(files.folder, caption, self.geometry)
