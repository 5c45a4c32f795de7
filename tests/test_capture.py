"""Capture and the camera pipeline on real streams and files: timestamps, rates, sizes, drops, pauses."""

from __future__ import annotations

import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.sinks import Recorder

from edge.capture.camera import RATE_FRAMES, Backoff, CameraCapture, CameraState, stream_rate
from edge.capture.feed import DECODED_AHEAD, Chunk, Feed, StreamStarted, StreamStopped
from edge.capture.packets import KeptPacket, StreamParams
from edge.capture.source import CapturedFrame, Clock, SourceError, SourceOptions, StreamClock, VideoSource
from edge.config import CaptureConfig, parse_config
from edge.detect.types import UpdateKind
from edge.pipeline import CameraPipeline, EvidenceOutput
from edge.publish.evidence import EvidenceStage, blur_privacy, recover_interrupted
from edge.publish.manifest import load_or_create_key, verify_folder

from conftest import sim_facade


def _ts(src, out, offset=0.0, size=None):
    args = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(src)]
    if size:
        args += ["-vf", f"scale={size}", "-c:v", "libx264", "-preset", "ultrafast"]
    else:
        args += ["-c", "copy"]
    subprocess.run([*args, "-output_ts_offset", str(offset), "-f", "mpegts", str(out)], check=True)
    return out


def _file_capture(path, feed, **cfg):
    opts = SourceOptions(clock=Clock.STREAM)
    return CameraCapture("cam", str(path), CaptureConfig(**cfg), feed, is_file=True, options=opts)


def _drain(feed: Feed, cap: CameraCapture) -> list:
    items = []
    while cap.is_alive() or not feed.empty:
        item = feed.get(0.2)
        if item is not None:
            items.append(item)
    return items


def test_a_stream_whose_timestamps_jump_is_stopped_with_the_reason(sim_clip, tmp_path):
    clip = sim_clip("throw", 1) / "scene.mp4"
    a, b = _ts(clip, tmp_path / "a.ts"), _ts(clip, tmp_path / "b.ts", offset=600)
    joined = tmp_path / "jump.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())  # the second half is stamped ten minutes later
    feed = Feed(10_000)
    cap = _file_capture(joined, feed)
    cap.start()
    items = _drain(feed, cap)
    assert "timestamps jumped" in cap.status.reason and cap.status.state == CameraState.OFFLINE
    assert isinstance(items[-1], StreamStopped) and "timestamps jumped" in items[-1].reason
    # control: the first half alone plays to its end
    feed = Feed(10_000)
    cap = _file_capture(a, feed)
    cap.start()
    _drain(feed, cap)
    assert cap.status.state == CameraState.ENDED


def test_a_live_camera_whose_stream_keeps_failing_still_delivers_frames_after_many_reconnects(
    sim_clip, tmp_path, monkeypatch
):
    # Each session fails in the decoder (a second of the clip twice over: its timestamps go back) on a packet
    # admitted to the feed. Its place must come back, or after max_frames failures every frame is dropped.
    one_s = tmp_path / "one.ts"
    clip = sim_clip("throw", 1) / "scene.mp4"
    cut = ["ffmpeg", "-loglevel", "error", "-i", str(clip), "-t", "1", "-c", "copy", str(one_s)]
    subprocess.run(cut, check=True)
    twice = tmp_path / "twice.ts"
    twice.write_bytes(one_s.read_bytes() * 2)
    demux = VideoSource.demux

    def as_a_camera_sends(self):  # packets as they come from a camera, not as fast as a file reads
        for item in demux(self):
            time.sleep(0.005)
            yield item

    monkeypatch.setattr(VideoSource, "demux", as_a_camera_sends)
    feed = Feed(max_frames=3)
    cfg = CaptureConfig(reconnect_min_s=0.01, reconnect_max_s=0.02)
    cap = CameraCapture("cam", str(twice), cfg, feed, is_file=False, options=SourceOptions(clock=Clock.STREAM))
    per_session: dict[int, int] = {}
    cap.start()
    try:
        deadline = time.monotonic() + 60
        while len(per_session) <= 8 and time.monotonic() < deadline:
            item = feed.get(0.2)
            if isinstance(item, Chunk):
                per_session[item.session] = per_session.get(item.session, 0) + len(item.frames)
    finally:
        cap.stop()
        cap.join(10)
    done = [per_session[n] for n in sorted(per_session)[:8]]  # sessions that ran to their failure
    assert len(done) == 8 and cap.status.reconnects_last_hour >= 8  # it did fail, over and over
    assert min(done) >= 10  # and each of them still had most of its second of frames detected


