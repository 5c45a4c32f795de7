"""Capture edge cases on real streams and files: timestamp jumps, resolution changes, a full queue."""

from __future__ import annotations

import subprocess

import numpy as np
from support.servers import wait_for

from edge.capture.camera import CameraCapture, FrameQueue
from edge.capture.packets import PacketRing
from edge.capture.source import CapturedFrame
from edge.config import CaptureConfig, parse_config
from edge.pipeline import CameraPipeline, EventSink
from edge.publish.evidence import blur_privacy
from edge.publish.manifest import load_or_create_key


def _ts(src, out, offset=0.0, size=None):
    args = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(src)]
    if size:
        args += ["-vf", f"scale={size}", "-c:v", "libx264", "-preset", "ultrafast"]
    else:
        args += ["-c", "copy"]
    subprocess.run([*args, "-output_ts_offset", str(offset), "-f", "mpegts", str(out)], check=True)
    return out


def test_a_stream_whose_timestamps_jump_is_restarted(sim_clip, tmp_path):
    clip = sim_clip("throw", 1) / "scene.mp4"
    a, b = _ts(clip, tmp_path / "a.ts"), _ts(clip, tmp_path / "b.ts", offset=600)
    joined = tmp_path / "jump.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())  # the second half is stamped ten minutes later
    cap = CameraCapture(
        "cam",
        str(joined),
        CaptureConfig(realtime_files=False, reconnect_max_s=30),
        PacketRing(10),
        FrameQueue(10_000),
        is_file=True,
    )
    cap.start()
    try:
        assert wait_for(lambda: "timestamps jumped" in cap.status.reason, 20), cap.status
        assert cap.status.state == "offline"
    finally:
        cap.stop()


def test_a_full_queue_drops_frames_and_counts_them_while_capture_goes_on(sim_clip):
    clip = sim_clip("throw", 1) / "scene.mp4"
    frames = FrameQueue(5)
    cap = CameraCapture(
        "cam", str(clip), CaptureConfig(realtime_files=False), PacketRing(10), frames, is_file=True
    )
    cap.start()
    try:
        assert wait_for(lambda: cap.status.frames >= 200, 20)
        assert frames.dropped == 195 and cap.status.dropped == 195 and frames.q.qsize() == 5
    finally:
        cap.stop()


def test_a_change_of_resolution_restarts_detection_instead_of_crashing(tmp_path):
    cfg = parse_config("version: 1\nnode: {id: n}\ncameras:\n  c: {source: x.mp4}\n")
    updates = []
    pipe = CameraPipeline(
        "n",
        "c",
        cfg.cameras["c"],
        25.0,
        PacketRing(10),
        tmp_path,
        load_or_create_key(tmp_path),
        "0" * 64,
        EventSink(lambda k, r: updates.append(k), lambda r, f: None),
    )
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(360, 640)] * 30 + [(180, 320)] * 30):
        pipe.on_frame(CapturedFrame(rng.integers(0, 255, (h, w), dtype=np.uint8), i / 25, i, i / 25))
    assert pipe.detector.frame_size == (320, 180) and pipe.index == 59


def test_privacy_masks_are_blurred_and_nothing_else():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    out = blur_privacy(img.copy(), [[(0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.5)]])
    assert (out[:, :140] == img[:, :140]).all() and (out[110:] == img[110:]).all()
    assert np.abs(out[20:80, 170:280].astype(int) - img[20:80, 170:280]).mean() > 20
