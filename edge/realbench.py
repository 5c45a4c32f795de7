"""Real-footage section of the accuracy bench: replay the licensed real clips and score them against labels.

The clips and their labels live in /work/shared/footage (SOURCES.md); the manifest `bench_data/real_footage.yaml`
copies the labels and adds, per clip, the calibration used for the "with a facade calibration" run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edge.bench import worker_pool
from edge.config import load_config
from edge.overrides import OverrideError, apply_overrides, check_overrides, parse_override
from edge.replay import replay

MANIFEST = Path(__file__).with_name("bench_data") / "real_footage.yaml"
FOOTAGE_ENV = "EDGE_FOOTAGE_DIR"
# An event's points may straddle a label by a few frames: labels were read off frame strips by eye.
MATCH_SLACK_FRAMES = 3
# An event matches a fall when at least this share of its trajectory points lie in the widened range.
MATCH_SHARE = 0.5
# The generic calibration a careless installer enters: 20 floors of 3 m fill the frame's height.
GENERIC_FLOORS = 20
GENERIC_FLOOR_M = 3.0
WORKERS = 2  # the bench machine has 2 cores
SPLITS = ("tuning", "held_out")
# Targets for the events on negative clips: none once calibrated, a handful in all without.
NEG_TARGET_CALIBRATED = 0
NEG_TARGET_UNCALIBRATED = 5


@dataclass
class ClipScore:
    """How a replay of one real clip compares with its labels."""

    clip: str
    split: str
    kind: str
    seconds: float
    falls: int = 0
    found: int = 0
    extra_confirmed: int = 0
    extra_suspected: int = 0
    extras: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    frames: int = 0
    expected_frames: int | None = None
    calibrated: bool = False
    error: str | None = None


def load_manifest(path: str | Path | None = None) -> list[dict]:
    """The clip entries of the manifest (the packaged one by default)."""
    data = yaml.safe_load(Path(path or MANIFEST).read_text(encoding="utf-8"))
    return data["clips"]


def footage_dir() -> Path:
    """The folder of real clips: $EDGE_FOOTAGE_DIR, else ../shared/footage beside the repository."""
    env = os.environ.get(FOOTAGE_ENV)
    folder = Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "footage"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"real footage folder not found: looked in {folder}; set {FOOTAGE_ENV} to the folder holding "
            "the clips listed in edge/bench_data/real_footage.yaml"
        )
    return folder


def generic_facade(width: int, height: int) -> dict:
    """The careless installer's facade: the frame spans 0..60 m upward, width in proportion."""
    return rect_facade(width, height, GENERIC_FLOORS * GENERIC_FLOOR_M / height)


def rect_facade(width: int, height: int, m_per_px: float) -> dict:
    """A rectangle mapping at `m_per_px`: image bottom at 0 m, left edge at 0 m along the facade."""
    w, h = width * m_per_px, height * m_per_px
    corners = [((0, 0), (0.0, h)), ((width, 0), (w, h)), ((width, height), (w, 0.0)), ((0, height), (0.0, 0.0))]
    points = [{"image": list(img), "facade": [round(a, 6), round(b, 6)]} for img, (a, b) in corners]
    return {"floor_height_m": GENERIC_FLOOR_M, "ground_floor": 1, "points": points}


def is_calibrated(entry: dict, calibrated: bool) -> bool:
    """Whether this clip runs with a facade in this mode (some positives cannot be represented)."""
    return calibrated and entry.get("calibrated", True)


def camera_settings(entry: dict, calibrated: bool) -> dict:
    """The camera's config mapping: facade and the entry's fall-rule overrides when calibrated."""
    cam: dict = {}
    if not is_calibrated(entry, calibrated):
        return cam
    width, height = entry["resolution"]
    if entry["kind"] == "negative":
        cam["facade"] = generic_facade(width, height)
        return cam
    cam["facade"] = rect_facade(width, height, entry["m_per_px"])
    # Written into the mapping before validation, so the config's bounds are enforced on them.
    for dotted, value in (entry.get("overrides") or {}).items():
        section, _, key = dotted.partition(".")
        cam.setdefault(section, {})[key] = value
    return cam


