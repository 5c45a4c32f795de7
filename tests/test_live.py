"""Live capture from a real RTSP server (GStreamer): frames arrive, falls alert with evidence from before
the throw, and the node survives server restarts, stalls, unreachable cameras, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
import yaml
from support.servers import RtspServer, free_port, wait_for

from edge.capture.camera import Backoff, CameraCapture, CameraState
from edge.capture.feed import Chunk, Feed
from edge.config import CaptureConfig, parse_config
from edge.events import read_rows
from edge.node import Node
from edge.publish.manifest import verify_folder

from conftest import REPO, loop_clip, sim_facade


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


def _capture(url, worker=False, **cfg):
    """A camera's capture alone; with `worker`, a thread takes what it delivers, as a camera's worker does."""
    feed = Feed(500)
    cap = CameraCapture("cam", url, CaptureConfig(**cfg), feed)
    cap.start()
    if worker:

        def take() -> None:
            while cap.is_alive():
                feed.get(0.2)

        threading.Thread(target=take, daemon=True).start()
    return cap, feed


def _config(tmp_path, url, facade, **capture) -> dict:
    return {
        "version": 1,
        "node": {"id": "live", "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "store")},
        "mqtt": {"enabled": False},
        "cameras": {
            "cam": {
                "source": url,
                "facade": facade,
                "capture": {"reconnect_max_s": 2.0, **capture},
                "record": {"pre_s": 4, "post_s": 2, "buffer_s": 20},
            }
        },
    }


def _node_config(tmp_path, url, facade, **capture):
    return parse_config(yaml.safe_dump(_config(tmp_path, url, facade, **capture)))


def _rows(store: Path) -> list[dict]:
    path = store / "events.jsonl"
    return read_rows(path) if path.exists() else []


def _saved(store: Path) -> list[dict]:
    """Evidence rows of originals saved (the first, safe stage)."""
    return [r for r in _rows(store) if r["type"] == "evidence" and r["stage"] == "original"]


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as clip:
        return sum(1 for _ in clip.decode(video=0))


def test_frames_arrive_from_an_rtsp_camera_with_its_rate_and_no_burst(server):
    cap, feed = _capture(server.url)
    try:
        assert wait_for(lambda: cap.status.state == CameraState.ONLINE, 15), cap.status
        time.sleep(60 / 25)  # 60 frames of stream arrive meanwhile, as packets: frames are decoded as taken
        assert cap.status.state == CameraState.ONLINE and (cap.status.width, cap.status.height) == (640, 360)
        assert 20 <= cap.status.fps <= 30  # the stream's 25 fps, measured over the last 50 frames
        started = feed.get(1)
        assert started.rate == pytest.approx(25.0, rel=0.01) and started.params.width == 640
        chunks = [feed.get(1) for _ in range(40)]
        frames = [f for c in chunks if isinstance(c, Chunk) for f in c.frames]
        assert frames[0].luma.shape == (360, 640) and frames[0].t > 1e9
        gaps = [b.t - a.t for a, b in zip(frames, frames[1:], strict=False)]
        assert all(0.03 <= g <= 0.05 for g in gaps)  # stamped by the stream, not by when the burst arrived
    finally:
        cap.stop()


def test_a_throw_in_the_stream_alerts_with_an_original_clip_from_before_it(server, looped_clip, tmp_path):
    node = Node(_node_config(tmp_path, server.url, sim_facade(looped_clip[1])))
    node.start()
    try:
        store = tmp_path / "store"
        # The second loop's throws have a full pre-roll in the buffer.
        since = time.time()
        ev = wait_for(
            lambda: [
                e
                for e in _saved(store)
                if json.loads((store / e["manifest"]).read_text())["manifest"]["first_seen_t"] - since > 6
            ],
            40,
            0.5,
        )
        assert ev, _rows(store)
        folder = store / ev[0]["folder"]
        body = json.loads((folder / "manifest.json").read_text())["manifest"]
        assert body["first_seen_t"] - body["clip_from_t"] >= 4.0  # record.pre_s
        assert _frame_count(store / ev[0]["original"]) >= 25 * (4 + 2)
        assert subprocess.run(["ffprobe", "-v", "error", str(store / ev[0]["original"])]).returncode == 0
        assert node.stats()["cameras"]["cam"]["dropped"] == 0  # nothing lost at connect
    finally:
        node.stop()


def test_every_throw_after_each_of_three_server_restarts_gets_verifiable_evidence(looped_clip, tmp_path):
    port = free_port()
    srv = RtspServer(looped_clip[0], port).start()
    node = Node(_node_config(tmp_path, srv.url, sim_facade(looped_clip[1])))
    node.start()
    status, store = node.status("cam"), tmp_path / "store"
    sessions = []
    try:
        assert wait_for(lambda: status.state == CameraState.ONLINE, 15)
        for _ in range(3):
            srv.kill()
            assert wait_for(lambda: status.state == CameraState.OFFLINE, 15), status
            time.sleep(1.0)
            srv = RtspServer(looped_clip[0], port).start()
            back = time.time()
            # reconnect_max_s is 2 s: online again within that, plus the time to open the stream
            assert wait_for(lambda: status.state == CameraState.ONLINE, 2.0 + 5.0), status
            assert time.time() - back < 7.0
            # the clip's first throw falls about 4 s into each new session
            assert wait_for(lambda b=back: [e for e in _saved(store) if _first_seen(store, e) > b], 25, 0.5)
            sessions.append(back)
        assert status.reconnects_last_hour == 3  # the stream came back three times
    finally:
        node.stop()
        srv.kill()
    for back in sessions:
        after = [e for e in _saved(store) if _first_seen(store, e) > back]
        assert after and all(verify_folder(store / e["folder"]) == [] for e in after)
        assert all(_frame_count(store / e["original"]) >= 25 * 4 for e in after)
    assert node.stats()["cameras"]["cam"]["dropped"] == 0


def _first_seen(store: Path, row: dict) -> float:
    return json.loads((store / row["manifest"]).read_text())["manifest"]["first_seen_t"]


def test_a_stalled_stream_is_caught_by_the_watchdog(server):
    cap, _ = _capture(server.url, worker=True, stall_s=2.0, reconnect_max_s=1.0)
    try:
        assert wait_for(lambda: cap.status.state == CameraState.ONLINE, 15)
        server.pause()
        assert wait_for(lambda: cap.status.state == CameraState.OFFLINE, 10), cap.status
        assert "stalled" in cap.status.reason or "no answer" in cap.status.reason
        server.resume()
        assert wait_for(lambda: cap.status.state == CameraState.ONLINE, 15), cap.status
    finally:
        server.resume()
        cap.stop()


def test_an_unreachable_camera_is_reported_offline_not_crashed():
    cap, _ = _capture(f"rtsp://127.0.0.1:{free_port()}/stream", open_timeout_s=1.0, reconnect_max_s=0.5)
    try:
        assert wait_for(lambda: cap.status.state == CameraState.OFFLINE and cap._reconnects is not None, 10)
        assert wait_for(lambda: cap.backoff.failures >= 2, 10)
        assert "refused" in cap.status.reason.lower() or "no answer" in cap.status.reason
        assert cap.is_alive() and cap.status.reconnects_last_hour == 0  # attempts are not reconnections
    finally:
        cap.stop()


def test_backoff_starts_within_a_second_and_is_capped():
    b = Backoff(0.5, 8.0)
    delays = [b.next_delay() for _ in range(10)]
    assert delays[0] <= 1.0 and max(delays) <= 8.0 and delays[-1] >= 4.0


# -- the camera's own frame rate -------------------------------------------------------------------------


def _floors(folder: Path) -> list[int]:
    truth = json.loads((folder / "truth.json").read_text())
    return sorted(t["origin"]["floor"] for t in truth["throws"] if t["must_detect"])


@pytest.mark.parametrize("fps", [12, 15, 20, 25, 30])
def test_a_throw_is_judged_at_the_camera_s_own_frame_rate_live(sim_clip, tmp_path, fps):
    folder = sim_clip("throw", 1, fps=float(fps))
    srv = RtspServer(folder / "scene.mp4").start()
    node = Node(_node_config(tmp_path, srv.url, sim_facade(folder)))
    node.start()
    try:
        store = tmp_path / "store"
        ends = wait_for(
            lambda: len([r for r in _rows(store) if r["type"] == "end"]) >= 2 and _rows(store), 30, 0.5
        )
        assert ends, _rows(store)
    finally:
        node.stop()
        srv.kill()
    ended = [r for r in _rows(store) if r["type"] == "end"]
    assert all(r["fps"] == pytest.approx(fps, rel=0.01) for r in ended), [r["fps"] for r in ended]
    found = sorted(r["origin"]["floor"] for r in ended)
    assert all(any(abs(f - t) <= 1 for f in found) for t in _floors(folder)), (found, _floors(folder))


# -- stopping --------------------------------------------------------------------------------------------


def _start_node(config: dict, path: Path) -> subprocess.Popen:
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_is_honoured_within_10_s_at_any_moment(server, looped_clip, tmp_path):
    rng = random.Random(7)
    config = _config(tmp_path, server.url, sim_facade(looped_clip[1]))
    slow = []
    for k in range(20):
        proc = _start_node(config, tmp_path / f"run{k}.yaml")
        time.sleep(rng.uniform(0.2, 4.0))  # at start-up, while connecting, while detecting
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            slow.append((k, out[-800:]))
            continue
        # before its handler is installed (Python still starting) the default action ends it: also honoured
        assert proc.returncode in (0, -signal.SIGTERM), out[-2000:]
        assert proc.returncode != 0 or "stopped" in out
        assert time.monotonic() - sent < 10
    assert slow == []


def test_sigterm_mid_event_leaves_a_complete_verifiable_clip(server, looped_clip, tmp_path):
    config = _config(tmp_path, server.url, sim_facade(looped_clip[1]))
    store = tmp_path / "store"
    proc = _start_node(config, tmp_path / "run.yaml")
    try:
        # an alert, and its post-roll not yet over: the clip is being recorded
        assert wait_for(lambda: [r for r in _rows(store) if r["type"] == "new"], 30, 0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped" in out, out[-2000:]
    new = {r["id"] for r in _rows(store) if r["type"] == "new"}
    saved = {r["id"]: r for r in _saved(store)}
    assert new and new <= set(saved)
    alerts = {r["id"]: r for r in _rows(store) if r["type"] == "new"}
    for event_id in new:
        assert verify_folder(store / saved[event_id]["folder"]) == []
        body = json.loads((store / saved[event_id]["manifest"]).read_text())["manifest"]
        seen_until = (alerts[event_id]["alert_frame"] - alerts[event_id]["start_frame"]) / 25
        # from before the object was first seen to past the alert, whatever the stop cut off after it
        assert (
            body["clip_from_t"] < body["first_seen_t"] and body["clip_to_t"] >= body["first_seen_t"] + seen_until
        )


def test_a_burst_of_alerts_survives_sigterm_and_sigkill(sim_clip, tmp_path):
    folder = sim_clip("throw", 1, duration_s=5.0)
    clip = loop_clip(folder / "scene.mp4", 12, tmp_path / "burst.mp4")  # 24 throws in a minute
    srv = RtspServer(clip).start()
    config = _config(tmp_path, srv.url, sim_facade(folder))
    store = tmp_path / "store"
    try:
        proc = _start_node(config, tmp_path / "a.yaml")
        assert wait_for(lambda: len([r for r in _rows(store) if r["type"] == "new"]) >= 10, 40, 0.2)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert proc.returncode == 0
        proc = _start_node(config, tmp_path / "b.yaml")
        before = len([r for r in _rows(store) if r["type"] == "new"])
        # SIGKILL the moment a new alert is out: its clip is still being recorded
        assert wait_for(lambda: len([r for r in _rows(store) if r["type"] == "new"]) > before, 40, 0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc = _start_node(config, tmp_path / "c.yaml")  # the restart recovers what the kill cut short
        new = {r["id"] for r in _rows(store) if r["type"] == "new"}
        assert wait_for(lambda: all((store / "events" / i / "manifest.json").exists() for i in new), 20, 0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert "recovered" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.kill()
    new = {r["id"] for r in _rows(store) if r["type"] == "new"}
    assert len(new) >= 11
    for event_id in new:
        event_folder = store / "events" / event_id
        assert verify_folder(event_folder) == [], event_id
        original = next(event_folder.glob("original.*"))
        assert _frame_count(original) >= 25, event_id
