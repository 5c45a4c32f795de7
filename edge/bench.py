"""`edge bench accuracy`: render a fixed suite of 1080p+ scenes, replay them, score against the truth."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import resource
import shlex
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edge.config import SHIPPED_VERIFIER, CameraConfig, VerifierConfig, load_config
from edge.detect.fall import min_fall_m
from edge.geometry import CameraGeometry
from edge.overrides import apply_overrides
from edge.replay import replay
from edge.sim.explain import MissCause, explain_misses
from edge.sim.scenes import build_scene
from edge.sim.score import AlertBar, SceneScore, score_scene
from edge.sim.simulate import simulate

# Randomised suites (edge.sim.randomise): every rendering choice is drawn from the seed. Rules and
# thresholds are tuned on TUNING seeds only; HELD_OUT seeds are reported and never tuned on.
THROW_SCENES = ["throw", "tiny", "light", "two_throws", "night", "night_busy", "rain_throw", "4mp", "far", "mixed"]
HARD_SCENES = ["night", "night_busy", "rain_throw"]  # more seeds each: recall is reported per condition
# Seeds a hard scene gets beyond the suite's two: with one, rain held 2-5 throws a suite, too few to tell
# 100% from the 57% that eight more tuning seeds showed.
HARD_EXTRA_SEEDS = 4
DISTRACTOR_SCENES = [
    "birds",
    "leaves",
    "laundry",
    "rain",
    "insects",
    "windows",
    "exposure",
    "clouds",
    "shake",
    "calm",
]
DISTRACTOR_S = 20.0  # seconds of each distractor-only clip
TUNING_SEEDS = (101, 102)
HELD_OUT_SEEDS = (901, 902)
# More seeds to tune on, outside the default run (`--suite tuning_more`): a rule chosen on the tuning suite's
# few misses is checked on 80 more throw clips and 20 more distractor clips before the held-out suite is run.
# No seed of the tuning or held-out suites: the renderer draws some choices from the seed alone.
MORE_TUNING_SEEDS = (103, 104, 105, 106, 107, 108, 109, 110)
MORE_TUNING_DISTRACTOR_SEEDS = (103, 104)


RENDER_VERSION = 3  # part of a randomised clip's cache folder: raise it when the renderer changes


def randomised_suite(seeds: tuple[int, int]) -> list[tuple[str, int, float | None, bool]]:
    """Throws of every class in two seeds (more for night and rain), and each distractor alone."""
    a, b = seeds
    throws = [(n, s, None, True) for s in (a, b) for n in THROW_SCENES]
    throws += [(n, a + 50 + k, None, True) for k in range(HARD_EXTRA_SEEDS) for n in HARD_SCENES]
    return throws + [(n, a, DISTRACTOR_S, True) for n in DISTRACTOR_SCENES]


# (scene, seed, duration_s or None): the plain renderer's suite of earlier releases (`--suite classic`).
CLASSIC: list[tuple[str, int, float | None]] = [
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


def more_tuning_suite() -> list[tuple[str, int, float | None, bool]]:
    """Throws of every class in MORE_TUNING_SEEDS, and each distractor alone in MORE_TUNING_DISTRACTOR_SEEDS."""
    throws = [(n, s, None, True) for s in MORE_TUNING_SEEDS for n in THROW_SCENES]
    return throws + [(n, s, DISTRACTOR_S, True) for s in MORE_TUNING_DISTRACTOR_SEEDS for n in DISTRACTOR_SCENES]


SUITES: dict[str, list[tuple[str, int, float | None, bool]]] = {
    "tuning": randomised_suite(TUNING_SEEDS),
    "tuning_more": more_tuning_suite(),
    "held_out": randomised_suite(HELD_OUT_SEEDS),
    "classic": [(n, s, d, False) for n, s, d in CLASSIC],
}

TARGETS = {
    "recall": 0.97,
    "fa_confirmed_h": 0.5,
    "fa_suspected_h": 3.0,
    "floor_exact": 0.90,
    "floor_near": 0.98,
    "latency_median_s": 1.5,
    "latency_max_s": 2.5,
}


def _folder(cache: str, name: str, seed: int, randomised: bool) -> Path:
    return Path(cache) / f"{name}-{seed}{f'-r{RENDER_VERSION}' if randomised else ''}"


class BrokenClip(Exception):
    """A cached clip that does not replay whole: its throws would count as the detector's misses."""


