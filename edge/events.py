"""The event record, the one `events.jsonl` format, and the Sink every consumer of events implements.

`events.jsonl` (README: "events.jsonl") is append-only, one JSON object per line, written the same way by
`edge run` and `edge replay`: a row per event change (`type` new | update | end, with the full event record)
a row per evidence stage (`type` evidence, `stage` original | complete, with file paths relative to the
folder holding events.jsonl), and a row per camera problem raised or cleared (`type` camera_problem, see
problem_record and docs/schemas/camera-problem.schema.json).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge.detect.tamper import Transition
from edge.detect.types import FallEvent, UpdateKind
from edge.publish.manifest import iso

if TYPE_CHECKING:
    from edge.capture.camera import CameraStatus
    from edge.publish.evidence import EvidenceFiles

SCHEMA_VERSION = 1


class RowType(StrEnum):
    """The `type` of an events.jsonl row: an event change, evidence written, a camera problem, storage."""

    NEW = UpdateKind.NEW.value
    UPDATE = UpdateKind.UPDATE.value
    END = UpdateKind.END.value
    EVIDENCE = "evidence"
    CAMERA_PROBLEM = "camera_problem"
    STORAGE = "storage"  # the node's storage level changed (live only)


class Sink(Protocol):
    """What a camera's worker tells the world: event changes, evidence written, camera status."""

    def on_update(self, kind: UpdateKind, record: dict) -> None: ...

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None: ...

    def on_status(self, camera: str, status: CameraStatus) -> None: ...

    def on_problem(self, record: dict) -> None: ...


class Fanout:
    """One sink that passes everything to several; a failing sink is logged and does not stop the others."""

    def __init__(self, sinks: list[Sink], on_error: Callable[[str], None]):
        self.sinks, self.on_error = sinks, on_error

    def _each(self, method: str, *args) -> None:
        for s in self.sinks:
            try:
                getattr(s, method)(*args)
            except Exception as exc:  # the event log must not miss a row because MQTT failed, nor the reverse
                self.on_error(f"{type(s).__name__}.{method} failed: {exc!r}")

    def on_update(self, kind: UpdateKind, record: dict) -> None:
        self._each("on_update", kind, record)

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        self._each("on_evidence", record, files)

    def on_status(self, camera: str, status: CameraStatus) -> None:
        self._each("on_status", camera, status)

    def on_problem(self, record: dict) -> None:
        self._each("on_problem", record)


class EventLog:
    """The writer of events.jsonl: appends rows durably (fsync), and announces alerts."""

    def __init__(self, path: Path, on_alert: Callable[[str], None] | None = None):
        self.path = path
        self.on_alert = on_alert
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, row: dict) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def on_update(self, kind: UpdateKind, record: dict) -> None:
        line = announcement(kind, record)
        if line and self.on_alert:
            self.on_alert(line)
        self._append({"type": str(kind), **record})

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        rel = files.folder.relative_to(self.path.parent)

        def at(name: str | None) -> str | None:
            return f"{rel}/{name}" if name else None

        self._append(
            {
                "type": str(RowType.EVIDENCE),
                "stage": str(files.stage),
                "id": record["id"],
                "folder": str(rel),
                "original": at(files.original),
                "clip": at(files.annotated),
                "still": at(files.still),
                "manifest": at(files.manifest),
                "note": files.note,
            }
        )

    def on_status(self, camera: str, status: CameraStatus) -> None:
        """Status is not an event: it goes to status.json and MQTT, not here."""

    def on_problem(self, record: dict) -> None:
        if self.on_alert:
            self.on_alert(problem_line(record))
        self._append({"type": str(RowType.CAMERA_PROBLEM), **record})

    def on_storage(self, record: dict) -> None:
        """The storage level changed (a record of edge.retention.storage_record)."""
        self._append({**record, "type": str(RowType.STORAGE)})


def read_rows(path: Path) -> list[dict]:
    """Every row of an events.jsonl; a line cut short by a crash (the last one) is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def final_records(rows: list[dict]) -> list[dict]:
    """Each event's last record, with the paths of its latest evidence, in order of first appearance."""
    events: dict[str, dict] = {}
    for row in rows:
        if row["type"] == RowType.CAMERA_PROBLEM:
            continue  # not a fall: see problem_rows
        if row["type"] == RowType.EVIDENCE:
            rec = events.get(row["id"])
            if rec is not None:
                rec.update({k: row[k] for k in ("original", "clip", "still", "manifest")})
        else:
            old = events.get(row["id"], {})
            events[row["id"]] = {
                **{k: v for k, v in row.items() if k != "type"},
                **{k: old.get(k) for k in ("original", "clip", "still", "manifest")},
            }
    return list(events.values())