def _capture_on_a_clock(monkeypatch) -> tuple[list[float], CameraCapture, CapturedFrame]:
    """A camera's capture, not started, on a wall clock the test moves (clock[0]), and a frame to deliver."""
    import edge.capture.camera as camera

    clock = [1_000_000.0]
    monkeypatch.setattr(camera.time, "time", lambda: clock[0])
    cap = CameraCapture("cam", "rtsp://127.0.0.1:1/x", CaptureConfig(), Feed(max_frames=3), is_file=False)
    return clock, cap, CapturedFrame(np.zeros((4, 4), np.uint8), 0.0, None, None)


def test_reconnects_an_hour_old_leave_the_count_while_the_stream_runs_on(monkeypatch):
    clock, cap, frame = _capture_on_a_clock(monkeypatch)
    for _ in range(3):  # a bad hour: the stream lost and back three times
        cap._lost("gone")
        cap._delivered([frame])
        clock[0] += 60
    assert cap.status.reconnects_last_hour == 2  # the first delivery was a start, not a reconnect
    clock[0] += 1800
    cap._delivered([frame])
    assert cap.status.reconnects_last_hour == 2  # control: half an hour on, they still count
    clock[0] += 1800
    cap._delivered([frame])  # frames keep coming, no reconnect since
    assert cap.status.reconnects_last_hour == 0


def test_reconnects_an_hour_old_leave_the_count_while_the_camera_stays_down(monkeypatch):
    clock, cap, frame = _capture_on_a_clock(monkeypatch)
    cap._delivered([frame])
    cap._lost("gone")
    cap._delivered([frame])  # back once
    cap._lost("gone again")  # and down for good: every retry fails
    assert cap.status.reconnects_last_hour == 1  # control: that reconnect is recent
    clock[0] += 3601
    cap._lost("still down")
    assert cap.status.reconnects_last_hour == 0


def test_a_live_feed_that_falls_behind_drops_frames_but_never_packets(sim_clip):
    clip = sim_clip("throw", 1) / "scene.mp4"
    # Nobody reads while the file is decoded: a worker far behind (allowed as many decoded frames as it
    # admits, or capture would wait for it with the rest of the file still to read).
    feed = Feed(5, decoded_ahead=5)
    cap = _file_capture(clip, feed)
    cap.start()
    cap.join(30)
    items = []
    while (item := feed.get(0)) is not None:
        items.append(item)
    chunks = [i for i in items if isinstance(i, Chunk)]
    frames = sum(len(c.frames) for c in chunks)
    packets = sum(c.packet is not None for c in chunks)
    assert frames <= 5 and feed.dropped >= 150 and frames + feed.dropped == cap.status.frames
    assert packets == 200  # every packet of the 8 s clip is kept for evidence


def test_a_live_camera_decodes_only_the_frames_its_worker_is_about_to_take(sim_clip):
    clip = sim_clip("throw", 1) / "scene.mp4"
    feed = Feed(75)  # 3 s: a slow worker falls behind by that much, as packets waiting to be decoded
    cap = _file_capture(clip, feed)
    cap.start()
    items, decoded_waiting = [], []
    while cap.is_alive() or not feed.empty:
        decoded_waiting.append(feed._frames)
        item = feed.get(0.2)
        if item is not None:
            items.append(item)
            if isinstance(item, Chunk) and item.frames:
                time.sleep(0.01)  # detection slower than decoding
    chunks = [i for i in items if isinstance(i, Chunk)]
    frames = sum(len(c.frames) for c in chunks)
    assert max(decoded_waiting) <= DECODED_AHEAD and frames + feed.dropped == cap.status.frames == 200
    assert sum(c.packet is not None for c in chunks) == 200


def test_a_file_feed_waits_instead_of_dropping(sim_clip):
    clip = sim_clip("throw", 1) / "scene.mp4"
    feed = Feed(5, lossless=True)
    cap = _file_capture(clip, feed)
    cap.start()
    items = _drain(feed, cap)
    frames = sum(len(i.frames) for i in items if isinstance(i, Chunk))
    assert frames == 200 and feed.dropped == 0