def _run_one(job: tuple[str, int, float | None, bool, str, list[str]]) -> SceneScore:
    """Replay one clip of a suite (rendered first when not cached) and score it against its truth."""
    name, seed, duration, randomised, cache, overrides = job
    folder = _folder(cache, name, seed, randomised)
    truth_p = folder / "truth.json"
    if not truth_p.exists():
        simulate(build_scene(name, seed, randomised=randomised, duration_s=duration), folder)
    truth = json.loads(truth_p.read_text())
    cfg = load_config(folder / "config.yaml")
    apply_overrides(cfg, overrides)
    result = replay(folder / "scene.mp4", cfg, None, folder / "replay", media=False)
    if result.error is not None or result.frames != truth["frames"]:
        why = f": {result.error}" if result.error is not None else ""
        raise BrokenClip(
            f"{folder}: replayed {result.frames} of its {truth['frames']} frames{why}; "
            "delete the folder to render it again"
        )
    return score_scene(truth, result.records, alert_bar(next(iter(cfg.cameras.values())), truth))


def alert_bar(cam: CameraConfig, truth: dict) -> AlertBar | None:
    """The suspected alert's fall on this clip's facade (None uncalibrated), to measure each throw against."""
    facade = CameraGeometry.build(cam, (truth["width"], truth["height"])).facade
    if facade is None:
        return None
    return AlertBar(cam.fall.suspect_fall_share * min_fall_m(cam.fall, facade), facade.to_facade)


def _suite_clips(split: str, wanted: set[str] | None) -> list[tuple[str, int, float | None, bool]]:
    """The clips of a suite that --scenes asks for (all when None): by scene name, or name-seed."""
    return [c for c in SUITES[split] if wanted is None or c[0] in wanted or f"{c[0]}-{c[1]}" in wanted]


def _explain_one(job: tuple[str, int, bool, str, list[str], list[int]]) -> list[MissCause]:
    """Why the throws indexed `missed` of one cached clip were missed (edge.sim.explain); none when it fails.

    A clip that cannot be explained (gone from the cache, unreadable) loses its notes, not the bench's report.
    """
    name, seed, randomised, cache, overrides, missed = job
    folder = _folder(cache, name, seed, randomised)
    try:
        cfg = load_config(folder / "config.yaml")
        apply_overrides(cfg, overrides)
        truth = json.loads((folder / "truth.json").read_text())
        return explain_misses(folder / "scene.mp4", truth, cfg.camera(None)[1], missed)
    except (OSError, ValueError, av.error.FFmpegError) as e:
        print(f"  could not explain the misses of {folder.name}: {e}", file=sys.stderr)
        return []


def _explain(
    results: dict[str, list[SceneScore]], wanted: set[str] | None, cache: str, overrides: list[str]
) -> None:
    """Fill in each missed throw's cause, in a second pass over the clips that missed one."""
    for split, scores in results.items():
        clips = [(n, s, r) for n, s, _, r in _suite_clips(split, wanted)]
        todo = [(sc, clip) for sc, clip in zip(scores, clips, strict=True) if sc.missed_index]
        jobs = [(n, s, r, cache, overrides, sc.missed_index) for sc, (n, s, r) in todo]
        with worker_pool(2) as pool:
            for (sc, _), causes in zip(todo, pool.map(_explain_one, jobs), strict=True):
                sc.miss_causes = causes


CONDITIONS = ("day", "night", "rain")
CONDITION_RECALL = 0.95  # recall target within each condition
CNR_BINS = [0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, math.inf]  # contrast over the local temporal noise
WIDTH_BINS = [0.0, 1.5, 2.0, 4.0, 8.0, math.inf]  # object width in pixels
LIMIT_CNR, LIMIT_WIDTH = 2.0, 2.0  # where recall must reach the recall target: visible and 2 px across


