"""`edge bench accuracy`: render a fixed suite of 1080p+ scenes, replay them, score against the truth."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from edge.config import load_config
from edge.replay import replay
from edge.sim.scenes import build_scene
from edge.sim.score import SceneScore, score_scene
from edge.sim.simulate import simulate

# (scene, seed, duration_s or None): throws of every class, each distractor alone, and longer quiet clips.
SUITE: list[tuple[str, int, float | None]] = [
    ("throw", 1, None), ("throw", 2, None), ("throw", 3, None),
    ("tiny", 1, None), ("tiny", 2, None), ("tiny", 3, None),
    ("light", 1, None), ("light", 2, None), ("light", 3, None),
    ("two_throws", 1, None), ("two_throws", 2, None),
    ("night", 1, None), ("night", 2, None),
    ("4mp", 1, None), ("far", 1, None), ("far", 2, None),
    ("mixed", 1, None), ("mixed", 2, None),
    ("birds", 1, 30.0), ("leaves", 1, 30.0), ("laundry", 1, 30.0), ("rain", 1, 30.0),
    ("insects", 1, 30.0), ("windows", 1, 30.0), ("exposure", 1, 30.0), ("clouds", 1, 30.0),
    ("shake", 1, 30.0), ("calm", 1, 30.0),
    # More seeds, so that false alarms per hour rest on more than a few minutes of footage.
    ("throw", 4, None), ("throw", 5, None), ("light", 4, None), ("light", 5, None),
    ("tiny", 4, None), ("tiny", 5, None), ("night", 4, None), ("night", 5, None),
    ("mixed", 4, None), ("mixed", 5, None),
    *[(n, s, 30.0) for s in (2, 3)
      for n in ("birds", "leaves", "laundry", "rain", "insects", "windows", "calm", "shake")],
]  # fmt: skip

TARGETS = {
    "recall": 0.97,
    "fa_confirmed_h": 0.5,
    "fa_suspected_h": 3.0,
    "floor_exact": 0.90,
    "floor_near": 0.98,
    "latency_median_s": 1.5,
    "latency_max_s": 2.5,
}


def apply_overrides(cfg, overrides: list[str]) -> None:
    """Set camera settings from `section.key=value` strings (e.g. fall.min_fall_floors=1.5) on every camera.

    `facade=none` drops the facade calibration, to measure the image-space fallback.
    """
    for item in overrides:
        if item == "facade=none":
            for cam in cfg.cameras.values():
                cam.facade = None
            continue
        path, _, value = item.partition("=")
        section, _, key = path.partition(".")
        for cam in cfg.cameras.values():
            part = getattr(cam, section)
            setattr(part, key, type(getattr(part, key))(value))


def _run_one(job: tuple[str, int, float | None, str, list[str]]) -> SceneScore:
    name, seed, duration, cache, overrides = job
    folder = Path(cache) / f"{name}-{seed}"
    truth_p = folder / "truth.json"
    if not truth_p.exists():
        simulate(build_scene(name, seed, duration_s=duration), folder)
    truth = json.loads(truth_p.read_text())
    cfg = load_config(folder / "config.yaml")
    apply_overrides(cfg, overrides)
    result = replay(folder / "scene.mp4", cfg, None, folder / "replay", media=False)
    return score_scene(truth, result.records)


def summarise(scores: list[SceneScore]) -> dict:
    """Totals over the suite, in the units of the targets."""
    hours = sum(s.seconds for s in scores) / 3600
    must = sum(s.must for s in scores)
    found = sum(s.found for s in scores)
    lat = [x for s in scores for x in s.latencies]
    return {
        "clips": len(scores),
        "footage_min": round(hours * 60, 1),
        "throws": must,
        "recall": found / must if must else 1.0,
        "fa_confirmed_h": sum(s.false_confirmed for s in scores) / hours,
        "fa_suspected_h": sum(s.false_suspected for s in scores) / hours,
        "floor_exact": sum(s.floor_exact for s in scores) / found if found else 1.0,
        "floor_near": sum(s.floor_near for s in scores) / found if found else 1.0,
        "latency_median_s": float(np.median(lat)) if lat else 0.0,
        "latency_max_s": max(lat) if lat else 0.0,
        "duplicates": sum(s.duplicates for s in scores),
    }


def meets(total: dict) -> dict[str, bool]:
    """Which targets the totals meet."""
    out = {}
    for key, bound in TARGETS.items():
        upper = key.startswith(("fa_", "latency"))
        out[key] = total[key] <= bound if upper else total[key] >= bound
    return out


def table(scores: list[SceneScore], total: dict) -> str:
    """The markdown report: per scene, then totals against targets."""
    lines = [
        "| scene | min | throws | found | floor exact | ±1 | latency med s | FA conf | FA susp | dup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        med = f"{np.median(s.latencies):.2f}" if s.latencies else "-"
        lines.append(
            f"| {s.scene} | {s.seconds / 60:.1f} | {s.must} | {s.found} | {s.floor_exact} | {s.floor_near}"
            f" | {med} | {s.false_confirmed} | {s.false_suspected} | {s.duplicates} |"
        )
    ok = meets(total)
    lines += ["", "| measure | value | target | met |", "|---|---|---|---|"]
    fmt = {"recall": "{:.1%}", "floor_exact": "{:.1%}", "floor_near": "{:.1%}"}
    for key, bound in TARGETS.items():
        f = fmt.get(key, "{:.2f}")
        sign = "≤" if key.startswith(("fa_", "latency")) else "≥"
        lines.append(
            f"| {key} | {f.format(total[key])} | {sign} {f.format(bound)} | {'yes' if ok[key] else 'NO'} |"
        )
    lines.append(
        f"\n{total['clips']} clips, {total['footage_min']} min of footage, {total['throws']} must-detect "
        f"throws, {total['duplicates']} duplicate events."
    )
    notes = [f"- {s.scene}: missed {m}" for s in scores for m in s.missed]
    notes += [f"- {s.scene}: wrong floor, {w}" for s in scores for w in s.wrong_floor]
    if notes:
        lines += ["", "Misses and wrong floors:", *notes]
    return "\n".join(lines)


def _command() -> str:
    """The command line that produced a report, for its header."""
    return "edge " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def run_accuracy(args) -> int:
    """Run the suite (or a subset), print the table, optionally write it; exit 1 when a target is missed."""
    wanted = set(args.scenes.split(",")) if args.scenes else None
    overrides = (args.set or []) + (["facade=none"] if args.uncalibrated else [])
    jobs = [
        (n, s, d, args.cache, overrides)
        for n, s, d in SUITE
        if wanted is None or n in wanted or f"{n}-{s}" in wanted
    ]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=2) as pool:
        scores = []
        for sc in pool.map(_run_one, jobs):
            scores.append(sc)
            print(
                f"  {sc.scene}: {sc.found}/{sc.must} found, FA {sc.false_confirmed}+{sc.false_suspected}",
                file=sys.stderr,
                flush=True,
            )
    total = summarise(scores)
    report = table(scores, total)
    header = f"# Accuracy bench\n\nCommand: `{_command()}` ({time.time() - t0:.0f} s on this machine)\n\n"
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(header + report + "\n")
    return 0 if all(meets(total).values()) else 1


SPEED_SCENES = [("throw", 1, "1920x1080"), ("4mp", 1, "2560x1440"), ("night", 1, "1920x1080 IR")]


def run_speed(args) -> int:
    """Replay throughput (decode + detection, no media) per resolution, and the process's peak memory."""
    import resource

    lines = [
        "| clip | frames | seconds | frames/s | real time at 25 fps | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, seed, label in SPEED_SCENES:
        folder = Path(args.cache) / f"{name}-{seed}"
        if not (folder / "truth.json").exists():
            simulate(build_scene(name, seed), folder)
        cfg = load_config(folder / "config.yaml")
        t0 = time.perf_counter()
        result = replay(folder / "scene.mp4", cfg, None, folder / "speed", media=False)
        dt = time.perf_counter() - t0
        fps = result.frames / dt
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines.append(f"| {name} {label} | {result.frames} | {dt:.1f} | {fps:.1f} | {fps / 25:.1f}x | {rss:.0f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        cores = os.cpu_count()
        Path(args.markdown).write_text(
            f"# Speed bench\n\nCommand: `{_command()}` on {cores} cores; decode and detection of one camera "
            f"in one process, no clips written.\n\n{report}\n"
        )
    return 0
