"""The live node: a worker per camera, the annotator, status and MQTT, retention, metrics and health, the systemd
watchdog; reloads its config on SIGHUP and stops cleanly on SIGTERM."""

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
from edge.capture.camera import CameraCapture, CameraState, CameraStatus
from edge.capture.feed import Feed
from edge.config import CameraConfig, ConfigError, EdgeConfig, config_hash, load_config
from edge.detect.types import UpdateKind
from edge.events import EventLog, Fanout, Sink
from edge.geometry import CameraGeometry
from edge.health import Health, MetricsServer, check
from edge.holds import Holds
from edge.logs import protect
from edge.metrics import NodeMetrics
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
from edge.publish.evidence import EvidenceFiles, clip_size, recover_interrupted, why
from edge.publish.manifest import iso, load_or_create_key
from edge.reload import ReloadPlan, ReloadRefused, plan_reload
from edge.retention import Policy, Report, Retention, storage_record
from edge.sdnotify import Notifier
from edge.supervisor import Supervisor, death
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
            self._write()

    def forget(self, camera: str) -> None:
        """A camera removed from the config (reload) is no longer reported."""
        with self._lock:
            if self.statuses.pop(camera, None) is not None:
                self._write()

    def _write(self) -> None:
        tmp = self.storage / "status.json.tmp"
        tmp.write_text(json.dumps(self.statuses, indent=1))
        tmp.replace(self.storage / "status.json")


_STOP_BUDGET_S = 8.0  # SIGTERM to exit; well inside the unit's TimeoutStopSec, and what an operator waits for
_PREFIX_WAIT_S = 0.05  # an event-id prefix is a second: a camera started twice within one waits for the next
_TICK_S = 0.5  # the main loop's period: signals, reloads and watchdog pings are handled this often


def _mark_calibration(capture: CameraCapture, cam: CameraConfig) -> None:
    if cam.facade is None:
        capture.status.calibrated, capture.status.warning = False, UNCALIBRATED