def summarise(scores: list[SceneScore]) -> dict:
    """Totals over the suite, in the units of the targets."""
    hours = sum(s.seconds for s in scores) / 3600
    must = sum(s.must for s in scores)
    found = sum(s.found for s in scores)
    lat = [x for s in scores for x in s.latencies]
    allowed = [x for s in scores for x in s.rule_latencies]
    # Throws, none found: no floor was right and no alert came (shown as missed, not as a perfect 100% / 0.00).
    none_found = 1.0 if must == 0 else 0.0
    never = 0.0 if must == 0 else math.inf
    total = {
        "clips": len(scores),
        "footage_min": round(hours * 60, 1),
        "throws": must,
        "recall": found / must if must else 1.0,
        "confirmed_share": sum(s.confirmed for s in scores) / found if found else 1.0,
        "fa_confirmed_h": sum(s.false_confirmed for s in scores) / hours,
        "fa_suspected_h": sum(s.false_suspected for s in scores) / hours,
        "floor_exact": sum(s.floor_exact for s in scores) / found if found else none_found,
        "floor_near": sum(s.floor_near for s in scores) / found if found else none_found,
        "latency_median_s": float(np.median(lat)) if lat else never,
        "latency_max_s": max(lat) if lat else never,
        "rule_latency_median_s": float(np.median(allowed)) if allowed else None,
        "rule_latency_max_s": max(allowed) if allowed else None,
        "duplicates": sum(s.duplicates for s in scores),
    }
    for cond in CONDITIONS:
        part = [s for s in scores if s.condition == cond]
        n = sum(s.must for s in part)
        total[f"recall_{cond}"] = sum(s.found for s in part) / n if n else 1.0
        total[f"throws_{cond}"] = n
    visible = [t for s in scores for t in s.throws if t.fell and t.cnr >= LIMIT_CNR and t.width_px >= LIMIT_WIDTH]
    total["recall_visible"] = sum(t.found for t in visible) / len(visible) if visible else 1.0
    total["throws_visible"] = len(visible)
    return total


def _target(key: str) -> tuple[float, bool]:
    """A measure's bound, and whether it is an upper one (false alarms, latency) or a lower one."""
    if key.startswith("recall_") and key != "recall_visible":
        return CONDITION_RECALL, False
    return TARGETS["recall" if key == "recall_visible" else key], key.startswith(("fa_", "latency"))


def _within(value: float, bound: float, upper: bool) -> bool:
    return value <= bound if upper else value >= bound


def meets(total: dict) -> dict[str, bool]:
    """Which targets the totals meet."""
    keys = [*TARGETS, *(f"recall_{c}" for c in CONDITIONS), "recall_visible"]
    return {key: _within(total[key], *_target(key)) for key in keys}


_SHARES = ("recall", "floor", "confirmed")  # measures printed as percentages
_MAX_PLACES = 4  # enough to tell any share of a few hundred throws, or a latency in frames, from its bound


def _fmt(key: str, value: float, places: int | None = None) -> str:
    share = key.startswith(_SHARES)
    places = (1 if share else 2) if places is None else places
    return f"{value:.{places}%}" if share else f"{value:.{places}f}"


def _shown(key: str, value: float) -> str:
    """`value` as the totals table prints it: with more places where the usual ones would round a miss onto
    its target (32 of 33 throws is 96.97%, not "97.0%" beside "≥ 97.0%"), so the number read is the one judged."""
    bound, upper = _target(key)
    share = key.startswith(_SHARES)
    places = 1 if share else 2
    while places < _MAX_PLACES:
        rounded = round(value * 100, places) / 100 if share else round(value, places)
        if _within(rounded, bound, upper) == _within(value, bound, upper):
            break
        places += 1
    return _fmt(key, value, places)


def _bound(key: str) -> str:
    if key.startswith("recall_") and key != "recall_visible":
        return f"≥ {CONDITION_RECALL:.0%}"
    bound = TARGETS["recall" if key == "recall_visible" else key]
    return f"{'≤' if key.startswith(('fa_', 'latency')) else '≥'} {_fmt(key, bound)}"


