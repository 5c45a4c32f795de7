"""`edge replay`: run a recorded clip through exactly the live pipeline, as fast as the machine allows."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.config import EdgeConfig
from edge.detect.pipeline import Detector, facade_map
from edge.detect.types import FallEvent
from edge.events import alert_line, event_record
from edge.publish.evidence import write_event_media
from edge.video import VideoError, VideoFile, luma_plane

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """What a replay produced."""

    records: list[dict]
    frames: int
    fps: float
    error: VideoError | None = None
    global_events: dict[str, int] = field(default_factory=dict)


def replay(
    video: str | Path,
    config: EdgeConfig,
    camera: str | None,
    out_dir: str | Path,
    on_alert: Callable[[str], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    media: bool = True,
) -> ReplayResult:
    """Detect falls in `video` with camera `camera`'s settings; write events.jsonl, clips and stills."""
    name, cam = config.camera(camera)
    out = Path(out_dir)
    ended: dict[str, FallEvent] = {}
    error = None
    frames = 0
    globals_seen: dict[str, int] = {}
    with VideoFile(video, cam.fps) as vf:
        info = vf.info
        detector = None
        try:
            for i, frame in enumerate(vf.frames()):
                luma = luma_plane(frame)
                size = (luma.shape[1], luma.shape[0])
                if detector is None or size != detector.frame_size:
                    if detector is not None:  # resolution changed mid-stream: start afresh
                        _collect(detector.finish(), ended, on_alert, name)
                    detector = Detector(name, cam, info.fps, size)
                _collect(detector.process(i, luma), ended, on_alert, name)
                if detector.last_global_event not in (None, "warmup", "start"):
                    globals_seen[detector.last_global_event] = globals_seen.get(detector.last_global_event, 0) + 1
                frames = i + 1
                if progress:
                    progress(frames, info.frames)
        except VideoError as exc:
            error = exc
        if detector is not None:
            _collect(detector.finish(), ended, on_alert, name)
    records = _write_outputs(video, config, name, out, sorted(ended.values(), key=lambda e: e.start_frame), media)
    return ReplayResult(records, frames, info.fps, error, globals_seen)


def _collect(updates, ended: dict, on_alert, camera: str) -> None:
    for u in updates:
        if u.kind == "new" and on_alert:
            on_alert(alert_line(event_record(u.event, "replay")))
        if u.kind == "end":
            ended[u.event.id] = u.event


def _write_outputs(video, config: EdgeConfig, name: str, out: Path, events: list[FallEvent], media: bool) -> list:
    cam = config.cameras[name]
    fmap = facade_map(cam)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for ev in events:
        clip = still = None
        if media:
            (out / "clips").mkdir(exist_ok=True)
            (out / "stills").mkdir(exist_ok=True)
            clip_p, still_p = out / "clips" / f"{ev.id}.mp4", out / "stills" / f"{ev.id}.jpg"
            caption = f"{config.node.id}/{name} {ev.level}"
            try:
                write_event_media(
                    video,
                    ev,
                    clip_p,
                    still_p,
                    cam.record.pre_s,
                    cam.record.post_s,
                    caption,
                    [p.points for p in cam.masks.privacy],
                    fmap,
                )
                clip, still = str(clip_p.relative_to(out)), str(still_p.relative_to(out))
            except VideoError as exc:
                log.warning("no media for event %s: %s", ev.id, exc)
        records.append(event_record(ev, config.node.id, clip, still))
    tmp = out / "events.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(out / "events.jsonl")
    return records
