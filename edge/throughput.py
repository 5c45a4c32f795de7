"""`edge bench throughput`: what the node costs per frame next to decoding alone, and N live cameras at once.

Part 1 replays busy clips at camera bitrates three ways, each in its own process so that CPU and peak
memory are its own: decode alone (the node's decoder settings), the detection path without evidence, and
the whole replay with evidence. Part 2 serves simulated cameras over RTSP (GStreamer's test server), runs
`edge run` on them and samples the node's CPU and memory while throws fall.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edge.events import read_rows

REPO = Path(__file__).resolve().parent.parent
RTSP_SERVER = REPO / "scripts" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python, which has python3-gi for GStreamer
_SAMPLE_S = 2.0  # how often the live part samples the node's CPU and memory
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BusyClip:
    """A busy day clip at a camera's bitrate: throws among birds, trees, laundry, leaves and light rain."""

    seed: int
    width: int
    height: int
    bitrate_kbps: int
    duration_s: float = 32.0

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height} at {self.bitrate_kbps / 1000:g} Mbit/s"


CLIPS = [BusyClip(7, 1920, 1080, 4000), BusyClip(8, 2560, 1440, 6000)]
LIVE_CLIP_S = 20.0  # one rendered camera clip, looped, with one throw: a throw every 20 s, as issue 12 asks


def busy_clip(clip: BusyClip, cache: Path) -> Path:
    """Render (or reuse) a busy clip; returns its folder."""
    from edge.sim.scenes import build_scene
    from edge.sim.simulate import simulate

    folder = cache / f"busy-{clip.seed}-{clip.width}x{clip.height}-{clip.bitrate_kbps}k"
    if not (folder / "truth.json").exists():
        scene = build_scene("mixed", clip.seed, width=clip.width, height=clip.height, duration_s=clip.duration_s)
        scene.bitrate_kbps, scene.rain = clip.bitrate_kbps, 40.0
        simulate(scene, folder)
    return folder


@dataclass
class Cost:
    """One phase of part 1."""

    frames: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    events: int = 0
    annotated_s: float = 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu_s / max(self.frames, 1)


def _phase(kind: str, folder: str, out: str, queue) -> None:
    """Run in a child process: one way of reading the clip, measured from inside."""
    from edge.capture.source import Clock, SourceOptions, StreamEnded, VideoSource
    from edge.config import load_config
    from edge.replay import replay

    t0, r0 = time.perf_counter(), _usage()
    events, annotated = 0, 0.0
    if kind == "decode":
        source = VideoSource(str(Path(folder) / "scene.mp4"), SourceOptions(clock=Clock.STREAM))
        source.open()
        frames = 0
        try:
            for _, decoded in source.packets():
                frames += len(decoded)
        except StreamEnded:
            pass
        source.close()
    else:
        cfg = load_config(Path(folder) / "config.yaml")
        result = replay(Path(folder) / "scene.mp4", cfg, None, out, media=kind == "evidence")
        frames, events = result.frames, len(result.records)
        annotated = sum(_seconds(Path(out) / r["clip"]) for r in result.records if r.get("clip"))
    cpu1, rss = _usage()[0], _peak_rss_mb()
    queue.put(Cost(frames, time.perf_counter() - t0, cpu1 - r0[0], rss, events, annotated))


def _usage() -> tuple[float, float]:
    """CPU seconds of this process and of its finished children (the annotator is one), and peak RSS MB."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, _peak_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak memory plus its largest child's (the annotator runs beside the node)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_maxrss + kids.ru_maxrss) / 1024


def _seconds(clip: Path) -> float:
    import av

    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base) if s.duration else float(c.duration or 0) / 1e6


def measure(folder: Path, kind: str) -> Cost:
    """One phase in a fresh process, so its peak memory and CPU are its own."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory(dir=folder) as out:
        proc = ctx.Process(target=_phase, args=(kind, str(folder), out, queue))
        proc.start()
        cost = queue.get()
        proc.join()
    return cost