def totals_table(totals: dict[str, dict]) -> str:
    """The measures of each split side by side, against the targets; the held-out column is the one that counts."""
    splits = list(totals)
    keys = list(TARGETS) + [f"recall_{c}" for c in CONDITIONS] + ["recall_visible"]
    label = {f"recall_{c}": f"recall, {c} ({{n}} throws)" for c in CONDITIONS}
    label["recall_visible"] = f"recall where CNR ≥ {LIMIT_CNR:g} and ≥ {LIMIT_WIDTH:g} px ({{n}} throws)"
    lines = [f"| measure | {' | '.join(splits)} | target |", "|---|" + "---|" * (len(splits) + 1)]
    for key in keys:
        cells = []
        for sp in splits:
            ok = meets(totals[sp])[key]
            cells.append(f"{_shown(key, totals[sp][key])}{'' if ok else ' ✗'}")
        n = "/".join(str(totals[sp].get(key.replace("recall", "throws"), "")) for sp in splits)
        lines.append(f"| {label.get(key, key).format(n=n)} | {' | '.join(cells)} | {_bound(key)} |")
    for sp in splits:
        t = totals[sp]
        lines.append(
            f"\n{sp}: {t['clips']} clips, {t['footage_min']} min of footage, {t['throws']} must-detect throws, "
            f"{t['duplicates']} duplicate events."
        )
        if t.get("rule_latency_median_s") is not None:
            lines[-1] += (
                f" The found throws' true paths had fallen the suspected alert's bar (`suspect_fall_share` of"
                f" the minimum fall) {t['rule_latency_median_s']:.2f} s after they were first visible (median;"
                f" max {t['rule_latency_max_s']:.2f} s): the latency that rule allows. A detector that saw every"
                f" throw from its first visible frame would alert no sooner, but for its position noise (and"
                f" a weakly scored track must fall the whole minimum fall)."
            )
    return "\n".join(lines)


