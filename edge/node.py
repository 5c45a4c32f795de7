"""The live node: a worker per camera, the annotator, status and MQTT; stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2

from edge import heap
from edge.capture.camera import CameraCapture, CameraStatus
from edge.capture.feed import Feed
from edge.config import CameraConfig, EdgeConfig, config_hash
from edge.detect.types import UpdateKind
from edge.events import EventLog, Fanout, Sink
from edge.geometry import CameraGeometry
from edge.pipeline import (
    OPENCV_THREADS,
    RUN_ID_FORMAT,
    UNCALIBRATED,
    CameraPipeline,
    EvidenceOutput,
    manifest_info,
    reference_for,
)
from edge.publish.annotator import Annotator, pending
from edge.publish.evidence import EvidenceFiles, clip_size, recover_interrupted
from edge.publish.manifest import iso, load_or_create_key
from edge.worker import CameraWorker

log = logging.getLogger(__name__)
_DEFAULT_FPS = 25.0  # only when neither the config nor the stream says


class StatusFile:
    """Keeps storage/status.json: every camera's latest status, replaced atomically."""

    def __init__(self, storage: Path):
        self.storage = storage
        self._lock = threading.Lock()
        self.statuses: dict[str, dict] = {}

    def on_update(self, kind: UpdateKind, record: dict) -> None:
        """Events are not status."""

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        """Evidence is not status."""

    def on_problem(self, record: dict) -> None:
        """Camera problems are events (events.jsonl, MQTT), not status."""

    def on_status(self, camera: str, status: CameraStatus) -> None:
        with self._lock:
            self.statuses[camera] = status.to_dict()
            tmp = self.storage / "status.json.tmp"
            tmp.write_text(json.dumps(self.statuses, indent=1))
            tmp.replace(self.storage / "status.json")


_STOP_BUDGET_S = 8.0  # SIGTERM to exit; well inside the unit's TimeoutStopSec, and what an operator waits for


