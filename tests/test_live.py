"""Live capture from a real RTSP server (GStreamer): frames arrive, falls alert with evidence from before
the throw, and the node survives server restarts, stalls and unreachable cameras."""

from __future__ import annotations

import json
import subprocess
import time

import av
import pytest
import yaml
from support.servers import RtspServer, free_port, wait_for

from edge.capture.camera import Backoff, CameraCapture, FrameQueue
from edge.capture.packets import PacketRing
from edge.config import CaptureConfig, parse_config
from edge.node import Node

from conftest import loop_clip, sim_facade


@pytest.fixture(scope="module")
def looped_clip(sim_clip, tmp_path_factory):
    """A throw clip played four times over (32 s), with continuous timestamps."""
    folder = sim_clip("throw", 1)
    return loop_clip(folder / "scene.mp4", 4, tmp_path_factory.mktemp("rtsp") / "loop.mp4"), folder


@pytest.fixture
def server(looped_clip):
    srv = RtspServer(looped_clip[0]).start()
    yield srv
    srv.kill()


def _capture(url, **cfg):
    ring, frames = PacketRing(20), FrameQueue(500)
    cap = CameraCapture("cam", url, CaptureConfig(**cfg), ring, frames)
    cap.start()
    return cap, ring, frames


def _node_config(tmp_path, url, facade, **capture):
    cfg = {
        "version": 1,
        "node": {"id": "live"},
        "storage": {"dir": str(tmp_path / "store")},
        "cameras": {
            "cam": {
                "source": url,
                "facade": facade,
                "capture": {"reconnect_max_s": 2.0, **capture},
                "record": {"pre_s": 4, "post_s": 2, "buffer_s": 20},
            }
        },
    }
    return parse_config(yaml.safe_dump(cfg))


def _evidence(store):
    path = store / "events.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "evidence"]


def test_frames_arrive_from_an_rtsp_camera(server):
    cap, ring, frames = _capture(server.url)
    try:
        assert wait_for(lambda: cap.status.frames >= 120, 15), cap.status  # past the burst at connection
        assert cap.status.state == "online" and (cap.status.width, cap.status.height) == (640, 360)
        assert 20 <= cap.status.fps <= 30  # the stream's 25 fps, measured over the last 50 frames
        first = frames.get(1)
        assert first.luma.shape == (360, 640) and first.t > 1e9
        assert ring.since(0)[0][1].keyframe
    finally:
        cap.stop()


def test_a_throw_in_the_stream_alerts_with_an_original_clip_from_before_it(server, looped_clip, tmp_path):
    node = Node(_node_config(tmp_path, server.url, sim_facade(looped_clip[1])))
    node.start()
    try:
        store = tmp_path / "store"
        # The second loop's throws have a full pre-roll in the buffer.
        ev = wait_for(
            lambda: [
                e
                for e in _evidence(store)
                if json.loads((store / e["folder"] / "manifest.json").read_text())["manifest"]["first_seen_t"]
                - node.cameras["cam"].capture.status.since
                > 6
            ],
            40,
            0.5,
        )
        assert ev, _evidence(store)
        folder = store / ev[0]["folder"]
        body = json.loads((folder / "manifest.json").read_text())["manifest"]
        assert body["first_seen_t"] - body["clip_from_t"] >= 4.0  # record.pre_s
        with av.open(str(folder / ev[0]["original"])) as clip:
            n = sum(1 for _ in clip.decode(video=0))
        assert n >= 25 * (4 + 2)
        assert subprocess.run(["ffprobe", "-v", "error", str(folder / ev[0]["original"])]).returncode == 0
    finally:
        node.stop()


def test_the_node_reconnects_after_each_of_three_server_restarts_and_keeps_detecting(looped_clip, tmp_path):
    port = free_port()
    srv = RtspServer(looped_clip[0], port).start()
    node = Node(_node_config(tmp_path, srv.url, sim_facade(looped_clip[1])))
    node.start()
    status = node.status("cam")
    try:
        assert wait_for(lambda: status.state == "online", 15)
        for _ in range(3):
            srv.kill()
            assert wait_for(lambda: status.state == "offline", 15), status
            time.sleep(1.0)
            srv = RtspServer(looped_clip[0], port).start()
            back = time.monotonic()
            # reconnect_max_s is 2 s: online again within that, plus the time to open the stream
            assert wait_for(lambda: status.state == "online", 2.0 + 5.0), status
            assert time.monotonic() - back < 7.0
        assert status.reconnects_last_hour >= 3
        before = len(_evidence(tmp_path / "store"))
        assert wait_for(lambda: len(_evidence(tmp_path / "store")) > before, 30, 0.5)  # still detecting
    finally:
        node.stop()
        srv.kill()


def test_a_stalled_stream_is_caught_by_the_watchdog(server):
    cap, _, _ = _capture(server.url, stall_s=2.0, reconnect_max_s=1.0)
    try:
        assert wait_for(lambda: cap.status.state == "online", 15)
        server.pause()
        assert wait_for(lambda: cap.status.state == "offline", 10), cap.status
        assert "stalled" in cap.status.reason or "no answer" in cap.status.reason
        server.resume()
        assert wait_for(lambda: cap.status.state == "online", 15), cap.status
    finally:
        server.resume()
        cap.stop()


def test_an_unreachable_camera_is_reported_offline_not_crashed():
    cap, _, _ = _capture(f"rtsp://127.0.0.1:{free_port()}/stream", open_timeout_s=1.0, reconnect_max_s=0.5)
    try:
        assert wait_for(lambda: cap.status.state == "offline" and cap.status.reconnects_last_hour >= 2, 10)
        assert "refused" in cap.status.reason.lower() or "no answer" in cap.status.reason
        assert cap.is_alive()
    finally:
        cap.stop()


def test_backoff_starts_within_a_second_and_is_capped():
    b = Backoff(0.5, 8.0)
    delays = [b.next_delay() for _ in range(10)]
    assert delays[0] <= 1.0 and max(delays) <= 8.0 and delays[-1] >= 4.0
