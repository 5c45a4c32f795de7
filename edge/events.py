"""The event record: what `events.jsonl` holds and what the MQTT payload carries."""

from __future__ import annotations

from dataclasses import asdict

from edge.detect.types import FallEvent

SCHEMA_VERSION = 1


def event_record(event: FallEvent, node: str, clip: str | None = None, still: str | None = None) -> dict:
    """The JSON-ready record of an event (see README: Event schema)."""
    fps = event.fps
    return {
        "v": SCHEMA_VERSION,
        "id": event.id,
        "node": node,
        "camera": event.camera,
        "level": event.level,
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


def announcement(kind: str, record: dict) -> str | None:
    """The alert line an event update deserves: a new fall, or its level raised; None for the rest."""
    if kind not in ("new", "update"):
        return None
    return alert_line(record, raised=kind == "update")