def _file_state(path: Path | None) -> tuple:
    """What tells one version of a file from another without reading it: its path, inode, size and mtime."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        st = None
    return (path,) if st is None else (path, st.st_ino, st.st_size, st.st_mtime_ns)


class Node:
    """Runs every camera of a config until stopped."""

    def __init__(
        self,
        config: EdgeConfig,
        sinks: list[Sink] | None = None,
        cameras: list[str] | None = None,
        mqtt: bool | None = None,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ):
        heap.limit_arenas()  # before any camera's threads start: each would get an arena of its own
        cv2.setNumThreads(OPENCV_THREADS)  # the cameras keep the cores busy; OpenCV's pool only spun
        self.config = config
        self.config_path = config_path  # re-read on reload (SIGHUP); None: a node that cannot reload
        self.only = cameras
        self.mqtt_forced = mqtt
        self.storage = config.storage.dir
        # Evidence, the signing key and the outbox are for this node only: the storage dir is 0700 however
        # it was made (a umask of 022, an older version), so nothing below it is reachable by other users.
        self.storage.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.storage.stat().st_uid == os.geteuid():
            self.storage.chmod(0o700)
        self.events = EventLog(self.storage / "events.jsonl", on_alert=lambda line: log.warning("%s", line))
        self.status_file = StatusFile(self.storage)
        self.detect_on = self._load_detect_state()
        self.holds = Holds(self.storage)
        self.retention = Retention(
            self.storage, config.storage, self.holds, self._on_storage_level, self._on_evidence_expired
        )
        self.metrics = NodeMetrics(self)
        self.reloads = {"ok": 0, "refused": 0}
        self.notifier = notifier or Notifier()
        self.server: MetricsServer | None = None
        self.publisher = self._make_publisher(config)
        # The outbox first: an alert in events.jsonl is then always queued for the center as well, even when the
        # node is killed between the two writes (the other way round, that alert was never sent).
        outbox = [self.publisher] if self.publisher else []
        self.sink = Fanout(
            [*outbox, self.events, self.status_file, self.metrics, *(sinks or [])], on_error=log.error
        )
        self._cpu = (time.monotonic(), time.process_time())
        self.key = load_or_create_key(self.storage / "keys")
        self.config_sha = config_hash(config)
        self.annotator = Annotator(self.key, self.sink.on_evidence)
        self.run_id = datetime.now(UTC).strftime(RUN_ID_FORMAT)
        # Every (camera, event-id prefix) a worker of this node was given: a camera's ids hold its name.
        self._id_prefixes = {(name, self.run_id) for name in config.cameras}
        self._prefix_lock = threading.Lock()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._next_ping = 0.0
        self._stuck_reported: set[str] = set()
        self.supervisor = Supervisor(self._restarted_worker, self._put_worker)
        # Each camera's reference still as its pipeline read it: a reload after `edge calibrate` stored a new one
        # gives the moved check the new still.
        self._references: dict[str, tuple] = {}
        self.cameras: dict[str, CameraWorker] = {}  # replaced whole, never changed in place: others iterate it
        self.cameras = {name: self._worker(name, cam) for name, cam in self._wanted(config).items()}

    def _wanted(self, config: EdgeConfig) -> dict[str, CameraConfig]:
        return {n: c for n, c in config.cameras.items() if not self.only or n in self.only}

    def _make_publisher(self, config: EdgeConfig, outbox=None):
        """The MQTT publisher of `config`, over `outbox` when one is open already (a reload), else the file's."""
        if not (config.mqtt.enabled if self.mqtt_forced is None else self.mqtt_forced):
            return None
        from edge.publish.mqtt import MqttPublisher
        from edge.publish.outbox import Outbox

        max_bytes = int(config.mqtt.outbox_max_mb * 1024 * 1024)
        if outbox is None:
            outbox = Outbox(self.storage / "outbox.sqlite", max_bytes)
        outbox.max_bytes = max_bytes
        running = config.model_copy(update={"cameras": self._wanted(config)})  # commands for these only
        return MqttPublisher(running, outbox, self.storage, self.set_detect, self.set_hold)

    def _restarted_worker(self, name: str) -> CameraWorker:
        """A fresh worker for a camera whose worker died; its event ids carry the time of this restart."""
        self._forget_problems(name)
        return self._worker(name, self.config.cameras[name], self._fresh_id_prefix(name))

    def _fresh_id_prefix(self, camera: str) -> str:
        """An event-id prefix no worker of `camera` has had: the second it is asked for, or the next free one.

        A new worker's tracks and problems count from 1 again: under its predecessor's prefix its events would
        take earlier events' ids, and their evidence folders. Only the same camera started twice within a second
        waits. Locked: the supervisor's thread and a reload may both start workers.
        """
        with self._prefix_lock:
            prefix = datetime.now(UTC).strftime(RUN_ID_FORMAT)
            while (camera, prefix) in self._id_prefixes:
                time.sleep(_PREFIX_WAIT_S)
                prefix = datetime.now(UTC).strftime(RUN_ID_FORMAT)
            self._id_prefixes.add((camera, prefix))
        return prefix

    def _forget_problems(self, name: str) -> None:
        """A camera's new pipeline knows of no problem: empty its retained one (the center then shows none), and
        the new pipeline raises again what is still wrong after its persistence. Else a problem raised before
        would never be cleared, by a pipeline that never raised it."""
        if self.publisher is not None:
            self.publisher.forget_problems(name)

    def _put_worker(self, name: str, worker: CameraWorker) -> None:
        self.cameras = {**self.cameras, name: worker}  # one swap, as a reload does: readers see old or new

    def _worker(self, name: str, cam: CameraConfig, id_prefix: str | None = None) -> CameraWorker:
        is_file = Path(cam.source).is_file()
        feed = Feed(cam.capture.queue_frames, lossless=is_file)  # a file can wait; a camera cannot
        capture = CameraCapture(name, cam.source, cam.capture, feed, self.sink.on_status, is_file)
        _mark_calibration(capture, cam)

        def on_geometry(geometry: CameraGeometry) -> None:
            if pipeline.cfg.facade is not None:  # the pipeline's config: a reload may have changed it
                capture.status.calibrated = geometry.facade is not None
                capture.status.warning = geometry.problem

        evidence = EvidenceOutput(self.storage / "events", self.key, self.config_sha, self.annotator.submit)
        reference = reference_for(self.config, name)
        self._references[name] = _file_state(reference)
        pipeline = CameraPipeline(
            self.config.node.id,
            name,
            cam,
            self.sink,
            evidence,
            id_prefix=id_prefix or self.run_id,
            on_geometry=on_geometry,
            reference=reference,
        )
        return CameraWorker(name, capture, feed, pipeline, detect_on=lambda: self.detect_on.get(name, True))

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()
            for name in self.cameras:
                self.publisher.publish_detect_state(name, self.detect_on.get(name, True))
                self._forget_problems(name)
        self.annotator.start()
        self._resume_evidence()
        self.retention.start()
        threading.Thread(target=self._report_loop, name="status", daemon=True).start()
        listen = self.config.node.metrics.listen
        if listen is not None:
            try:
                server = MetricsServer(self, listen)
                server.start()
                self.server = server
            except OSError as exc:  # the cameras matter more than their metrics: log it loudly and go on
                log.error("metrics and health NOT served at %s: %s", listen, exc)
        for worker in self.cameras.values():
            worker.start()
        self.notifier.ready(f"{len(self.cameras)} cameras started: {', '.join(self.cameras)}")

    def request_stop(self) -> None:
        """Ask run_forever() to return (safe from a signal handler)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask run_forever() to re-read the config file (safe from a signal handler)."""
        self._reload.set()

    def stop(self, budget_s: float = _STOP_BUDGET_S) -> None:
        """Stop capture, handle what was captured, save every clip in progress, then stop the rest."""
        self._stop.set()
        self.notifier.stopping()
        deadline = time.monotonic() + budget_s
        for worker in self.cameras.values():
            worker.stop()
        for worker in self.cameras.values():
            if not worker.join(max(0.0, deadline - time.monotonic() - 1.0)):
                log.error("camera %s: its worker did not finish in time", worker.name)
        self.annotator.stop(abort=True, timeout=max(0.1, deadline - time.monotonic() - 0.5))
        if self.publisher is not None:
            self.publisher.stop()
        self.retention.stop()
        if self.server is not None:
            self.server.stop()
        for worker in self.cameras.values():
            worker.capture.join(max(0.0, deadline - time.monotonic()))

    def status(self, camera: str) -> CameraStatus:
        return self.cameras[camera].capture.status

    def _resume_evidence(self) -> None:
        """Evidence a previous run left unfinished: partial originals saved as they are, annotations redone."""
        events_dir = self.storage / "events"
        for record, files in recover_interrupted(events_dir, self.key, self._info_for):
            log.warning("event %s: original clip recovered after the node stopped abruptly", files.folder.name)
            self.sink.on_evidence(record, files)
        for folder in pending(events_dir):
            try:
                self._resume_annotation(folder)
            except (ValueError, OSError, KeyError) as exc:  # one unreadable folder must not keep every camera down
                log.error("event folder %s: no annotated copy (%s); left in place as found", folder, why(exc))

    def _resume_annotation(self, folder: Path) -> None:
        """Queue the annotated copy of an event whose original was saved by a previous run."""
        record = json.loads((folder / "event.json").read_text())
        if not isinstance(record, dict):
            raise ValueError("event.json holds no event")
        cam = self.config.cameras.get(record.get("camera"))
        saved = record.get("evidence", {})
        size = saved.get("frame_size") or clip_size(folder / saved.get("original", ""))
        if cam is None or not size:
            # Without the camera's privacy masks an annotated copy could show what must be blurred.
            log.warning("event %s: camera or frame size unknown; no annotated copy", record.get("id"))
            self.annotator.complete_without(folder)
            return
        caption = f"{self.config.node.id}/{record.get('camera')} {record['level']}"
        self.annotator.submit(folder, caption, CameraGeometry.build(cam, tuple(size)))

    def _info_for(self, camera: str) -> dict:
        cam = self.config.cameras.get(camera)
        return manifest_info(self.config.node.id, camera, cam.source if cam is not None else None, self.config_sha)

    def run_forever(self) -> None:
        """Start, then wait for request_stop() (from a signal handler), reloading when asked."""
        self.start()
        # Wake often: a signal may be delivered to another thread, and only the main thread runs Python's
        # handler, which it cannot do while blocked in an untimed wait.
        while not self._stop.wait(self.notifier.wake_s(_TICK_S)):  # WatchdogSec= under a second wants more
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            self.supervisor.check(self.cameras)  # a dead worker is replaced, alone, after its backoff
            self._watchdog()

    def _watchdog(self) -> None:
        """WATCHDOG=1, from this main loop, only while every camera worker is coming round its loop. A dead one
        is not stuck: the supervisor restarts it, and the other cameras must not be restarted with it."""
        if self.notifier.watchdog_s is None or time.monotonic() < self._next_ping:
            return
        stuck = self._stalled_workers()
        for name in set(stuck) - self._stuck_reported:
            log.error("camera %s: %s; watchdog pings stop, systemd will restart the node", name, stuck[name])
        self._stuck_reported = set(stuck)
        if not stuck:
            self.notifier.ping()
            self._next_ping = time.monotonic() + self.notifier.watchdog_s

    def stuck_workers(self) -> dict[str, str]:
        """Camera workers that died (being restarted) or have not come round their loop for
        node.worker_stall_s: name -> why (/healthz)."""
        out = self._stalled_workers()
        if not self._stop.is_set():
            out.update({n: why for n, w in list(self.cameras.items()) if (why := death(w))})
            out.update(self.supervisor.waiting())
        return out

    def _stalled_workers(self) -> dict[str, str]:
        """Camera workers alive but not back in their loop for node.worker_stall_s, or whose capture says the
        camera is online yet has handed them nothing for that long past its own stall watchdog: name -> why."""
        now, limit = time.monotonic(), self.config.node.worker_stall_s
        out = {}
        for name, w in list(self.cameras.items()):
            if not w.alive:
                continue
            if now - w.beat > limit:
                out[name] = f"its worker has been stuck for {now - w.beat:.0f} s"
            # A stream that stops is taken offline by the capture within capture.stall_s: online and silent for
            # longer, the capture itself is hung (a decoder deadlock), and the camera is blind while "online".
            elif w.capture.status.state == CameraState.ONLINE and now - w.fed > limit + w.capture.cfg.stall_s:
                out[name] = f"its capture has delivered nothing for {now - w.fed:.0f} s while the camera is online"
        return out

    def health(self) -> Health:
        """What GET /healthz answers."""
        return check(self)

    # -- reload --------------------------------------------------------------------------------------------
    def reload(self, config: EdgeConfig | None = None) -> bool:
        """Re-read the config file (or take `config`) and apply what changed; a bad one is refused and the
        running config kept. Runs in the main loop's thread."""
        self.notifier.reloading()
        try:
            new = config if config is not None else self._read_config()
            protect(new)  # its passwords are masked in the log lines from here, whether or not it applies
            plan = plan_reload(self.config, new, self.only)
            self._apply(new, plan)
        except (ConfigError, ReloadRefused, OSError) as exc:
            self.reloads["refused"] += 1
            log.error("config reload refused, the running config is kept: %s", exc)
            self.notifier.ready("reload refused; running config kept")
            return False
        self.reloads["ok"] += 1
        log.warning("config reloaded: %s", plan.summary())
        self.notifier.ready(f"reloaded: {plan.summary()}")
        return True

    def _read_config(self) -> EdgeConfig:
        if self.config_path is None:
            raise ReloadRefused("this node was not started from a config file")
        return load_config(self.config_path)

    def _apply(self, new: EdgeConfig, plan: ReloadPlan) -> None:
        old_cameras, running = self.cameras, (self.config, self.config_sha)
        self.config, self.config_sha = new, config_hash(new)
        fresh, where = {}, "mqtt"
        try:  # what can still fail (a model, a CA file) is made before anything running is touched
            for name in plan.added + plan.reconnected:
                where = f"cameras.{name}"
                fresh[name] = self._worker(name, new.cameras[name], self._fresh_id_prefix(name))
            where = "mqtt"
            running_outbox = self.publisher.outbox if self.publisher is not None else None
            publisher = self._make_publisher(new, running_outbox) if plan.mqtt else None
        except Exception as exc:
            self.config, self.config_sha = running
            source = f"{self.config_path}: " if self.config_path else ""
            raise ReloadRefused(f"{source}{where}: cannot be applied: {exc}") from exc
        self._retire([old_cameras[n] for n in plan.removed + plan.reconnected])
        cameras = {n: w for n, w in old_cameras.items() if n not in plan.removed + plan.reconnected}
        for name in plan.reconfigured + plan.unchanged:
            self._reconfigure(cameras[name], new.cameras[name])
        cameras.update(fresh)
        self.cameras = {n: cameras[n] for n in self._wanted(new)}  # one swap: readers see old or new
        if plan.mqtt:
            self._replace_publisher(publisher)
            if publisher is not None:  # made for the new cameras only: it would not know the removed ones
                publisher.forget_cameras(plan.removed)
        elif self.publisher is not None and (plan.added or plan.removed):
            self.publisher.set_cameras(list(self.cameras))
        for name in plan.added + plan.reconnected:
            self._forget_problems(name)
            self.cameras[name].start()
            if self.publisher is not None:
                self.publisher.publish_detect_state(name, self.detect_on.get(name, True))
        if plan.storage:
            self.retention.configure(new.storage)

    def _retire(self, workers: list[CameraWorker]) -> None:
        """Stop cameras leaving the config, all at once and within one budget: one after another, a few slow
        ones would keep the main loop (and so the watchdog's pings) away for longer than WatchdogSec."""
        deadline = time.monotonic() + _STOP_BUDGET_S
        for worker in workers:
            worker.stop()
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.error("camera %s: its worker did not finish in time", worker.name)
        for worker in workers:
            worker.capture.join(max(0.0, deadline - time.monotonic()) + 1.0)
            self.status_file.forget(worker.name)
            self.supervisor.forget(worker.name)

    def _reconfigure(self, worker: CameraWorker, cam: CameraConfig) -> None:
        sha, pipeline = self.config_sha, worker.pipeline
        reference = reference_for(self.config, worker.name)
        state = _file_state(reference)
        new_reference = state != self._references.get(worker.name)
        self._references[worker.name] = state

        def apply() -> None:
            pipeline.reconfigure(cam, sha)
            _mark_calibration(worker.capture, cam)
            if new_reference:  # `edge calibrate` stored another still (or health.reference names another file)
                pipeline.use_reference(reference)

        worker.call_soon(apply)

    def _replace_publisher(self, publisher) -> None:
        """New MQTT settings: a new client over the same open outbox, so a message a worker is handing the old
        client meanwhile waits in it for the new one, and no reload leaves a database connection behind."""
        old = self.publisher
        self.publisher = publisher
        kept = [s for s in self.sink.sinks if s is not old]
        self.sink.sinks = ([self.publisher] if self.publisher else []) + kept  # one swap: no sink is missed
        if old is not None:
            old.stop()  # before the new client connects: the broker allows one session per client id
            if publisher is None:  # MQTT switched off: nobody will send what is in the file until it is on again
                old.outbox.close()
        if self.publisher is not None:
            self.publisher.start()
            for name in self.cameras:
                self.publisher.publish_detect_state(name, self.detect_on.get(name, True))

    # -- storage -------------------------------------------------------------------------------------------
    def _on_evidence_expired(self, event_ids: list[str]) -> None:
        """Retention deleted these events' evidence: their retained hold states go too."""
        publisher = self.publisher  # read once: a reload may replace it meanwhile
        if publisher is not None:
            publisher.forget_hold_states(event_ids)

    def _on_storage_level(self, report: Report, policy: Policy, changed: bool = True) -> None:
        """The storage level after the first sweep, or changed: the center is told (retained); a change is also
        logged and written to events.jsonl."""
        record = storage_record(self.config.node.id, report, policy)
        if changed:
            (log.warning if record["level"] != "ok" else log.info)("%s", record["message"])
            try:  # on a disk full to the last byte this fails; the center must still be told
                self.events.on_storage(record)  # the one durable writer of events.jsonl: no line is interleaved
            except OSError as exc:
                log.error("storage level not written to events.jsonl: %s", exc)
        publisher = self.publisher  # read once: a reload may replace it meanwhile
        if publisher is not None:
            publisher.publish_storage(record)

    def set_hold(self, event_id: str, held: bool) -> bool:
        """Hold (or release) an event's evidence, never deleted automatically while held (MQTT command);
        returns whether it is held now."""
        self.holds.set(event_id, held)
        return self.holds.is_held(event_id)

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
        """Node health: per camera fps, drops and reconnects; CPU, disk, storage and the outbox."""
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
                    "worker_restarts": self.supervisor.restarts.get(n, 0),
                    "reconnects_last_hour": w.capture.status.reconnects_last_hour,
                    "detect": self.detect_on.get(n, True),
                }
                for n, w in self.cameras.items()
            },
        }
        report = self.retention.last
        if report is not None:
            out["storage"] = {
                "level": str(report.level),
                "used_bytes": report.used_bytes,
                "budget_bytes": report.budget_bytes,
                "evidence_bytes": report.evidence_bytes,
                "held_bytes": report.held_bytes,
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
