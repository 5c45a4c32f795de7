"""One camera's path from frames to events and evidence, shared by the live node and `edge replay`."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import __version__
from edge.capture.packets import PacketRing
from edge.capture.source import CapturedFrame, redact
from edge.config import CameraConfig
from edge.detect.pipeline import Detector, EventUpdate, facade_map
from edge.events import event_record
from edge.publish.evidence import EvidenceFiles, EvidenceJob, write_evidence
from edge.publish.manifest import iso

log = logging.getLogger(__name__)
_WALL_CLOCK = 1e9  # capture times above this are Unix time (live); below, seconds into a file (replay)
UNCALIBRATED = (
    "no facade calibration: no floors, and falls are judged in pixels only, which lets more false alarms "
    "through and misses more falls; calibrate it (README: Calibrating the facade)"
)


@dataclass
class EventSink:
    """Where a pipeline reports: the alert as soon as it is decided, and the evidence when it is written."""

    on_update: Callable[[str, dict], None]  # kind ("new" | "update" | "end"), event record
    on_evidence: Callable[[dict, EvidenceFiles], None]  # final record with file paths, and the files


class FrameLog:
    """Capture time and stream timestamp of the recent frames, by frame index."""

    def __init__(self, keep: int):
        self._entries: deque[tuple[int, float, int | None]] = deque(maxlen=keep)

    def add(self, index: int, t: float, pts: int | None) -> None:
        self._entries.append((index, t, pts))

    def t_of(self, index: int) -> float | None:
        for i, t, _ in reversed(self._entries):
            if i == index:
                return t
            if i < index:
                break
        return self._entries[0][1] if self._entries else None

    def pts_index(self) -> dict[int, int]:
        """Frame index by stream timestamp, for the frames still logged."""
        return {pts: i for i, _, pts in self._entries if pts is not None}


class CameraPipeline:
    """Frames in order → detector → alerts now, evidence once the post-roll has been captured."""

    def __init__(
        self,
        node: str,
        camera: str,
        cfg: CameraConfig,
        fps: float,
        ring: PacketRing,
        events_dir: Path,
        signer: Ed25519PrivateKey,
        config_sha256: str,
        sink: EventSink,
        submit: Callable[[Callable[[], None]], None] | None = None,
        id_prefix: str = "",
    ):
        self.node, self.camera, self.cfg, self.fps = node, camera, cfg, fps
        if cfg.facade is None:
            log.warning("camera %s: %s", camera, UNCALIBRATED)
        self.ring, self.events_dir, self.signer = ring, events_dir, signer
        self.sink = sink
        self.submit = submit or (lambda work: work())
        self.id_prefix = id_prefix
        self.info = {
            "node": node,
            "camera": camera,
            "software": f"edge {__version__}",
            "config_sha256": config_sha256,
            "source": redact(cfg.source),
        }
        self.frames = FrameLog(keep=int(cfg.record.buffer_s * fps) + 1)
        self.detector: Detector | None = None
        self.jobs: dict[str, EvidenceJob] = {}
        self.index = -1
        self.facade = facade_map(cfg)

    def on_frame(self, frame: CapturedFrame) -> None:
        """Feed the next frame; alerts go out at once, evidence when complete."""
        self.index += 1
        self.frames.add(self.index, frame.t, frame.pts)
        size = (frame.luma.shape[1], frame.luma.shape[0])
        if self.detector is None or size != self.detector.frame_size:
            if self.detector is not None:  # resolution changed: end what was seen, start afresh
                log.warning("camera %s: frame size changed to %dx%d", self.camera, *size)
                self._route(self.detector.finish())
            self.detector = Detector(self.camera, self.cfg, self.fps, size)
        self._route(self.detector.process(self.index, frame.luma))
        self._advance_jobs()

    def finish(self) -> None:
        """End of stream: end every track, write the evidence with what was captured."""
        if self.detector is not None:
            self._route(self.detector.finish())
        for job in list(self.jobs.values()):
            job.take(self.ring.after(job.last_seq))
            self._write(job)
        self.jobs.clear()

    def _route(self, updates: list[EventUpdate]) -> None:
        for u in updates:
            ev = u.event
            ev.id = self.id_prefix + ev.id
            if u.kind == "new":
                first_t = self.frames.t_of(ev.start_frame) or 0.0
                job = EvidenceJob(ev, first_t - self.cfg.record.pre_s, first_t)
                job.take(self.ring.since(job.clip_from_t))
                self.jobs[ev.id] = job
            job = self.jobs.get(ev.id)
            if job is not None:
                job.event = ev
                if u.kind == "end":
                    job.until_t = (self.frames.t_of(ev.end_frame) or 0.0) + self.cfg.record.post_s
            self.sink.on_update(u.kind, self._record(ev))

    def _record(self, ev) -> dict:
        rec = event_record(ev, self.node)
        for key, frame in (
            ("start_utc", ev.start_frame),
            ("alert_utc", ev.alert_frame),
            ("end_utc", ev.end_frame),
        ):
            t = self.frames.t_of(frame)
            rec[key] = iso(t) if t is not None and t > _WALL_CLOCK else None  # replay has stream time only
        return rec

    def _advance_jobs(self) -> None:
        for key, job in list(self.jobs.items()):
            job.take(self.ring.after(job.last_seq))
            if job.complete:
                del self.jobs[key]
                self._write(job)

    def _write(self, job: EvidenceJob) -> None:
        if not job.packets:
            log.error("event %s: no video packets kept, no evidence clip", job.event.id)
            return
        job.pts_index = self.frames.pts_index()
        folder = self.events_dir / job.event.id
        caption = f"{self.node}/{self.camera} {job.event.level}"
        privacy = [p.points for p in self.cfg.masks.privacy]
        record = self._record(job.event)

        def work() -> None:
            try:
                files = write_evidence(job, folder, caption, privacy, self.facade, self.signer, self.info, record)
            except Exception:
                log.exception("event %s: writing evidence failed", job.event.id)
                return
            self.sink.on_evidence(record, files)

        self.submit(work)
