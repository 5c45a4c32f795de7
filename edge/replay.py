"""`edge replay`: run a recorded clip through exactly the live pipeline, as fast as the machine allows."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.capture.packets import PacketRing
from edge.capture.source import SourceError, SourceOptions, StreamEnded, VideoSource
from edge.config import EdgeConfig, config_hash
from edge.events import announcement
from edge.pipeline import CameraPipeline, EventSink
from edge.publish.evidence import EvidenceFiles
from edge.publish.manifest import load_or_create_key
from edge.video import EX_DATAERR, VideoError, check_readable

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """What a replay produced."""

    records: list[dict]
    frames: int
    fps: float
    error: VideoError | None = None


class _Collector:
    """Keeps each event's final record, with the paths of its evidence relative to the output folder."""

    def __init__(self, out: Path, on_alert: Callable[[str], None] | None):
        self.out, self.on_alert = out, on_alert
        self.records: dict[str, dict] = {}

    def on_update(self, kind: str, record: dict) -> None:
        line = announcement(kind, record)
        if line and self.on_alert:
            self.on_alert(line)
        if kind == "end":
            self.records[record["id"]] = {
                **record,
                "clip": None,
                "still": None,
                "original": None,
                "manifest": None,
            }

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        rel = files.folder.relative_to(self.out)
        rec = self.records.setdefault(record["id"], dict(record))
        rec.update(
            clip=f"{rel}/{files.annotated}" if files.annotated else None,
            still=f"{rel}/{files.still}" if files.still else None,
            original=f"{rel}/{files.original}",
            manifest=f"{rel}/{files.manifest}",
        )


def _signing_key(config: EdgeConfig, out: Path):
    try:
        return load_or_create_key(config.storage.dir / "keys")
    except OSError as exc:
        log.warning("cannot use the node key in %s (%s); signing with a key in %s", config.storage.dir, exc, out)
        return load_or_create_key(out / "keys")


def replay(
    video: str | Path,
    config: EdgeConfig,
    camera: str | None,
    out_dir: str | Path,
    on_alert: Callable[[str], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    media: bool = True,
) -> ReplayResult:
    """Detect falls in `video` with camera `camera`'s settings; write events.jsonl and per-event evidence."""
    name, cam = config.camera(camera)
    path = check_readable(video)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = VideoSource(str(path), SourceOptions(clock="stream", open_timeout_s=60, read_timeout_s=60))
    try:
        params = source.open()
    except SourceError as exc:
        raise VideoError(f"cannot open {path} as video: {exc}") from None
    fps = cam.fps or (float(params.rate) if params.rate else 0.0)
    if not 0 < fps <= 240:
        source.close()
        raise VideoError(f"{path}: frame rate unknown; set the camera's fps in the config")
    announced = source.stream.frames or None
    collector = _Collector(out, on_alert)
    ring = PacketRing(cam.record.buffer_s)
    pipeline = CameraPipeline(
        config.node.id,
        name,
        cam,
        fps,
        ring,
        out / "events",
        _signing_key(config, out),
        config_hash(config),
        EventSink(collector.on_update, collector.on_evidence),
        submit=None if media else (lambda work: None),
    )
    frames, error = 0, None
    try:
        for pkt, decoded in source.packets():
            if pkt is not None:
                ring.add(pkt)
            for frame in decoded:
                pipeline.on_frame(frame)
                frames += 1
                if progress:
                    progress(frames, announced)
    except StreamEnded:
        pass
    except SourceError as exc:
        error = VideoError(f"{path}: decoding failed after {frames} frames: {exc}")
    finally:
        source.close()
    if error is None and frames == 0:
        error = VideoError(f"{path}: no frame could be decoded (truncated or not a video)")
    if error is None and announced and frames < announced * 0.98 - 2:
        error = VideoError(
            f"{path}: truncated: the file announces {announced} frames, {frames} could be decoded", EX_DATAERR
        )
    pipeline.finish()
    records = sorted(collector.records.values(), key=lambda r: r["start_frame"])
    _write_jsonl(out / "events.jsonl", records)
    return ReplayResult(records, frames, fps, error)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