def test_frames_delivered_in_a_burst_keep_their_stream_spacing():
    clock = StreamClock(Clock.WALL, opened_at=1000.0)
    arrival = 1001.0  # 25 frames arrive at once, one second after the connection opened
    times = [clock.t(k / 25, arrival) for k in range(25)]
    assert np.allclose(np.diff(times), 0.04) and times[0] == pytest.approx(1000.0)
    # a frame is never stamped after it arrived
    assert clock.t(10.0, 1002.0) == pytest.approx(1002.0)


def _params(w=640, h=360):
    return StreamParams("h264", w, h, None, Fraction(1, 90000), None)


def _pipeline(tmp_path, cfg_text="", sink=None, evidence=False, **kw):
    cfg = parse_config(f"version: 1\nnode: {{id: n}}\ncameras:\n  c: {{source: x.mp4{cfg_text}}}\n")
    out = None
    if evidence:
        out = EvidenceOutput(tmp_path / "events", load_or_create_key(tmp_path / "k"), "0" * 64, lambda *a: None)
    return CameraPipeline("n", "c", cfg.cameras["c"], sink or Recorder(), out, **kw)


def _noise_frames(pipe, n, size=(360, 640), fps=25.0, start=0, pts_step=1):
    rng = np.random.default_rng(start)
    for k in range(start, start + n):
        t = k * pts_step / fps
        pipe.on_frame(CapturedFrame(rng.integers(0, 255, size, dtype=np.uint8), t, k * pts_step, t))


def test_the_frame_rate_is_measured_from_the_timestamps_when_nothing_says_it():
    assert stream_rate([k / 15 for k in range(RATE_FRAMES)], None) == pytest.approx(15.0)


def test_a_declared_rate_that_disagrees_with_the_timestamps_loses():
    stamps = [k / 25 for k in range(RATE_FRAMES)]
    assert stream_rate(stamps, 50.0) == pytest.approx(25.0)  # RTSP often declares the field rate
    ntsc = 30000 / 1001  # control: a right declaration is kept exactly
    assert stream_rate([k / ntsc for k in range(RATE_FRAMES)], ntsc) == ntsc


def test_dropped_frames_leave_a_gap_in_frame_numbers(tmp_path):
    pipe = _pipeline(tmp_path)
    pipe.start_stream(StreamStarted(1, _params(), rate=25.0))
    _noise_frames(pipe, 10, pts_step=3)  # only every third frame reaches detection
    assert pipe.index == 27


def _stream(pipe, n, fps, detect_every=1):
    """n packets at `fps` as the worker hands them over: every packet, a frame only for every detect_every'th."""
    rng = np.random.default_rng(0)
    for k in range(n):  # frames small and noisy: only their timestamps matter here
        t, stamp = k / fps, round(k * 90000 / fps)
        pipe.on_packet(KeptPacket(b"\0", stamp, stamp, k == 0, t, _params()))
        if k % detect_every == 0:
            pipe.on_frame(CapturedFrame(rng.integers(0, 255, (90, 160), dtype=np.uint8), t, stamp, t))


def test_frames_dropped_behind_a_slow_detector_do_not_change_the_frame_rate(tmp_path):
    pipe = _pipeline(tmp_path)
    pipe.start_stream(StreamStarted(1, _params(), rate=25.0))
    _stream(pipe, 150, 25.0, detect_every=2)  # detection keeps up with only every other frame
    assert pipe.fps == 25.0  # control: the rate change below, followed from the same packets


def test_a_change_of_resolution_restarts_detection_instead_of_crashing(tmp_path):
    pipe = _pipeline(tmp_path)
    pipe.start_stream(StreamStarted(1, _params(), rate=25.0))
    _noise_frames(pipe, 30)
    _noise_frames(pipe, 30, size=(180, 320), start=30)
    assert pipe.detector.frame_size == (320, 180) and pipe.index == 59


def test_a_resolution_change_rescales_the_calibration(sim_clip, tmp_path):
    facade = sim_facade(sim_clip("throw", 1))  # measured on the 640x360 render
    text = ", facade: " + yaml.safe_dump({**facade, "image_size": [640, 360]}, default_flow_style=True).strip()
    pipe = _pipeline(tmp_path, text)
    pipe.start_stream(StreamStarted(1, _params(), rate=25.0))
    _noise_frames(pipe, 3, size=(720, 1280))
    big = pipe.geometry.facade
    point = np.array([[640.0, 200.0]])
    assert pipe.geometry.frame_size == (1280, 720)
    small = _pipeline(tmp_path, text)
    small.start_stream(StreamStarted(1, _params(), rate=25.0))
    _noise_frames(small, 3, size=(360, 640))
    assert np.allclose(big.to_facade(point), small.geometry.facade.to_facade(point / 2))


