"""What an event's folder says about its clip holds for every frame of it: frames.json, the annotated copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edge.capture.camera import CameraCapture
from edge.capture.feed import Chunk, Feed, StreamStarted, StreamStopped
from edge.capture.source import Clock, SourceOptions
from edge.config import CaptureConfig, parse_config
from edge.detect.types import UpdateKind
from edge.pipeline import CameraPipeline, EvidenceOutput
from edge.publish.evidence import FRAMES, EvidenceStage
from edge.publish.manifest import load_or_create_key, verify_folder

from conftest import sim_facade


class Sink:
    """Remembers the updates and the evidence the pipeline reports."""

    def __init__(self):
        self.updates, self.evidence, self.annotate = [], [], []

    def on_update(self, kind, record):
        self.updates.append((kind, record))

    def on_evidence(self, record, files):
        self.evidence.append(files)

    def on_status(self, camera, status):
        pass

    def on_problem(self, record):
        pass


def _pipeline(tmp_path: Path, clip_folder: Path, sink: Sink, extra: str = "") -> CameraPipeline:
    facade = yaml.safe_dump(sim_facade(clip_folder), default_flow_style=True).strip()
    text = f"version: 1\nnode: {{id: n}}\ncameras:\n  c: {{source: x.mp4, facade: {facade}{extra}}}\n"
    cam = parse_config(text).cameras["c"]
    key = load_or_create_key(tmp_path / "k")
    out = EvidenceOutput(tmp_path / "events", key, "0" * 64, lambda *a: sink.annotate.append(a))
    return CameraPipeline("n", "c", cam, sink, out)


def _play(pipe: CameraPipeline, clip: Path, seen=lambda n: True) -> None:
    """Play a file through the pipeline as a camera's worker would: every packet is kept, and the frames
    `seen(frame number)` refuses are dropped, as a live feed drops them behind a slow detector."""
    feed = Feed(10_000, lossless=True)
    cap = CameraCapture(
        "c", str(clip), CaptureConfig(), feed, is_file=True, options=SourceOptions(clock=Clock.STREAM)
    )
    cap.start()
    n = 0
    while cap.is_alive() or not feed.empty:
        item = feed.get(0.2)
        if isinstance(item, StreamStarted):
            pipe.start_stream(item)
        elif isinstance(item, StreamStopped):
            pipe.end_stream(item)
        elif isinstance(item, Chunk):
            if item.packet is not None:
                pipe.on_packet(item.packet)
            for frame in item.frames:
                if seen(n):
                    pipe.on_frame(frame)
                n += 1


def test_frames_json_numbers_and_times_every_frame_even_those_detection_never_saw(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    sink = Sink()
    # A detector that falls behind in the middle of the fall: a live feed drops every third frame there.
    _play(_pipeline(tmp_path, folder, sink), folder / "scene.mp4", seen=lambda n: not (118 <= n < 150 and n % 3))
    saved = [f for f in sink.evidence if f.stage == EvidenceStage.ORIGINAL]
    assert saved and len(saved) == len({r["id"] for k, r in sink.updates if k == UpdateKind.NEW})
    for files in saved:
        frames = json.loads((files.folder / FRAMES).read_text())["frames"]
        first = frames[0][0]
        # The sim clip is 25 fps from t=0 and played on its own timestamps: frame k is at k/25 s.
        assert [i for i, _ in frames] == list(range(first, first + len(frames))), files.folder.name
        assert [t for _, t in frames] == pytest.approx([i / 25 for i, _ in frames])
        assert verify_folder(files.folder) == []