class Node:
    """Runs every camera of a config until stopped."""

    def __init__(
        self,
        config: EdgeConfig,
        sinks: list[Sink] | None = None,
        cameras: list[str] | None = None,
        mqtt: bool | None = None,
    ):
        heap.limit_arenas()  # before any camera's threads start: each would get an arena of its own
        cv2.setNumThreads(OPENCV_THREADS)  # the cameras keep the cores busy; OpenCV's pool only spun
        self.config = config
        self.storage = config.storage.dir
        # Evidence, the signing key and the outbox are for this node only: the storage dir is 0700 however
        # it was made (a umask of 022, an older version), so nothing below it is reachable by other users.
        self.storage.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.storage.stat().st_uid == os.geteuid():
            self.storage.chmod(0o700)
        self.events = EventLog(self.storage / "events.jsonl", on_alert=lambda line: log.warning("%s", line))
        self.status_file = StatusFile(self.storage)
        self.detect_on = self._load_detect_state()
        self.publisher = None
        if config.mqtt.enabled if mqtt is None else mqtt:
            from edge.publish.mqtt import MqttPublisher
            from edge.publish.outbox import Outbox

            outbox = Outbox(self.storage / "outbox.sqlite", int(config.mqtt.outbox_max_mb * 1024 * 1024))
            self.publisher = MqttPublisher(config, outbox, self.storage, self.set_detect)
        others = [*(sinks or []), *([self.publisher] if self.publisher else [])]
        self.sink = Fanout([self.events, self.status_file, *others], on_error=log.error)
        self._cpu = (time.monotonic(), time.process_time())
        self.key = load_or_create_key(self.storage / "keys")
        self.config_sha = config_hash(config)
        self.annotator = Annotator(self.key, self.sink.on_evidence)
        self.run_id = datetime.now(UTC).strftime(RUN_ID_FORMAT)
        self._stop = threading.Event()
        self.cameras: dict[str, CameraWorker] = {}
        for name, cam in config.cameras.items():
            if not cameras or name in cameras:
                self.cameras[name] = self._worker(name, cam)

    def _worker(self, name: str, cam: CameraConfig) -> CameraWorker:
        is_file = Path(cam.source).is_file()
        feed = Feed(cam.capture.queue_frames, lossless=is_file)  # a file can wait; a camera cannot
        capture = CameraCapture(name, cam.source, cam.capture, feed, self.sink.on_status, is_file)
        if cam.facade is None:
            capture.status.calibrated, capture.status.warning = False, UNCALIBRATED

        def on_geometry(geometry: CameraGeometry) -> None:
            if cam.facade is not None:
                capture.status.calibrated = geometry.facade is not None
                capture.status.warning = geometry.problem

        evidence = EvidenceOutput(self.storage / "events", self.key, self.config_sha, self.annotator.submit)
        pipeline = CameraPipeline(
            self.config.node.id,
            name,
            cam,
            self.sink,
            evidence,
            id_prefix=self.run_id,
            on_geometry=on_geometry,
            reference=reference_for(self.config, name),
        )
        return CameraWorker(name, capture, feed, pipeline, detect_on=lambda: self.detect_on.get(name, True))

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()
            for name in self.cameras:
                self.publisher.publish_detect_state(name, self.detect_on.get(name, True))
                self.publisher.forget_problems(name)
        self.annotator.start()
        self._resume_evidence()
        threading.Thread(target=self._report_loop, name="status", daemon=True).start()
        for worker in self.cameras.values():
            worker.start()

    def request_stop(self) -> None:
        """Ask run_forever() to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self, budget_s: float = _STOP_BUDGET_S) -> None:
        """Stop capture, handle what was captured, save every clip in progress, then stop the rest."""
        self._stop.set()
        deadline = time.monotonic() + budget_s
        for worker in self.cameras.values():
            worker.stop()
        for worker in self.cameras.values():
            if not worker.join(max(0.0, deadline - time.monotonic() - 1.0)):
                log.error("camera %s: its worker did not finish in time", worker.name)
        self.annotator.stop(abort=True, timeout=max(0.1, deadline - time.monotonic() - 0.5))
        if self.publisher is not None:
            self.publisher.stop()
        for worker in self.cameras.values():
            worker.capture.join(max(0.0, deadline - time.monotonic()))

    def status(self, camera: str) -> CameraStatus:
        return self.cameras[camera].capture.status

    def _resume_evidence(self) -> None:
        """Evidence a previous run left unfinished: partial originals saved as they are, annotations redone."""
        events_dir = self.storage / "events"
        for record, files in recover_interrupted(events_dir, self.key, self._info_for):
            log.warning("event %s: original clip recovered after the node stopped abruptly", record["id"])
            self.sink.on_evidence(record, files)
        for folder in pending(events_dir):
            record = json.loads((folder / "event.json").read_text())
            cam = self.config.cameras.get(record.get("camera"))
            saved = record.get("evidence", {})
            size = saved.get("frame_size") or clip_size(folder / saved.get("original", ""))
            if cam is None or not size:
                # Without the camera's privacy masks an annotated copy could show what must be blurred.
                log.warning("event %s: camera or frame size unknown; no annotated copy", record.get("id"))
                self.annotator.complete_without(folder)
                continue
            caption = f"{self.config.node.id}/{record.get('camera')} {record['level']}"
            self.annotator.submit(folder, caption, CameraGeometry.build(cam, tuple(size)))

    def _info_for(self, camera: str) -> dict:
        cam = self.config.cameras.get(camera)
        return manifest_info(self.config.node.id, camera, cam.source if cam is not None else None, self.config_sha)

    def run_forever(self) -> None:
        """Start, then wait for request_stop() (from a signal handler)."""
        self.start()
        # Wake often: a signal may be delivered to another thread, and only the main thread runs Python's
        # handler, which it cannot do while blocked in an untimed wait.
        while not self._stop.wait(0.5):
            pass

    def _report_loop(self) -> None:
        while not self._stop.wait(self.config.node.status_interval_s):
            try:
                self.refresh_status()
            except Exception:
                log.exception("reporting status failed")
            heap.trim()  # frames queued in a burst, or a clip's buffers, are not kept resident once freed

    def refresh_status(self) -> None:
        """Report every camera's status now (fps and drops change without a change of state), and stats."""
        for worker in self.cameras.values():
            self.sink.on_status(worker.name, worker.capture.status)
        if self.publisher is not None:
            self.publisher.publish_stats(self.stats())

    def stats(self) -> dict:
        """Node health: per camera fps, drops and reconnects; CPU, disk and the outbox."""
        now, cpu = time.monotonic(), time.process_time()
        busy = (cpu - self._cpu[1]) / max(now - self._cpu[0], 1e-6)
        self._cpu = (now, cpu)
        disk = shutil.disk_usage(self.storage)
        out = {
            "v": 1,
            "node": self.config.node.id,
            "time_utc": iso(time.time()),
            "cpu_percent": round(100 * busy / (os.cpu_count() or 1), 1),
            "load1": round(os.getloadavg()[0], 2),
            "disk_free_gb": round(disk.free / 1e9, 2),
            "disk_used_percent": round(100 * disk.used / disk.total, 1),
            "cameras": {
                n: {
                    "state": str(w.capture.status.state),
                    "fps": round(w.capture.status.fps, 2),
                    "dropped": w.feed.dropped,
                    "processed": w.frames,
                    "detection_failures": w.failures,
                    "reconnects_last_hour": w.capture.status.reconnects_last_hour,
                    "detect": self.detect_on.get(n, True),
                }
                for n, w in self.cameras.items()
            },
        }
        if self.publisher is not None:
            n, size = self.publisher.outbox.depth()
            out["outbox"] = {"messages": n, "bytes": size, "dropped": self.publisher.outbox.dropped()}
        return out

    def set_detect(self, camera: str, on: bool) -> None:
        """Switch detection of one camera on or off (MQTT command); remembered across restarts."""
        self.detect_on[camera] = on
        path = self.storage / "detect.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.detect_on))
        tmp.replace(path)
        log.warning("camera %s: detection switched %s", camera, "ON" if on else "OFF")

    def _load_detect_state(self) -> dict[str, bool]:
        try:
            return {k: bool(v) for k, v in json.loads((self.storage / "detect.json").read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}