def offline_report(cache: Path, log) -> str:
    """Part 1 as a markdown table."""
    lines = [
        "| clip | path | frames/s | CPU ms per frame | × decode | peak RSS MB | events | CPU s per annotated s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clip in CLIPS:
        folder = busy_clip(clip, cache)
        decode, detect, full = (measure(folder, kind) for kind in ("decode", "detect", "evidence"))
        per_clip_s = (full.cpu_s - detect.cpu_s) / full.annotated_s if full.annotated_s else None
        for label, cost in (
            ("decode alone", decode),
            ("detection, no evidence", detect),
            ("all, with evidence", full),
        ):
            events = "-" if cost is decode else str(cost.events)
            annotation = f"{per_clip_s:.2f}" if cost is full and per_clip_s is not None else "-"
            lines.append(
                f"| {clip.label} | {label} | {cost.frames / cost.wall_s:.1f} | {cost.cpu_ms_per_frame:.1f} | "
                f"{cost.cpu_ms_per_frame / decode.cpu_ms_per_frame:.2f} | {cost.peak_rss_mb:.0f} | {events} | "
                f"{annotation} |"
            )
            log(lines[-1])
    return "\n".join(lines)


# -- part 2: live cameras ------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    cpu_percent: float  # of one core
    rss_mb: float


@dataclass
class LiveRun:
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    cameras: dict[str, dict] = field(default_factory=dict)
    stop_s: float | None = None  # SIGTERM to exit; None when it had to be killed after 30 s


def _proc_times(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process and its children (the annotator) from /proc."""
    cpu = rss = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            cpu += (int(fields[11]) + int(fields[12])) / _CLK_TCK
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def _loop(clip: Path, times: int, out: Path) -> Path:
    if not out.exists():
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(times - 1), "-i", str(clip), "-c", "copy"]
        subprocess.run([*cmd, str(out)], check=True)
    return out


def _serve(clip: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(RTSP_SERVER), "0", str(clip)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"RTSP server did not start: {line.strip()}")
    return proc, f"rtsp://127.0.0.1:{line.split()[1]}/stream"


def live_run(cache: Path, cameras: int, seconds: float, log) -> LiveRun:
    """`edge run` on `cameras` simulated 1080p25 RTSP cameras for `seconds`; samples CPU, memory, alerts."""
    from edge.sim.scenes import build_scene
    from edge.sim.simulate import simulate

    servers, config_cams, truths = [], {}, {}
    loops = int(seconds // LIVE_CLIP_S) + 2
    work = Path(tempfile.mkdtemp(prefix="live-", dir=cache))
    try:
        for k in range(cameras):
            folder = cache / f"live-one-throw-{k}"
            if not (folder / "truth.json").exists():
                scene = build_scene("throw", 300 + k, width=1920, height=1080, duration_s=LIVE_CLIP_S)
                scene.bitrate_kbps, scene.throws = 4000, scene.throws[:1]
                simulate(scene, folder)
            looped = _loop(folder / "scene.mp4", loops, folder / f"loop{loops}.mp4")
            proc, url = _serve(looped)
            servers.append(proc)
            facade = yaml.safe_load((folder / "config.yaml").read_text())["cameras"]["sim"]["facade"]
            config_cams[f"cam{k}"] = {"source": url, "facade": facade, "record": {"pre_s": 4, "post_s": 2}}
            truths[f"cam{k}"] = json.loads((folder / "truth.json").read_text())
        config = {
            "version": 1,
            "node": {"id": "bench", "status_interval_s": 2},
            "storage": {"dir": "store"},  # beside edge.yaml: a config's relative paths are its folder's
            "mqtt": {"enabled": False},
            "cameras": config_cams,
        }
        (work / "edge.yaml").write_text(yaml.safe_dump(config))
        return _run_node(work, truths, seconds, log)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


def _run_node(work: Path, truths: dict, seconds: float, log) -> LiveRun:
    node = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(work / "edge.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = LiveRun(seconds)
    store = work / "store"
    seen: dict[str, float] = {}
    start = time.monotonic()
    last_cpu, last_t = _proc_times(node.pid)[0], start
    next_sample = start + _SAMPLE_S
    try:
        while (now := time.monotonic()) - start < seconds:
            path = store / "events.jsonl"
            for row in read_rows(path) if path.exists() else []:
                if row["type"] == "new" and row["id"] not in seen:
                    seen[row["id"]] = time.time()
                    seen[row["id"] + "/row"] = row
            if now >= next_sample:
                cpu, rss = _proc_times(node.pid)
                run.samples.append(Sample(now - start, 100 * (cpu - last_cpu) / (now - last_t), rss))
                last_cpu, last_t, next_sample = cpu, now, now + _SAMPLE_S
                log(f"  {now - start:5.0f} s  CPU {run.samples[-1].cpu_percent:5.1f}%  RSS {rss:6.0f} MB")
            time.sleep(0.2)
        status = json.loads((store / "status.json").read_text())
    finally:
        node.send_signal(signal.SIGTERM)
        stop_t = time.monotonic()
        try:
            node.wait(30)
            run.stop_s = time.monotonic() - stop_t
        except subprocess.TimeoutExpired:
            node.kill()  # reported: a node that does not stop is a finding, not a reason to lose the run
            node.wait()
    rows = [r for k, r in seen.items() if k.endswith("/row")]
    for cam, truth in truths.items():
        mine = [r for r in rows if r["camera"] == cam]
        latencies = sorted(seen[r["id"]] - _utc(r["start_utc"]) for r in mine if r.get("start_utc"))
        st = status.get(cam, {})
        run.cameras[cam] = {
            "frames": st.get("frames", 0),
            "dropped": st.get("dropped", 0),
            "alerts": len(mine),
            "throws": _throws_in(truth, seconds),
            "latency_median_s": latencies[len(latencies) // 2] if latencies else None,
            "latency_max_s": latencies[-1] if latencies else None,
        }
    return run


def _utc(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _throws_in(truth: dict, seconds: float) -> int:
    """Must-detect throws the camera showed during the run (the stream starts when the node connects)."""
    fps = truth.get("fps", 25.0)
    per_loop = [t["release_frame"] / fps for t in truth["throws"] if t["must_detect"]]
    loops = int(seconds // LIVE_CLIP_S) + 1
    return sum(1 for k in range(loops) for t in per_loop if k * LIVE_CLIP_S + t + 3.0 < seconds)


def live_report(run: LiveRun) -> str:
    lines = [
        "| camera | frames received | dropped | alerts / throws shown | latency median / max s |",
        "|---|---|---|---|---|",
    ]
    for cam, c in run.cameras.items():
        lat = (
            f"{c['latency_median_s']:.2f} / {c['latency_max_s']:.2f}" if c["latency_median_s"] is not None else "-"
        )
        lines.append(f"| {cam} | {c['frames']} | {c['dropped']} | {c['alerts']} / {c['throws']} | {lat} |")
    busy = [s.cpu_percent for s in run.samples[1:]] or [0.0]
    rss = [s.rss_mb for s in run.samples] or [0.0]
    lines.append("")
    lines.append(
        f"Node CPU over the run: mean {sum(busy) / len(busy):.0f}%, max {max(busy):.0f}% of one core; "
        f"RSS max {max(rss):.0f} MB ({max(rss) / max(len(run.cameras), 1):.0f} MB per camera). "
        + (f"SIGTERM to exit: {run.stop_s:.1f} s." if run.stop_s is not None else "It did NOT stop within 30 s.")
    )
    return "\n".join(lines)


def plot(run: LiveRun, path: Path) -> None:
    """CPU (% of one core) and RSS over the live run, drawn with OpenCV."""
    import cv2
    import numpy as np

    w, h, m = 720, 300, 50
    img = np.full((h + 2 * m, w + 2 * m, 3), 255, np.uint8)
    cv2.rectangle(img, (m, m), (m + w, m + h), (0, 0, 0), 1)
    t_max = max((s.t for s in run.samples), default=1.0)
    cpu_max = max(200.0, *(s.cpu_percent for s in run.samples)) if run.samples else 200.0
    rss_max = max((s.rss_mb for s in run.samples), default=1.0) * 1.2
    for series, top, colour, name in (
        ([s.cpu_percent for s in run.samples], cpu_max, (40, 40, 220), f"CPU % of one core (top {cpu_max:.0f})"),
        ([s.rss_mb for s in run.samples], rss_max, (200, 120, 40), f"RSS MB (top {rss_max:.0f})"),
    ):
        pts = [
            (m + int(w * s.t / t_max), m + h - int(h * v / top)) for s, v in zip(run.samples, series, strict=True)
        ]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (m + 8, m + 20 + 22 * (colour[0] > 100)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    cv2.putText(img, f"{t_max:.0f} s", (m + w - 40, m + h + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


def run_throughput(args) -> int:
    """`edge bench throughput`."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    parts = [offline_report(cache, log)]
    run = None
    if args.live_seconds > 0:
        run = live_run(cache, args.cameras, args.live_seconds, log)
        parts.append(live_report(run))
    report = "\n\n".join(parts)
    print(report)
    if args.markdown:
        md = Path(args.markdown)
        png = md.with_name("throughput-live.png")
        if run is not None:
            plot(run, png)
        from edge.bench import _command

        header = (
            f"# Throughput bench\n\nCommand: `{_command()}` on {os.cpu_count()} cores "
            f"({_cpu_model()}).\n\n## Part 1: one camera's cost per frame, next to decoding alone\n\n"
        )
        live = ""
        if run is not None:
            live = (
                f"\n\n## Part 2: {len(run.cameras)} live 1080p25 cameras at 4 Mbit/s, {run.seconds:.0f} s, "
                f"`edge run`, pre_s 4\n\n{parts[1]}\n\n![CPU and RSS over the run]({png.name})\n"
            )
        md.write_text(header + parts[0] + live + "\n")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