def scene_table(scores: list[SceneScore]) -> str:
    """One row per clip."""
    lines = [
        "| scene | condition | min | throws | found | floor exact | ±1 | latency s | FA conf | FA susp | dup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        med = f"{np.median(s.latencies):.2f}" if s.latencies else "-"
        lines.append(
            f"| {s.scene} | {s.condition} | {s.seconds / 60:.1f} | {s.must} | {s.found} | {s.floor_exact}"
            f" | {s.floor_near} | {med} | {s.false_confirmed} | {s.false_suspected} | {s.duplicates} |"
        )
    notes = [f"- {s.scene}: missed {m}{_cause_note(s, i)}" for s in scores for i, m in enumerate(s.missed)]
    notes += [f"- {s.scene}: wrong floor, {w}" for s in scores for w in s.wrong_floor]
    if notes:
        lines += ["", "Misses and wrong floors:", *notes]
    return "\n".join(lines)


MISS_INTRO = (
    "Each missed throw's clip is run again through the detector alone, along the throw's true path: were "
    "there blobs on it, did a track follow it for the fall decision's `min_points`, and which rules ruled "
    "out the track that followed it longest (named as in `edge/detect/fall.py`)."
)


def _cause_note(s: SceneScore, i: int) -> str:
    """Why the i-th missed throw of a clip was missed, when the bench asked (edge.sim.explain)."""
    if i >= len(s.miss_causes):
        return ""
    c = s.miss_causes[i]
    return f": {c.stage}; {c.detail}"


def miss_table(results: dict[str, list[SceneScore]]) -> str:
    """Missed throws per split, counted by where the detector lost them (the rule, when one alone failed)."""
    counts = {sp: Counter(c.key for s in sc for c in s.miss_causes) for sp, sc in results.items()}
    keys = sorted({k for c in counts.values() for k in c}, key=lambda k: (-sum(c[k] for c in counts.values()), k))
    if not keys:
        return "No throw was missed."
    lines = [f"| where it was lost | {' | '.join(results)} |", "|---|" + "---|" * len(results)]
    lines += [f"| {k} | {' | '.join(str(counts[sp][k]) for sp in results)} |" for k in keys]
    return "\n".join(lines)


def table(scores: list[SceneScore], total: dict) -> str:
    """The markdown report of one suite: per scene, then totals against targets."""
    return scene_table(scores) + "\n\n" + totals_table({"suite": total})


def _bin_label(edges: list[float], i: int, unit: str) -> str:
    lo, hi = edges[i], edges[i + 1]
    return f"≥ {lo:g}{unit}" if math.isinf(hi) else f"{lo:g}–{hi:g}{unit}"


def limit_cells(scores: list[SceneScore]) -> list[list[tuple[int, int]]]:
    """(found, throws) per width bin (rows) and CNR bin (columns), over throws that fell far enough in view."""
    cells = [[(0, 0) for _ in CNR_BINS[:-1]] for _ in WIDTH_BINS[:-1]]
    for t in (t for s in scores for t in s.throws if t.fell):
        r = int(np.searchsorted(WIDTH_BINS, t.width_px, side="right")) - 1
        c = int(np.searchsorted(CNR_BINS, t.cnr, side="right")) - 1
        found, n = cells[r][c]
        cells[r][c] = (found + t.found, n + 1)
    return cells


def limit_table(scores: list[SceneScore]) -> str:
    """Recall by contrast-to-noise ratio and size: where the detector's limit lies."""
    cells = limit_cells(scores)
    head = [_bin_label(CNR_BINS, i, "") for i in range(len(CNR_BINS) - 1)]
    lines = [f"| width \\ CNR | {' | '.join(head)} |", "|---|" + "---|" * len(head)]
    for r, row in enumerate(cells):
        txt = [f"{f}/{n} ({f / n:.0%})" if n else "-" for f, n in row]
        lines.append(f"| {_bin_label(WIDTH_BINS, r, ' px')} | {' | '.join(txt)} |")
    return "\n".join(lines)


def floor_errors(scores: list[SceneScore]) -> str:
    """The signed origin-floor error (reported minus true) as counts, so a bias shows."""
    errs = [e for s in scores for e in s.floor_errors]
    if not errs:
        return "no floors reported"
    counts = {k: sum(1 for e in errs if e == k) for k in range(min(errs), max(errs) + 1)}
    mean = float(np.mean(errs))
    text = ", ".join(f"{k:+d}: {v}" for k, v in counts.items()) + f" (mean {mean:+.2f} floors, {len(errs)} throws)"
    heights = [e for s in scores for e in s.height_errors]
    if heights:
        q1, median, q3 = np.percentile(heights, [25, 50, 75])
        text += f"; origin height error median {median:+.2f} m (middle half {q1:+.2f} to {q3:+.2f} m)"
    return text


INTRO = (
    "Two suites rendered with domain randomisation (`edge sim --randomised`), with disjoint seeds: rules and "
    "thresholds were tuned on `tuning` only; `held_out` was never tuned on, and its column is the one that "
    "counts. Targets are judged on it. CNR is an object's contrast against what is behind it over the "
    "temporal noise there; the detection-limit table counts every throw that fell two floors in view, "
    "visible or not. The real-footage section replays the public clips of `../shared/footage/`."
)


def limit_plot_path(markdown: str, suite: str | None) -> Path:
    """Where the detection-limit PNG goes: beside the report, named for the suite when one alone ran.

    A run of one suite must not replace the default run's plot beside it.
    """
    return Path(markdown).with_name(f"detection-limit{f'-{suite}' if suite else ''}.png")


def _intro(judged: str) -> str:
    """The report's opening: what the suites are, and which one the targets were judged on."""
    if judged == "held_out":
        return INTRO
    return (
        f"Targets are judged on `{judged}`, which rules and thresholds may be tuned on: these are not held-out "
        "numbers (`held_out` was not run). Without `--no-real` the real-footage section replays the held-out "
        "real clips as well.\n\n" + INTRO
    )


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes started afresh (spawn), never forked from this one.

    A fork copies a process whose other threads may hold a lock at that moment (OpenCV's thread pool, a
    replay's writer): the child then waits on it forever. Run inside pytest, the real-footage replay did.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _command() -> str:
    """The command line that produced a report, for its header."""
    return "edge " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _run_split(jobs: list, label: str) -> list[SceneScore]:
    scores = []
    with worker_pool(2) as pool:
        for sc in pool.map(_run_one, jobs):
            scores.append(sc)
            print(
                f"  {label} {sc.scene}: {sc.found}/{sc.must} found, FA {sc.false_confirmed}+{sc.false_suspected}",
                file=sys.stderr,
                flush=True,
            )
    return scores


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the bench's worker processes)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_suites(
    splits: list[str], wanted: set[str] | None, cache: str, overrides: list[str]
) -> tuple[dict[str, list[SceneScore]], float]:
    """Each split's scores (splits that --scenes leaves empty are left out), and the CPU seconds they took."""
    cpu0 = _children_cpu_s()
    results: dict[str, list[SceneScore]] = {}
    for split in splits:
        jobs = [(n, s, d, r, cache, overrides) for n, s, d, r in _suite_clips(split, wanted)]
        results[split] = _run_split(jobs, f"{split} {' '.join(overrides)}".strip())
    return {sp: sc for sp, sc in results.items() if sc}, _children_cpu_s() - cpu0


ABLATION_KEYS = [
    "recall",
    "confirmed_share",
    *(f"recall_{c}" for c in CONDITIONS),
    "recall_visible",
    "fa_confirmed_h",
    "fa_suspected_h",
    "floor_exact",
    "floor_near",
    "latency_median_s",
    "latency_max_s",
]


@dataclass
class AblationRun:
    """One setting of the ablation: simulated suites, their CPU, and the real footage in both modes."""

    results: dict[str, list[SceneScore]]
    cpu_s: float
    real: list | None  # [uncalibrated, calibrated] ClipScores, None when skipped


def ablation_table(runs: dict[str, AblationRun]) -> str:
    """Physics alone beside physics + verifier: the simulated measures per split, CPU, and real footage."""
    from edge.realbench import real_totals

    labels = list(runs)
    first = runs[labels[0]]
    lines = [f"| split | measure | {' | '.join(labels)} |", "|---|---|" + "---|" * len(labels)]
    for split in first.results:
        totals = {k: summarise(r.results[split]) for k, r in runs.items()}
        for key in ABLATION_KEYS:
            lines.append(f"| {split} | {key} | {' | '.join(_fmt(key, totals[k][key]) for k in labels)} |")
    seconds = sum(s.seconds for sc in first.results.values() for s in sc)
    cpu = " | ".join(f"{r.cpu_s / seconds:.2f}" for r in runs.values())
    lines.append(f"| all | CPU s per s of footage (2 workers, decode included) | {cpu} |")
    if all(r.real is not None for r in runs.values()):
        for mode, name in ((0, "uncalibrated"), (1, "calibrated")):
            t = {k: real_totals(r.real[mode])["all"] for k, r in runs.items()}
            cells = [
                f"{v['neg_events']} / {v['found']} of {v['falls']} / "
                f"{v['pos_extra_confirmed'] + v['pos_extra_suspected']}"
                for v in t.values()
            ]
            lines.append(
                f"| real, {name} | events on negatives / falls found / extra on positives | {' | '.join(cells)} |"
            )
    return "\n".join(lines)


def ablation_section(
    args, splits: list[str], wanted: set[str] | None, overrides: list[str], done: AblationRun
) -> str:
    """The verifier's ablation: the run already made with the config's default, and the other setting."""
    from edge.realbench import run_real

    if not SHIPPED_VERIFIER.exists():
        return f"## Ablation: the learned verifier\n\nSkipped: no model at {SHIPPED_VERIFIER}."
    default_on = VerifierConfig().model is not None
    other_setting = "verifier=off" if default_on else "verifier=on"
    results, cpu = _run_suites(splits, wanted, args.cache, overrides + [other_setting])
    # The real section runs both modes itself (so no facade=none), as in the main run.
    real = None if args.no_real else [run_real(c, None, (args.set or []) + [other_setting]) for c in (False, True)]
    other = AblationRun(results, cpu, real)
    runs = {"physics alone": other, "physics + verifier": done} if default_on else {
        "physics alone": done, "physics + verifier": other}  # fmt: skip
    return (
        "## Ablation: the learned verifier\n\nThe same clips and alert rules with the verifier off and on "
        f"(the config's default is {'on' if default_on else 'off'}). CPU counts the bench's worker processes; "
        "it compares the two settings only when the clips were already rendered.\n\n" + ablation_table(runs)
    )


def run_accuracy(args) -> int:
    """Run the suites (or a subset), print the report, optionally write it; exit 1 when a target is missed."""
    from edge.limitplot import write_limit_plot
    from edge.realbench import real_table, real_targets_met, run_real, scale_override_notes

    wanted = set(args.scenes.split(",")) if args.scenes else None
    overrides = (args.set or []) + (["facade=none"] if args.uncalibrated else [])
    splits = [args.suite] if args.suite else ["tuning", "held_out"]
    t0 = time.time()
    results, cpu = _run_suites(splits, wanted, args.cache, overrides)
    if not results:
        print("no clip of the suites matches --scenes", file=sys.stderr)
        return 2
    _explain(results, wanted, args.cache, overrides)
    totals = {sp: summarise(sc) for sp, sc in results.items()}
    judged = "held_out" if "held_out" in totals else splits[-1]
    parts = ["## Simulated footage, randomised\n", totals_table(totals)]
    for sp, sc in results.items():
        parts += [f"\n### Detection limit, {sp}: recall by contrast-to-noise ratio and width\n", limit_table(sc)]
        parts += [f"\nSigned floor error, {sp}: {floor_errors(sc)}"]
    parts += ["\n### Why throws were missed\n", MISS_INTRO, "", miss_table(results)]
    ok = all(meets(totals[judged]).values())
    if args.markdown and not args.no_plot:
        png = limit_plot_path(args.markdown, args.suite)
        write_limit_plot(png, {sp: limit_cells(sc) for sp, sc in results.items()}, CNR_BINS, WIDTH_BINS)
        parts.append(f"\n![recall by CNR and width]({png.name})")
    real = None
    if not args.no_real:
        notes = scale_override_notes(args.set or [])
        for note in notes:
            print(note, file=sys.stderr)
        real = [run_real(calibrated, None, args.set or []) for calibrated in (False, True)]
        parts += ["", real_table(*real), *(f"\n{n}" for n in notes)]
        ok = ok and real_targets_met(*real)
    if not args.no_ablation:
        parts += ["", ablation_section(args, splits, wanted, overrides, AblationRun(results, cpu, real))]
    for sp, sc in results.items():
        parts += [f"\n## Every clip, {sp}\n", scene_table(sc)]
    report = "\n".join(parts)
    took = f"({time.time() - t0:.0f} s on this machine)"
    header = f"# Accuracy bench\n\nCommand: `{_command()}` {took}\n\n{_intro(judged)}\n\n"
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(header + report + "\n")
    return 0 if ok else 1


# (scene, seed, randomised, label): the plain clips, and busy randomised ones at 1080p25, where every frame
# holds hundreds of blobs (rain, IR grain and insects) and the detector does the most work.
SPEED_SCENES = [
    ("throw", 1, False, "1920x1080"),
    ("4mp", 1, False, "2560x1440"),
    ("night", 1, False, "1920x1080 IR"),
    ("rain_throw", 7, True, "1920x1080 rain, randomised"),
    ("night_busy", 7, True, "1920x1080 IR busy night, randomised"),
]


def run_speed(args) -> int:
    """Replay throughput (decode + detection, no media) per resolution, and the process's peak memory."""
    lines = [
        "| clip | frames | seconds | frames/s | real time at 25 fps | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, seed, randomised, label in SPEED_SCENES:
        folder = Path(args.cache) / f"{name}-{seed}{'-r25' if randomised else ''}"
        if not (folder / "truth.json").exists():
            size = {"width": 1920, "height": 1080, "fps": 25.0} if randomised else {}
            simulate(build_scene(name, seed, randomised=randomised, **size), folder)
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