def write_config(entry: dict, video: Path, folder: Path, calibrated: bool) -> Path:
    """A one-camera config replaying `video`, its storage inside `folder`."""
    cfg = {
        "version": 1,
        "node": {"id": "realbench"},
        # A config's relative paths are its own folder's: storage beside it, the footage (elsewhere) absolute.
        "storage": {"dir": "storage"},
        "cameras": {"real": {"source": str(video.absolute()), **camera_settings(entry, calibrated)}},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def matches(record: dict, frames: tuple[int, int]) -> bool:
    """True when at least half the event's points lie in the fall's frames (widened by the slack), going down."""
    lo, hi = frames[0] - MATCH_SLACK_FRAMES, frames[1] + MATCH_SLACK_FRAMES
    traj = record.get("trajectory") or []
    if not traj:  # no points: fall back on the event's own frame span
        traj = [[record["start_frame"]], [record["end_frame"]]]
    inside = [p for p in traj if lo <= p[0] <= hi]
    if len(inside) < MATCH_SHARE * len(traj):
        return False
    # Labels give frames, not places: an event in those frames must at least move down, as the fall did,
    # so a hand or an object rocking in the bowl at the same moment is not credited as the fall.
    return len(inside[0]) < 3 or inside[-1][2] > inside[0][2]


def _describe(record: dict, entry: dict) -> str:
    """Where an extra event is, e.g. "f120-140 suspected (objects rocking in the bowl)"."""
    text = f"f{record['start_frame']}-{record['end_frame']} {record['level']}"
    for nf in entry.get("not_falls") or []:
        if matches(record, tuple(nf["frames"])):
            return f"{text} ({nf['note']})"
    return text


def score_clip(entry: dict, records: list[dict], seconds: float) -> ClipScore:
    """Falls found, and events matching no labelled fall, for one clip's events."""
    s = ClipScore(entry["file"].removesuffix(".mp4"), entry["split"], entry["kind"], seconds)
    used: set[int] = set()
    for fall in entry.get("falls") or []:
        rng = tuple(fall["frames"])
        hits = [i for i, r in enumerate(records) if matches(r, rng)]
        used.update(hits)  # matching an optional fall is neither credit nor an extra event
        if fall.get("optional"):
            continue
        s.falls += 1
        if hits:
            s.found += 1
        else:
            s.missed.append(f"f{rng[0]}-{rng[1]} ({fall['note']})")
    for i, r in enumerate(records):
        if i in used:
            continue
        if r["level"] == "confirmed":
            s.extra_confirmed += 1
        else:
            s.extra_suspected += 1
        s.extras.append(_describe(r, entry))
    return s


def _run_one(job: tuple[dict, str, bool, list[str]]) -> ClipScore:
    entry, folder, calibrated, overrides = job
    video = Path(folder) / entry["file"]
    with tempfile.TemporaryDirectory(prefix="realbench-") as tmp:
        cfg = load_config(write_config(entry, video, Path(tmp), calibrated))
        apply_overrides(cfg, list(overrides))
        result = replay(video, cfg, None, Path(tmp) / "replay", media=False)
    s = score_clip(entry, result.records, result.frames / result.fps if result.fps else 0.0)
    s.frames, s.expected_frames = result.frames, entry.get("frames")
    s.calibrated = is_calibrated(entry, calibrated)
    s.error = str(result.error) if result.error else None
    return s


def run_real(calibrated: bool, clips: list[str] | None = None, overrides: list[str] = ()) -> list[ClipScore]:
    """Replay the real clips (all, or those named, with or without .mp4) and score each, in manifest order."""
    folder = footage_dir()
    entries = manifest_entries(clips)
    jobs = [(e, str(folder), calibrated, list(overrides)) for e in entries]
    # Biggest files first, so the two workers finish together; results are put back in manifest order.
    order = sorted(range(len(jobs)), key=lambda i: -(folder / entries[i]["file"]).stat().st_size)
    with worker_pool(WORKERS) as pool:
        futures = {i: pool.submit(_run_one, jobs[i]) for i in order}
        return [futures[i].result() for i in range(len(jobs))]


def manifest_entries(clips: list[str] | None = None) -> list[dict]:
    """The manifest's clips (all, or those named, with or without .mp4), in manifest order."""
    wanted = {c.removesuffix(".mp4") for c in clips} if clips else None
    return [e for e in load_manifest() if wanted is None or e["file"].removesuffix(".mp4") in wanted]


def scale_override_notes(overrides: list[str], entries: list[dict] | None = None) -> list[str]:
    """One line per --set that replaces a setting positive clips scale to their own size (a tabletop drop is
    not judged by a facade's fall): with a calibration, those clips then measure it at the wrong scale."""
    entries = manifest_entries() if entries is None else entries
    notes = []
    for text in overrides:
        path = ".".join(parse_override(text).path)
        clips = [e["file"] for e in entries if e["kind"] == "positive" and path in (e.get("overrides") or {})]
        if clips:
            notes.append(
                f"`--set {text}` replaces what {len(clips)} real positive clip(s) set for their own scale "
                f"({', '.join(clips)}): with a calibration, they measure it at the wrong scale."
            )
    return notes


def real_totals(scores: list[ClipScore]) -> dict:
    """Totals per split: events on negatives, falls found, extra events on positives."""
    out = {}
    for split in (*SPLITS, "all"):
        part = [s for s in scores if split == "all" or s.split == split]
        neg = [s for s in part if s.kind == "negative"]
        pos = [s for s in part if s.kind == "positive"]
        out[split] = {
            "neg_clips": len(neg),
            "neg_confirmed": sum(s.extra_confirmed for s in neg),
            "neg_suspected": sum(s.extra_suspected for s in neg),
            "neg_events": sum(s.extra_confirmed + s.extra_suspected for s in neg),
            "falls": sum(s.falls for s in pos),
            "found": sum(s.found for s in pos),
            "pos_extra_confirmed": sum(s.extra_confirmed for s in pos),
            "pos_extra_suspected": sum(s.extra_suspected for s in pos),
        }
    return out


def _mode_table(scores: list[ClipScore], calibrated: bool) -> list[str]:
    """One mode's per-clip table, totals by split, and the notes on misses, extras and frame counts."""
    lines = ["| clip | split | kind | s | falls found | extra conf/susp |", "|---|---|---|---|---|---|"]
    for s in scores:
        falls = f"{s.found}/{s.falls}" if s.kind == "positive" else "-"
        mark = "" if s.calibrated == calibrated else " (uncalibrated)"
        lines.append(
            f"| {s.clip}{mark} | {s.split} | {s.kind} | {s.seconds:.1f} | {falls} "
            f"| {s.extra_confirmed}/{s.extra_suspected} |"
        )
    t = real_totals(scores)
    target = f"none (≤ {NEG_TARGET_CALIBRATED})" if calibrated else f"at most {NEG_TARGET_UNCALIBRATED} in all"
    bound = NEG_TARGET_CALIBRATED if calibrated else NEG_TARGET_UNCALIBRATED
    met = "yes" if t["all"]["neg_events"] <= bound else "NO"
    lines += [
        "",
        "| measure | tuning | held-out | all | target |",
        "|---|---|---|---|---|",
        "| events on negative clips (conf/susp) | "
        + " | ".join(
            f"{t[k]['neg_events']} ({t[k]['neg_confirmed']}/{t[k]['neg_suspected']})" for k in (*SPLITS, "all")
        )
        + f" | {target}: {met} |",
        "| falls found | " + " | ".join(f"{t[k]['found']}/{t[k]['falls']}" for k in (*SPLITS, "all")) + " | all |",
        "| extra events on positive clips (conf/susp) | "
        + " | ".join(f"{t[k]['pos_extra_confirmed']}/{t[k]['pos_extra_suspected']}" for k in (*SPLITS, "all"))
        + " | - |",
    ]
    notes = [f"- {s.clip}: missed {m}" for s in scores for m in s.missed]
    notes += [f"- {s.clip}: extra {', '.join(s.extras)}" for s in scores if s.extras]
    notes += [
        f"- {s.clip}: replayed {s.frames} frames, SOURCES.md lists {s.expected_frames}"
        for s in scores
        if s.expected_frames is not None and s.frames != s.expected_frames
    ]
    notes += [f"- {s.clip}: {s.error}" for s in scores if s.error]
    if notes:
        lines += ["", *notes]
    return lines


def real_table(scores_uncal: list[ClipScore], scores_cal: list[ClipScore]) -> str:
    """The markdown section "## Real footage": one table per mode, with totals by split."""
    lines = [
        "## Real footage",
        "",
        f"An event matches a labelled fall when ≥ {MATCH_SHARE:.0%} of its trajectory points lie in the fall's "
        f"frames ± {MATCH_SLACK_FRAMES}; events on optional falls count neither way; every other event is extra.",
        "",
        "### Without a facade calibration",
        "",
        *_mode_table(scores_uncal, False),
        "",
        "### With a facade calibration",
        "",
        "Negatives: the generic 20 floors × 3 m facade filling the frame. Positives: their own scale, with "
        "the fall rule scaled in proportion (see bench_data/real_footage.yaml).",
        "",
        *_mode_table(scores_cal, True),
    ]
    return "\n".join(lines)


def real_targets_met(scores_uncal: list[ClipScore], scores_cal: list[ClipScore]) -> bool:
    """Every real fall found and none extra in both modes; negatives: none calibrated, a handful without."""
    uncal, cal = real_totals(scores_uncal)["all"], real_totals(scores_cal)["all"]
    falls_ok = all(
        t["found"] == t["falls"] and not t["pos_extra_confirmed"] + t["pos_extra_suspected"] for t in (uncal, cal)
    )
    return (
        falls_ok and cal["neg_events"] <= NEG_TARGET_CALIBRATED and uncal["neg_events"] <= NEG_TARGET_UNCALIBRATED
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.realbench`: run both modes, print the section, optionally write it to a file."""
    ap = argparse.ArgumentParser(prog="python -m edge.realbench", description=__doc__.splitlines()[0])
    ap.add_argument("--clips", help="comma-separated clip names (default: all)")
    ap.add_argument("--set", action="append", default=[], help="section.key=value override on every clip")
    ap.add_argument("--markdown", help="also write the section to this file")
    args = ap.parse_args(argv)
    try:
        check_overrides(args.set)
    except OverrideError as e:
        ap.error(str(e))
    clips = args.clips.split(",") if args.clips else None
    notes = scale_override_notes(args.set, manifest_entries(clips))
    for note in notes:
        print(note, file=sys.stderr)
    runs = []
    for calibrated in (False, True):
        t0 = time.time()
        runs.append(run_real(calibrated, clips, args.set))
        print(f"{'calibrated' if calibrated else 'uncalibrated'}: {time.time() - t0:.0f} s", file=sys.stderr)
    report = "\n".join([real_table(*runs), *(f"\n{n}" for n in notes)])
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
