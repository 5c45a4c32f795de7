"""The live node: every camera captured and watched in its own threads, events and evidence to the sinks."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge.capture.camera import CameraCapture, CameraStatus, FrameQueue
from edge.capture.packets import PacketRing
from edge.config import CameraConfig, EdgeConfig, config_hash
from edge.events import alert_line
from edge.pipeline import CameraPipeline, EventSink
from edge.publish.evidence import EvidenceFiles
from edge.publish.manifest import load_or_create_key

log = logging.getLogger(__name__)
_DEFAULT_FPS = 25.0  # only when neither the config nor the stream says


class NodeSink:
    """What the node tells the outside world; the MQTT publisher implements the same methods."""

    def on_update(self, kind: str, record: dict) -> None: ...

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None: ...

    def on_status(self, camera: str, status: CameraStatus) -> None: ...


class LocalLog(NodeSink):
    """Appends every event and status change to files under storage.dir, and logs alerts."""

    def __init__(self, storage: Path):
        self.storage = storage
        self._lock = threading.Lock()
        self.statuses: dict[str, dict] = {}

    def _append(self, name: str, obj: dict) -> None:
        with self._lock, (self.storage / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def on_update(self, kind: str, record: dict) -> None:
        if kind == "new":
            log.warning("%s", alert_line(record))
        self._append("events.jsonl", {"type": kind, **record})

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        rel = str(files.folder.relative_to(self.storage))
        self._append(
            "events.jsonl",
            {
                "type": "evidence",
                "id": record["id"],
                "folder": rel,
                "original": files.original,
                "clip": files.annotated,
                "still": files.still,
                "manifest": files.manifest,
            },
        )

    def on_status(self, camera: str, status: CameraStatus) -> None:
        with self._lock:
            self.statuses[camera] = status.to_dict()
            tmp = self.storage / "status.json.tmp"
            tmp.write_text(json.dumps(self.statuses, indent=1))
            tmp.replace(self.storage / "status.json")


class _Fanout(NodeSink):
    def __init__(self, sinks: list[NodeSink]):
        self.sinks = sinks

    def on_update(self, kind, record):
        for s in self.sinks:
            s.on_update(kind, record)

    def on_evidence(self, record, files):
        for s in self.sinks:
            s.on_evidence(record, files)

    def on_status(self, camera, status):
        for s in self.sinks:
            s.on_status(camera, status)


class EvidenceWriter(threading.Thread):
    """Writes evidence off the detection threads: encoding a clip must not make capture drop frames."""

    def __init__(self):
        super().__init__(name="evidence", daemon=True)
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()

    def run(self) -> None:
        while (work := self.jobs.get()) is not None:
            try:
                work()
            except Exception:
                log.exception("writing evidence failed")

    def submit(self, work: Callable[[], None]) -> None:
        self.jobs.put(work)

    def stop(self) -> None:
        self.jobs.put(None)


@dataclass
class CameraRuntime:
    """One camera's threads and buffers."""

    name: str
    cfg: CameraConfig
    ring: PacketRing
    frames: FrameQueue
    capture: CameraCapture
    detection: threading.Thread | None = None
    pipeline: CameraPipeline | None = None
    processed: int = 0
    errors: list[str] = field(default_factory=list)


class Node:
    """Runs every camera of a config until stopped."""

    def __init__(self, config: EdgeConfig, sinks: list[NodeSink] | None = None, cameras: list[str] | None = None):
        self.config = config
        self.storage = config.storage.dir
        self.storage.mkdir(parents=True, exist_ok=True)
        self.local = LocalLog(self.storage)
        self.sink = _Fanout([self.local, *(sinks or [])])
        self.key = load_or_create_key(self.storage / "keys")
        self.config_sha = config_hash(config)
        self.writer = EvidenceWriter()
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S-")
        self._stop = threading.Event()
        self.cameras: dict[str, CameraRuntime] = {}
        for name, cam in config.cameras.items():
            if cameras and name not in cameras:
                continue
            ring = PacketRing(cam.record.buffer_s)
            frames = FrameQueue(cam.capture.queue_frames)
            is_file = Path(cam.source).is_file()
            capture = CameraCapture(name, cam.source, cam.capture, ring, frames, self.sink.on_status, is_file)
            self.cameras[name] = CameraRuntime(name, cam, ring, frames, capture)

    def start(self) -> None:
        self.writer.start()
        for rt in self.cameras.values():
            rt.detection = threading.Thread(target=self._detect, args=(rt,), name=f"detect-{rt.name}", daemon=True)
            rt.detection.start()
            rt.capture.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capture, finish pending evidence with what was captured, stop the writer."""
        self._stop.set()
        for rt in self.cameras.values():
            rt.capture.stop()
        for rt in self.cameras.values():
            if rt.detection is not None:
                rt.detection.join(timeout)
        self.writer.stop()
        self.writer.join(timeout)

    def status(self, camera: str) -> CameraStatus:
        return self.cameras[camera].capture.status

    def _detect(self, rt: CameraRuntime) -> None:
        """One camera's detection loop; a failure here is logged and the loop goes on."""
        sink = EventSink(self.sink.on_update, self.sink.on_evidence)
        while not self._stop.is_set():
            try:
                frame = rt.frames.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if rt.pipeline is None:
                    rt.pipeline = self._pipeline(rt, sink)
                rt.pipeline.on_frame(frame)
                rt.processed += 1
            except Exception as exc:
                log.exception("camera %s: detection failed on a frame", rt.name)
                rt.errors.append(str(exc))
        if rt.pipeline is not None:
            rt.pipeline.finish()

    def _pipeline(self, rt: CameraRuntime, sink: EventSink) -> CameraPipeline:
        fps = rt.cfg.fps or _stream_fps(rt) or _DEFAULT_FPS
        return CameraPipeline(
            self.config.node.id,
            rt.name,
            rt.cfg,
            fps,
            rt.ring,
            self.storage / "events",
            self.key,
            self.config_sha,
            sink,
            submit=self.writer.submit,
            id_prefix=self.run_id,
        )

    def run_forever(self) -> None:
        """Start, then wait for stop() (from a signal handler)."""
        self.start()
        while not self._stop.wait(self.config.node.status_interval_s):
            self.refresh_status()

    def refresh_status(self) -> None:
        """Report every camera's status now (fps and drops change without a change of state)."""
        for rt in self.cameras.values():
            self.sink.on_status(rt.name, rt.capture.status)


def _stream_fps(rt: CameraRuntime) -> float | None:
    for _ in range(50):  # the capture thread learns the rate when it opens the stream
        rate = rt.capture.stream_rate
        if rate:
            return rate
        time.sleep(0.01)
    return None
