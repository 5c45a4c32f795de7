"""What an event's folder says about its clip holds for every frame of it: frames.json, the annotated copy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.sinks import Recorder

from edge.capture.camera import CameraCapture
from edge.capture.feed import Chunk, Feed, StreamStarted, StreamStopped
from edge.capture.source import Clock, SourceOptions
from edge.config import CaptureConfig, parse_config
from edge.detect.types import UpdateKind
from edge.pipeline import CameraPipeline, EvidenceOutput
from edge.publish.evidence import FRAMES, EvidenceStage, numbered_frames
from edge.publish.manifest import load_or_create_key, verify_folder
from edge.video import luma_frames, luma_plane

from conftest import sim_facade


class Sink(Recorder):
    """Remembers the updates and the evidence the pipeline reports, and each annotation it queues."""

    def __init__(self):
        super().__init__()
        self.annotate: list[tuple] = []


def _pipeline(tmp_path: Path, clip_folder: Path, sink: Sink, extra: str = "") -> CameraPipeline:
    facade = yaml.safe_dump(sim_facade(clip_folder), default_flow_style=True).strip()
    text = f"version: 1\nnode: {{id: n}}\ncameras:\n  c: {{source: x.mp4, facade: {facade}{extra}}}\n"
    cam = parse_config(text).cameras["c"]
    key = load_or_create_key(tmp_path / "k")
    out = EvidenceOutput(tmp_path / "events", key, "0" * 64, lambda *a: sink.annotate.append(a))
    return CameraPipeline("n", "c", cam, sink, out)


def _play(pipe: CameraPipeline, clip: Path, seen=lambda n: True, detect=lambda: True) -> None:
    """Play a file through the pipeline as a camera's worker would: every packet is kept, and the frames
    `seen(frame number)` refuses are dropped, as a live feed drops them behind a slow detector; `detect()`
    says, before each packet's frames, whether detection is on."""
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
            on = detect()
            for frame in item.frames:
                if seen(n):
                    pipe.on_frame(frame, on)
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


def _open_gop(src: Path, out: Path) -> Path:
    """`src` re-encoded as some cameras send H.264: open GOPs, whose keyframes are followed (in decoding order)
    by B-frames that show before them and refer back to the GOP before."""
    args = [
        "-c:v",
        "libx264",
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-bf",
        "3",
        "-x264-params",
        "open-gop=1:scenecut=0",
    ]
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), *args, str(out)], check=True)
    return out


def test_each_annotated_frame_gets_the_number_of_the_frame_it_is_after_open_gop_leading_frames(sim_clip, tmp_path):
    folder = sim_clip("throw", 1, duration_s=12.0)  # a throw at 8 s: its clip starts at a keyframe mid-stream
    clip = _open_gop(folder / "scene.mp4", tmp_path / "open-gop.mp4")
    source = list(luma_frames(clip))  # frame k of the camera's stream, decoded from its start
    sink = Sink()
    _play(_pipeline(tmp_path, folder, sink), clip)
    starts = []
    for files in sink.evidence:
        frames = json.loads((files.folder / FRAMES).read_text())["frames"]
        numbered = list(numbered_frames(files.folder / files.original, frames))
        starts.append(numbered[0][1])
        assert len(numbered) >= len(frames) - 3  # control: at most the leading B-frames do not decode
        for frame, index, t in numbered:
            assert index is not None and t == pytest.approx(index / 25)
            assert np.array_equal(luma_plane(frame), source[index]), (files.folder.name, index)
    assert any(s > 0 for s in starts)  # control: a clip that starts at a keyframe with leading frames


def test_after_a_reconnect_frames_json_takes_nothing_from_the_connection_before(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    sink = Sink()
    pipe = _pipeline(tmp_path, folder, sink)
    _play(pipe, folder / "scene.mp4")
    before = len(sink.evidence)
    # The camera comes back, and its new connection's timestamps start again from 0, as RTSP's do.
    _play(pipe, folder / "scene.mp4")
    after = sink.evidence[before:]
    assert before and len(after) == before  # control: the same throws, saved again
    for files in after:
        frames = json.loads((files.folder / FRAMES).read_text())["frames"]
        first = frames[0][0]
        assert first >= 200  # frame numbers go on across a reconnect
        assert [i for i, _ in frames] == list(range(first, first + len(frames))), files.folder.name


_WINDOW = "[[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.4]]"  # a resident's window, to be blurred


def test_a_clip_saved_after_a_reload_is_annotated_with_the_privacy_masks(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    masks = f", masks: {{privacy: [{_WINDOW}]}}"
    sink = Sink()
    pipe = _pipeline(tmp_path, folder, sink, masks)
    reloaded = _pipeline(tmp_path / "r", folder, Sink(), masks + ", record: {post_s: 2.5}").cfg

    def detect() -> bool:
        if pipe.cfg is not reloaded and any(k == UpdateKind.END for k, _ in sink.updates):
            # An event in its post-roll: the config is reloaded, and detection is switched off (MQTT).
            pipe.reconfigure(reloaded)
        return pipe.cfg is not reloaded

    _play(pipe, folder / "scene.mp4", detect=detect)
    assert pipe.cfg is reloaded and sink.annotate  # control: clips were saved, some after the reload
    for folder_saved, _, geometry in sink.annotate:
        assert geometry is not None and geometry.privacy, folder_saved.name
