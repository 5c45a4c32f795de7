"""The live node: every camera captured and watched in its own threads, events and evidence to the sinks."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.capture.camera import CameraCapture, CameraStatus, FrameQueue
from edge.capture.packets import PacketRing
from edge.config import CameraConfig, EdgeConfig, config_hash
from edge.events import announcement
from edge.pipeline import UNCALIBRATED, CameraPipeline, EventSink
from edge.publish.evidence import EvidenceFiles
from edge.publish.manifest import iso, load_or_create_key

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
        line = announcement(kind, record)
        if line:
            log.warning("%s", line)
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
    failures: int = 0  # frames whose detection raised; counted, reported in stats, never fatal


class Node:
    """Runs every camera of a config until stopped."""

    def __init__(
        self,
        config: EdgeConfig,
        sinks: list[NodeSink] | None = None,
        cameras: list[str] | None = None,
        mqtt: bool | None = None,
    ):
        self.config = config
        self.storage = config.storage.dir
        self.storage.mkdir(parents=True, exist_ok=True)
        self.local = LocalLog(self.storage)
        self.detect_on = self._load_detect_state()
        self.publisher = None
        if config.mqtt.enabled if mqtt is None else mqtt:
            from edge.publish.mqtt import MqttPublisher
            from edge.publish.outbox import Outbox

            outbox = Outbox(self.storage / "outbox.sqlite", int(config.mqtt.outbox_max_mb * 1024 * 1024))
            self.publisher = MqttPublisher(config, outbox, self.storage, self.set_detect)
        self.sink = _Fanout([self.local, *(sinks or []), *([self.publisher] if self.publisher else [])])
        self._cpu = (time.monotonic(), time.process_time())
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
            if cam.facade is None:
                capture.status.calibrated, capture.status.warning = False, UNCALIBRATED
            self.cameras[name] = CameraRuntime(name, cam, ring, frames, capture)

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()
            for name in self.cameras:
                self.publisher.publish_detect_state(name, self.detect_on.get(name, True))
        self.writer.start()
        threading.Thread(target=self._report_loop, name="status", daemon=True).start()
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
        if self.publisher is not None:
            self.publisher.stop()

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
            if not self.detect_on.get(rt.name, True):
                continue  # switched off by command: capture and the evidence buffer go on
            try:
                if rt.pipeline is None:
                    rt.pipeline = self._pipeline(rt, sink)
                rt.pipeline.on_frame(frame)
                rt.processed += 1
            except Exception:
                log.exception("camera %s: detection failed on a frame", rt.name)
                rt.failures += 1
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
        self._stop.wait()

    def _report_loop(self) -> None:
        while not self._stop.wait(self.config.node.status_interval_s):
            try:
                self.refresh_status()
            except Exception:
                log.exception("reporting status failed")

    def refresh_status(self) -> None:
        """Report every camera's status now (fps and drops change without a change of state), and stats."""
        for rt in self.cameras.values():
            self.sink.on_status(rt.name, rt.capture.status)
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
                    "state": rt.capture.status.state,
                    "fps": round(rt.capture.status.fps, 2),
                    "dropped": rt.frames.dropped,
                    "processed": rt.processed,
                    "detection_failures": rt.failures,
                    "reconnects_last_hour": rt.capture.status.reconnects_last_hour,
                    "detect": self.detect_on.get(n, True),
                }
                for n, rt in self.cameras.items()
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


def _stream_fps(rt: CameraRuntime) -> float | None:
    for _ in range(50):  # the capture thread learns the rate when it opens the stream
        rate = rt.capture.stream_rate
        if rate:
            return rate
        time.sleep(0.01)
    return None