def test_a_calibration_is_refused_for_a_frame_of_another_shape(sim_clip, tmp_path):
    facade = sim_facade(sim_clip("throw", 1))
    text = ", facade: " + yaml.safe_dump({**facade, "image_size": [640, 360]}, default_flow_style=True).strip()
    seen = []
    pipe = _pipeline(tmp_path, text, on_geometry=seen.append)
    pipe.start_stream(StreamStarted(1, _params(), rate=25.0))
    _noise_frames(pipe, 3, size=(480, 640))  # 4:3 now
    assert pipe.geometry.facade is None and "another shape" in seen[-1].problem
    _noise_frames(pipe, 3, size=(360, 640), start=3)  # control: the measured shape is calibrated
    assert pipe.geometry.facade is not None and seen[-1].problem is None


def test_privacy_masks_are_blurred_and_nothing_else():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    out = blur_privacy(img.copy(), [[(0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.5)]])
    assert (out[:, :140] == img[:, :140]).all() and (out[110:] == img[110:]).all()
    assert np.abs(out[20:80, 170:280].astype(int) - img[20:80, 170:280]).mean() > 20


def _feed_clip(pipe, clip, detect=lambda frame_no: True):
    """Play a file through the pipeline as the worker would, with detection switched by frame number."""
    feed = Feed(10_000, lossless=True)
    cap = _file_capture(clip, feed)
    cap.start()
    n = 0
    for item in _drain(feed, cap):
        if isinstance(item, StreamStarted):
            pipe.start_stream(item)
        elif isinstance(item, StreamStopped):
            pipe.end_stream(item)
        else:
            if item.packet is not None:
                pipe.on_packet(item.packet)
            for frame in item.frames:
                pipe.on_frame(frame, detect(n))
                n += 1