def event_record(event: FallEvent, node: str, clip: str | None = None, still: str | None = None) -> dict:
    """The JSON-ready record of an event (see README: Event schema)."""
    fps = event.fps
    return {
        "v": SCHEMA_VERSION,
        "id": event.id,
        "node": node,
        "camera": event.camera,
        "level": str(event.level),
        "score": round(event.score, 3),
        "fps": fps,
        "start_frame": event.start_frame,
        "alert_frame": event.alert_frame,
        "end_frame": event.end_frame,
        "start_s": round(event.start_frame / fps, 3),
        "alert_s": round(event.alert_frame / fps, 3),
        "end_s": round(event.end_frame / fps, 3),
        "origin": asdict(event.origin),
        "fall_m": event.fall_m,
        "accel_g": event.accel_g,
        "speed_mps": event.speed_mps,
        "verifier_score": event.verifier_score,
        "trajectory": [list(p) for p in event.trajectory],
        "clip": clip,
        "still": still,
    }


def alert_line(record: dict, raised: bool = False) -> str:
    """One human line for the terminal or a log; `raised` when an update raised the event's level."""
    o = record["origin"]
    where = f"floor {o['floor']}" if o.get("floor") is not None else f"pixel ({o['x']:.0f}, {o['y']:.0f})"
    along = f", {o['facade_x_m']:.1f} m along the facade" if o.get("facade_x_m") is not None else ""
    fell = f", fell {record['fall_m']:.1f} m" if record.get("fall_m") is not None else ""
    # An update is judged on the track so far, which ends at end_frame: that is when the level rose.
    at = "end" if raised else "alert"
    when = record.get(f"{at}_utc") or format(record[f"{at}_s"], ".2f") + " s"
    return (
        f"ALERT {record['level'].upper()} {record['camera']}: object from {where}{along}{fell} "
        f"(score {record['score']:.2f}, {'raised ' if raised else ''}at {when}, id {record['id']})"
    )


def announcement(kind: UpdateKind, record: dict) -> str | None:
    """The alert line an event update deserves: a new fall, or its level raised; None for the rest."""
    if kind not in (UpdateKind.NEW, UpdateKind.UPDATE):
        return None
    return alert_line(record, raised=kind == UpdateKind.UPDATE)


def problem_rows(rows: list[dict]) -> list[dict]:
    """The camera problem rows of an events.jsonl, raised and cleared, in order."""
    return [{k: v for k, v in r.items() if k != "type"} for r in rows if r["type"] == RowType.CAMERA_PROBLEM]


def problem_record(
    tr: Transition, node: str, camera: str, problem_id: str, active: list[str], wall_clock: bool
) -> dict:
    """The JSON-ready record of a camera problem raised or cleared (docs/schemas/camera-problem.schema.json).

    `wall_clock`: the transition's times are Unix time (live), not seconds into a file (replay).
    """
    return {
        "v": SCHEMA_VERSION,
        "id": problem_id,
        "node": node,
        "camera": camera,
        "problem": str(tr.problem),
        "state": str(tr.state),
        "at_s": round(tr.t, 3),
        "since_s": round(tr.since, 3),
        "at_utc": iso(tr.t) if wall_clock else None,
        "since_utc": iso(tr.since) if wall_clock else None,
        "score": tr.score,
        "threshold": tr.threshold,
        "reason": tr.reason,
        "detail": dict(tr.detail),
        "active": sorted(active),
    }


def problem_line(record: dict) -> str:
    """One human line for a camera problem raised or cleared."""
    when = record.get("at_utc") or f"{record['at_s']:.1f} s"
    what = f"{record['camera']}: {record['problem']}"
    tail = f"({record['reason']}; at {when}, id {record['id']})"
    if record["state"] == "raised":
        return f"CAMERA PROBLEM {what} {tail}"
    return f"CAMERA OK {what} cleared {tail}"
