"""Prometheus metrics of the node (GET /metrics), read from the running node at each scrape.

Per-camera series carry a `camera` label. Times are counters of seconds beside counters of frames, so a
dashboard divides their rates for milliseconds per frame over any window (docs/grafana/edge-node.json):
    1000 * rate(edge_camera_decode_seconds_total[5m]) / rate(edge_camera_decoded_frames_total[5m])
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge import __version__
from edge.capture.camera import CameraState
from edge.detect.types import UpdateKind
from edge.retention import Level

if TYPE_CHECKING:
    from edge.health import Health
    from edge.node import Node
    from edge.publish.evidence import EvidenceFiles

# Seconds from an alert to its evidence on disk: the original is written through the post-roll (a few s),
# the annotated copy after it at low priority (tens of seconds, longer in a burst).
EVIDENCE_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class NodeMetrics:
    """The node's registry; also a Sink, counting events and timing evidence as they happen."""

    def __init__(self, node: Node):
        self.registry = CollectorRegistry(auto_describe=False)  # collected from the node at scrape time only
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
        self.events = Counter(
            "edge_events",
            "Events that reached each level, per camera.",
            ["camera", "level"],
            registry=self.registry,
        )
        self.evidence = Histogram(
            "edge_evidence_write_seconds",
            "Seconds from an alert to its evidence on disk: stage original (safe) or complete (annotated).",
            ["camera", "stage"],
            buckets=EVIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(node))

    # -- Sink ----------------------------------------------------------------------------------------------
    def on_update(self, kind: UpdateKind, record: dict) -> None:
        if kind in (UpdateKind.NEW, UpdateKind.UPDATE):  # an update raised the level: it reached a new one
            self.events.labels(str(record.get("camera")), str(record.get("level"))).inc()

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        alert = record.get("alert_utc")
        if not alert:
            return
        try:
            began = datetime.fromisoformat(alert.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        self.evidence.labels(str(record.get("camera")), str(files.stage)).observe(max(0.0, time.time() - began))

    def on_status(self, camera: str, status) -> None:
        """Status is read at each scrape instead."""


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


class _NodeCollector(Collector):
    """Reads cameras, outbox, storage and reloads from the node when scraped."""

    def __init__(self, node: Node):
        self.node = node

    def collect(self) -> Iterator:
        health = self.node.health()  # once per scrape: it reads the outbox's depth, which the gauges reuse
        yield from self._cameras()
        yield from self._outbox(health)
        yield from self._storage()
        yield from self._node(health)

    def _cameras(self) -> Iterator:
        cam = ["camera"]
        fams = {
            "up": _gauge("edge_camera_up", "1 while the camera delivers frames.", cam),
            "fps": _gauge("edge_camera_fps", "Frames per second received, over the last 50 frames.", cam),
            "frames": _counter("edge_camera_frames", "Frames handled by detection (or skipped with it off).", cam),
            "detect": _counter("edge_camera_detect_seconds", "Seconds spent in the pipeline on frames.", cam),
            "decoded": _counter("edge_camera_decoded_frames", "Frames decoded.", cam),
            "decode": _counter("edge_camera_decode_seconds", "Seconds spent decoding.", cam),
            "dropped": _counter("edge_camera_dropped_frames", "Frames dropped: detection was behind.", cam),
            "reconnects": _counter("edge_camera_reconnects", "Times the stream came back after being lost.", cam),
            "failures": _counter("edge_camera_failures", "Items whose handling raised (logged, not fatal).", cam),
            "enabled": _gauge("edge_camera_detect_enabled", "1 when detection is on (MQTT detect/set).", cam),
            "beat": _gauge("edge_camera_worker_idle_seconds", "Seconds since the worker last came round.", cam),
            "restarts": _counter(
                "edge_camera_worker_restarts", "Times the camera's worker died and was restarted.", cam
            ),
        }
        now = time.monotonic()
        for name, w in list(self.node.cameras.items()):
            st = w.capture.status
            values = {
                "up": float(st.state == CameraState.ONLINE),
                "fps": st.fps,
                "frames": w.frames,
                "detect": w.detect_s,
                "decoded": w.capture.decoded,
                "decode": w.capture.decode_s,
                "dropped": w.feed.dropped,
                "reconnects": w.capture.reconnects,
                "failures": w.failures,
                "enabled": float(self.node.detect_on.get(name, True)),
                "beat": max(0.0, now - w.beat),
                "restarts": self.node.supervisor.restarts.get(name, 0),
            }
            for key, fam in fams.items():
                fam.add_metric([name], values[key])
        yield from fams.values()

    def _outbox(self, health: Health) -> Iterator:
        pub = self.node.publisher
        connected = _gauge("edge_mqtt_connected", "1 while connected to the broker.")
        connected.add_metric([], float(pub is not None and pub.connected.is_set()))
        yield connected
        if pub is None:
            return
        depth = _gauge("edge_outbox_messages", "Messages waiting in the outbox.")
        depth.add_metric([], health.outbox.get("messages", 0))
        nbytes = _gauge("edge_outbox_bytes", "Bytes waiting in the outbox.")
        nbytes.add_metric([], health.outbox.get("bytes", 0))
        drops = _counter("edge_outbox_dropped", "Messages dropped from the full outbox, by kind.", ["kind"])
        for kind, count in pub.outbox.dropped().items():
            drops.add_metric([str(kind)], count)
        yield from (depth, nbytes, drops)

    def _storage(self) -> Iterator:
        disk = shutil.disk_usage(self.node.storage)
        free = _gauge("edge_disk_free_bytes", "Free bytes on the disk holding storage.dir.")
        free.add_metric([], disk.free)
        total = _gauge("edge_disk_size_bytes", "Size of the disk holding storage.dir.")
        total.add_metric([], disk.total)
        yield from (free, total)
        ret = self.node.retention
        report = ret.last
        if report is None:
            return
        for name, doc, value in (
            ("edge_storage_used_bytes", "Bytes under storage.dir at the last sweep.", report.used_bytes),
            (
                "edge_storage_budget_bytes",
                "Most storage.dir may hold (quota, or less if the disk is fuller).",
                report.budget_bytes,
            ),
            ("edge_storage_evidence_bytes", "Bytes of event evidence.", report.evidence_bytes),
            ("edge_storage_held_bytes", "Bytes of evidence on hold.", report.held_bytes),
            ("edge_storage_protected_bytes", "Bytes that may not be deleted yet.", report.protected_bytes),
        ):
            g = _gauge(name, doc)
            g.add_metric([], value)
            yield g
        level = _gauge("edge_storage_level", "1 for the storage level now: ok, warning, full.", ["level"])
        for lv in Level:
            level.add_metric([str(lv)], float(report.level is lv))
        deleted = _counter("edge_storage_deleted", "Deleted by retention: expired events, other files.", ["what"])
        deleted.add_metric(["expired_events"], ret.expired_total)
        deleted.add_metric(["expendable_files"], ret.expendable_total)
        yield from (level, deleted)

    def _node(self, health: Health) -> Iterator:
        info = _gauge("edge_node_info", "The node's id and software version.", ["node", "version"])
        info.add_metric([self.node.config.node.id, __version__], 1)
        reloads = _counter("edge_config_reloads", "Config reloads, by result.", ["result"])
        for result, count in self.node.reloads.items():
            reloads.add_metric([result], count)
        healthy = _gauge("edge_healthy", "1 when /healthz answers 200.")
        healthy.add_metric([], float(health.ok))
        yield from (info, reloads, healthy)