def test_switching_detection_off_mid_event_ends_it_and_saves_its_clip(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    facade = ", facade: " + yaml.safe_dump(sim_facade(folder), default_flow_style=True).strip()
    control = Recorder()
    _feed_clip(_pipeline(tmp_path / "a", facade, control, evidence=True), folder / "scene.mp4")
    first = next(r for k, r in control.updates if k == UpdateKind.NEW)
    off_at = first["alert_frame"] + 2  # a moment after the alert, while the object still falls
    sink = Recorder()
    pipe = _pipeline(tmp_path / "b", facade, sink, evidence=True)
    _feed_clip(pipe, folder / "scene.mp4", detect=lambda n: n < off_at)
    ended = [r for k, r in sink.updates if k == UpdateKind.END]
    assert ended and ended[0]["end_frame"] < off_at <= first["end_frame"] + 2
    saved = [f for f in sink.evidence if f.stage == EvidenceStage.ORIGINAL]
    assert len(saved) == len({r["id"] for k, r in sink.updates if k == UpdateKind.NEW})
    assert all(verify_folder(f.folder) == [] for f in saved)


class KilledAtAlert(Recorder):
    """A sink that copies each new event's folder as it stands when the alert goes out: what a SIGKILL then
    would leave on disk."""

    def __init__(self, events: Path, left: Path):
        super().__init__()
        self.events, self.left = events, left

    def on_update(self, kind, record):
        super().on_update(kind, record)
        if kind == UpdateKind.NEW:
            shutil.copytree(self.events / record["id"], self.left / record["id"])


def test_a_node_killed_as_its_alert_goes_out_leaves_a_folder_the_next_start_signs(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    facade = ", facade: " + yaml.safe_dump(sim_facade(folder), default_flow_style=True).strip()
    sink = KilledAtAlert(tmp_path / "events", tmp_path / "left")
    _feed_clip(_pipeline(tmp_path, facade, sink, evidence=True), folder / "scene.mp4")
    alerted = {r["id"] for k, r in sink.updates if k == UpdateKind.NEW}
    assert alerted  # control: the throw alerted, and each alert's folder was copied
    recovered = recover_interrupted(tmp_path / "left", load_or_create_key(tmp_path / "k"), lambda cam: {})
    assert {files.folder.name for _, files in recovered} == alerted
    assert all(verify_folder(files.folder) == [] for _, files in recovered)


def test_a_clip_is_saved_when_its_post_roll_is_in_whatever_the_frame_timing(sim_clip, tmp_path):
    folder = sim_clip("throw", 1, duration_s=12.0)
    facade = ", facade: " + yaml.safe_dump(sim_facade(folder), default_flow_style=True).strip()
    record = ", record: {pre_s: 3, post_s: 2.3, buffer_s: 10}"  # 2.3 s is not a whole number of frames
    sink = Recorder()
    pipe = _pipeline(tmp_path, facade + record, sink, evidence=True)
    saved_at = {}
    original_save = pipe._save

    def save(job, note=None):
        saved_at[job.event.id] = pipe.index  # the frame the pipeline had reached when the clip was saved
        original_save(job, note)

    pipe._save = save
    _feed_clip(pipe, folder / "scene.mp4")
    post = round(2.3 * 25)
    ends = {r["id"]: r["end_frame"] for k, r in sink.updates if k == UpdateKind.END}
    fits = {i: end for i, end in ends.items() if end + post + 2 < 299}  # the clip is 300 frames long
    notes = {f.folder.name: f.note for f in sink.evidence}
    assert fits and all(notes[i] is None for i in fits), notes  # not "ends early"
    # saved about post_s after the object was last seen, not when the stream ended (frame 299)
    assert all(saved_at[i] <= end + post + 2 for i, end in fits.items()), (saved_at, fits)
    assert all(notes[i] for i in ends if i not in fits)  # control: a post-roll cut by the end says so


def test_a_camera_whose_rate_changes_gets_frame_numbers_at_the_new_rate(tmp_path):
    pipe = _pipeline(tmp_path)
    pipe.start_stream(StreamStarted(1, _params(), rate=12.5))  # measured while exposure settled
    _stream(pipe, 100, 25.0)  # 4 s at the camera's real 25 fps
    assert pipe.fps == pytest.approx(25.0)
    assert pipe.index / pipe.fps == pytest.approx(99 / 25, abs=0.2)  # frame numbers keep to seconds
    steady = _pipeline(tmp_path)  # control: a right rate is left alone
    steady.start_stream(StreamStarted(1, _params(), rate=25.0))
    _stream(steady, 100, 25.0)
    assert steady.fps == 25.0 and steady.index == 99


def test_timestamps_going_back_a_little_restart_the_stream(sim_clip, tmp_path):
    clip = sim_clip("throw", 1) / "scene.mp4"
    a, b = _ts(clip, tmp_path / "a.ts"), _ts(clip, tmp_path / "b.ts", offset=6)  # 8 s, then back to 6 s
    joined = tmp_path / "back.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    feed = Feed(10_000)
    cap = _file_capture(joined, feed)
    cap.start()
    _drain(feed, cap)
    assert "timestamps jumped by -" in cap.status.reason and cap.status.state == CameraState.OFFLINE


def test_backoff_survives_a_night_of_retries():
    b = Backoff(0.5, 30.0)
    b.failures = 5000  # a camera unpowered for a long night
    assert 15.0 <= b.next_delay() <= 30.0


def _frame_sizes(clip: Path) -> set[tuple[int, int]]:
    import av

    with av.open(str(clip)) as c:
        return {(f.width, f.height) for f in c.decode(video=0)}


def test_a_picture_size_change_within_a_connection_starts_a_new_stream_and_its_own_clips(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    small = _ts(folder / "scene.mp4", tmp_path / "a.ts")
    big = _ts(folder / "scene.mp4", tmp_path / "b.ts", offset=8, size="1280:720")
    joined = tmp_path / "switch.ts"
    joined.write_bytes(small.read_bytes() + big.read_bytes())  # the camera switched to 720p, same connection
    feed = Feed(10_000, lossless=True)
    cap = _file_capture(joined, feed)
    cap.start()
    items = _drain(feed, cap)
    starts = [i for i in items if isinstance(i, StreamStarted)]
    assert [(s.params.width, s.params.height) for s in starts] == [(640, 360), (1280, 720)]
    stop = next(i for i in items if isinstance(i, StreamStopped))
    assert stop.session == starts[0].session and "1280x720" in stop.reason
    after = items[items.index(starts[1]) :]
    assert all(i.packet.params == starts[1].params for i in after if isinstance(i, Chunk) and i.packet)
    assert (cap.status.width, cap.status.height) == (1280, 720)

    # each clip holds pictures of the one size its evidence records, and one cut by the change says so
    facade = {**sim_facade(folder), "image_size": [640, 360]}
    sink = Recorder()
    text = ", facade: " + yaml.safe_dump(facade, default_flow_style=True).strip()
    _feed_clip(_pipeline(tmp_path, text, sink, evidence=True), joined)
    saved = [f for f in sink.evidence if f.stage == EvidenceStage.ORIGINAL]
    sizes = {}
    for files in saved:
        recorded = yaml.safe_load((files.folder / "event.json").read_text())["evidence"]["frame_size"]
        sizes[files.folder.name] = (_frame_sizes(files.folder / files.original), tuple(recorded))
    assert {s for found, _ in sizes.values() for s in found} == {(640, 360), (1280, 720)}  # both halves alerted
    assert all(found == {size} for found, size in sizes.values()), sizes
    assert any("picture changed to 1280x720" in (f.note or "") for f in saved), [f.note for f in saved]


@pytest.mark.parametrize("step_s", [-3600.0, 3600.0])
def test_a_step_of_the_node_s_clock_starts_a_new_stream_stamped_on_the_new_time(
    sim_clip, tmp_path, monkeypatch, step_s
):
    # A node without a real-time clock boots on the time it last saved and NTP then sets it: frames stamped
    # across the step would go back an hour (the packet ring and a clip waiting for its post-roll wait an
    # hour), or lag it by the lateness the stamps allow.
    clip = tmp_path / "two.ts"
    cut = ["ffmpeg", "-loglevel", "error", "-i", str(sim_clip("throw", 1) / "scene.mp4"), "-t", "2", "-c", "copy"]
    subprocess.run([*cut, str(clip)], check=True)
    offset = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: time.monotonic() + offset[0])
    demux = VideoSource.demux

    def as_a_camera_sends(self):  # 25 packets a second, the clock stepping after the first second
        for n, item in enumerate(demux(self)):
            time.sleep(0.04)
            if n == 25:
                offset[0] += step_s
            yield item[0], time.time()

    monkeypatch.setattr(VideoSource, "demux", as_a_camera_sends)
    feed = Feed(max_frames=100)
    cap = CameraCapture("cam", str(clip), CaptureConfig(), feed, is_file=False)
    cap.start()
    items, lag = [], []
    try:
        while (frames := sum(len(i.frames) for i in items if isinstance(i, Chunk))) < 48:
            item = feed.get(5)
            assert item is not None, items
            items.append(item)
            if isinstance(item, Chunk) and item.frames and frames >= 30:
                lag.append(time.time() - item.frames[-1].t)
    finally:
        cap.stop()
        cap.join(10)
    stops = [i for i in items if isinstance(i, StreamStopped)]
    assert len(stops) == 1 and "clock was set" in stops[0].reason and cap.reconnects == 0
    for session in {i.session for i in items if isinstance(i, Chunk)}:
        times = [f.t for i in items if isinstance(i, Chunk) and i.session == session for f in i.frames]
        assert all(b > a for a, b in zip(times, times[1:], strict=False))  # each stream's times rise
    # Frames after the step stamped on the new time, not the 3 s off it the stamps' lateness limit allows (the
    # median: a frame this test read late, on a busy machine, is no frame stamped early).
    assert lag and np.median(lag) < 1.5
    assert 20 <= cap.status.fps <= 30  # the camera's 25 fps, not a rate measured across the step


def test_a_raw_h264_stream_without_timestamps_gets_times_and_evidence(sim_clip, tmp_path):
    # An elementary stream (a DVR's .264 export, H.264 sent bare over TCP) has no timestamps at all; cameras
    # send no B-frames, so decoding order is showing order.
    folder = sim_clip("throw", 1)
    ffmpeg = ["ffmpeg", "-loglevel", "error", "-i"]
    mp4, raw = tmp_path / "scene.mp4", tmp_path / "scene.h264"
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "25"]
    subprocess.run([*ffmpeg, str(folder / "scene.mp4"), *encode, str(mp4)], check=True)
    subprocess.run([*ffmpeg, str(mp4), "-c", "copy", str(raw)], check=True)
    facade = ", facade: " + yaml.safe_dump(sim_facade(folder), default_flow_style=True).strip()
    found = {}
    for clip in (mp4, raw):  # the mp4 is the control: the same throws, the same evidence
        sink = Recorder()
        _feed_clip(_pipeline(tmp_path / clip.suffix, facade, sink, evidence=True), clip)
        alerted = sorted(r["start_frame"] for k, r in sink.updates if k == UpdateKind.NEW)
        saved = [f for f in sink.evidence if f.stage == EvidenceStage.ORIGINAL]
        assert len(saved) == len(alerted) and all(verify_folder(f.folder) == [] for f in saved)
        found[clip.suffix] = alerted
    assert found[".h264"] == found[".mp4"] and found[".mp4"]
    feed = Feed(10_000, lossless=True)
    cap = _file_capture(raw, feed)
    cap.start()
    times = [f.t for i in _drain(feed, cap) if isinstance(i, Chunk) for f in i.frames]
    assert len(times) == 200 and np.allclose(np.diff(times), 0.04)


def test_a_raw_h264_stream_is_timed_at_the_rate_its_own_timing_declares_not_ffmpeg_s_default(tmp_path):
    # A 12 fps camera's DVR export: FFmpeg's raw H.264 reader says 25 fps whatever the stream declares, and
    # timed at 25 its fall would look twice as fast and four times as accelerated.
    times = {}
    for fps in (12, 25):  # 25 is the control: FFmpeg's default happens to be right
        raw = tmp_path / f"r{fps}.h264"
        source = ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate={fps}", "-t", "2"]
        encode = ["-c:v", "libx264", "-bf", "0", str(raw)]
        subprocess.run(["ffmpeg", "-loglevel", "error", *source, *encode], check=True)
        feed = Feed(10_000, lossless=True)
        cap = _file_capture(raw, feed)
        cap.start()
        times[fps] = [f.t for i in _drain(feed, cap) if isinstance(i, Chunk) for f in i.frames]
    for fps, t in times.items():
        assert len(t) == 2 * fps and np.allclose(np.diff(t), 1 / fps), (fps, np.diff(t)[:3])


def test_one_packet_without_a_timestamp_in_a_timed_stream_is_not_timed_from_zero(tmp_path):
    # RTSP or MPEG-TS may carry a packet with no timestamp among timed ones: counted from zero, its time would
    # jump back and end the connection. Only a stream that never carried one is timed by count.
    clip = tmp_path / "timed.mp4"
    source = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "2", "-c:v", "libx264", "-bf", "0"]
    subprocess.run(["ffmpeg", "-loglevel", "error", *source, str(clip)], check=True)
    src = VideoSource(str(clip), SourceOptions(clock=Clock.STREAM))
    src.open()
    kept = []
    try:
        for i, (packet, arrival) in enumerate(src.demux()):
            if i == 20:
                packet.pts = packet.dts = None  # one packet lost its timestamp on the way
            k, _ = src.decode(packet, arrival)
            if k is not None:
                kept.append((i, k.t))
    except SourceError:
        pass  # the end of the file
    finally:
        src.close()
    assert [i for i, _ in kept][:3] == [0, 1, 2] and len(kept) >= 45  # the control: the rest kept, in order
    assert kept[20][1] >= kept[19][1]  # the untimed packet is not stamped back at the stream's start


@pytest.mark.parametrize("ppm", [-100.0, 0.0, 100.0])
def test_capture_times_keep_to_arrival_over_days_whatever_the_camera_clock_drift(ppm):
    # A camera's clock is its own crystal: 100 ppm slow is 8.6 s a day behind the node's NTP time.
    clock = StreamClock(Clock.WALL, opened_at=1000.0)
    latency, late = 0.15, []
    rng = np.random.default_rng(3)
    for k in range(2 * 86400 * 2):  # two days, a frame each half second (enough to follow the clocks)
        real = 1000.0 + k / 2
        arrival = real + latency + (rng.exponential(0.05) if k % 500 else 2.0)  # jitter, and a late burst
        t = clock.t((real - 1000.0) * (1 + ppm * 1e-6), arrival)
        if k > 86400 * 2:
            late.append(arrival - t)
    assert max(late) < 2.0 + latency + 0.5 and np.median(late) < latency + 0.3, (max(late), np.median(late))
