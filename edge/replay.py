"""`edge replay`: a recorded clip through exactly the live camera worker, as fast as the machine allows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2

from edge.capture.camera import CameraCapture, CameraState
from edge.capture.feed import Feed
from edge.capture.source import Clock, SourceOptions
from edge.config import EdgeConfig, StorageError, config_hash
from edge.events import EventLog, final_records, read_rows
from edge.pipeline import OPENCV_THREADS, RUN_ID_FORMAT, CameraPipeline, EvidenceOutput, reference_for
from edge.publish.annotator import Annotator
from edge.publish.manifest import load_or_create_key
from edge.video import EX_DATAERR, VideoError, check_readable
from edge.worker import CameraWorker

log = logging.getLogger(__name__)
_DECODED_AHEAD = 8  # frames decoding may run ahead of detection: enough to overlap them, more costs memory


@dataclass
class ReplayResult:
    """What a replay produced."""

    records: list[dict]
    frames: int
    fps: float
    error: VideoError | None = None


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
    cv2.setNumThreads(OPENCV_THREADS)
    out = Path(out_dir)
    if out.resolve() == config.storage.dir.resolve():
        # There events.jsonl is the live node's log of every alert, which a replay would replace with its own.
        raise StorageError(
            f"--out {out} is storage.dir of the config: a replay would replace the node's events.jsonl there; "
            "give another folder (e.g. a new one under it)"
        )
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "events.jsonl"
    log_path.unlink(missing_ok=True)  # a replay's output describes this replay only
    events = EventLog(log_path, on_alert)
    annotator = None
    evidence = None
    if media:
        key = _signing_key(config, out)
        annotator = Annotator(key, events.on_evidence)
        annotator.start()
        evidence = EvidenceOutput(out / "events", key, config_hash(config), annotator.submit)
    feed = Feed(_DECODED_AHEAD, lossless=True)
    options = SourceOptions(clock=Clock.STREAM, open_timeout_s=60, read_timeout_s=60)
    capture = CameraCapture(name, str(path), cam.capture, feed, is_file=True, options=options)
    run_id = datetime.now(UTC).strftime(RUN_ID_FORMAT)  # as live: a second replay into `out` keeps the first's
    reference = reference_for(config, name)  # as live: the still `edge calibrate` stored beside the config
    pipeline = CameraPipeline(config.node.id, name, cam, events, evidence, id_prefix=run_id, reference=reference)
    worker = CameraWorker(name, capture, feed, pipeline)
    if progress is not None:
        worker.on_frames = lambda frames: progress(frames, worker.announced_frames)
    worker.start()
    worker.join()
    if annotator is not None:
        annotator.drain()
        annotator.stop(abort=False)
    records = final_records(read_rows(log_path)) if log_path.exists() else []
    if not log_path.exists():
        log_path.touch()
    return ReplayResult(records, worker.frames, pipeline.fps or 0.0, _error(path, capture, worker))


def _error(path: Path, capture: CameraCapture, worker: CameraWorker) -> VideoError | None:
    """What went wrong reading the file, if anything (the events up to there are kept)."""
    status, frames = capture.status, worker.frames
    if capture.session == 0:
        return VideoError(f"cannot open {path} as video: {status.reason}")
    if status.state != CameraState.ENDED:
        return VideoError(f"{path}: decoding failed after {frames} frames: {status.reason}")
    if frames == 0:
        return VideoError(f"{path}: no frame could be decoded (truncated or not a video)")
    announced = worker.announced_frames
    if announced and frames < announced * 0.98 - 2:
        return VideoError(
            f"{path}: truncated: the file announces {announced} frames, {frames} could be decoded", EX_DATAERR
        )
    return None
