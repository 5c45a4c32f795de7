"""`edge bench calibration`: how often the proposal puts windows on their right floor, alone and corrected.

Stills come from the project's simulator (randomised look, camera yawed) and from the facade painter in
`synth` (other layouts, poses, resolutions, lighting, noise, JPEG). The installer's answer to "which floor is
the lowest line drawn" is simulated by an oracle that names the true floor nearest to that line; a correction
is one proposal point dragged onto the height it claims, as an installer does when a line is off its slab.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.calibrate.propose import Grid, NotAFacade, Proposal, detect_grid
from edge.calibrate.synth import KnownStill, random_layout, random_pose, render_still, sim_still

# Tuned on the first. The second was the held-out suite of the previous version; its failures were then looked
# at (and led to the low-confidence guess), so it is reported as "studied". The third was never looked at.
SUITES = {"tuning": range(0, 40), "studied": range(3000, 3200), "held_out": range(4000, 4200)}
SIM_SCENES = ["throw", "tiny", "birds", "night"]
SIM_SHARE = 3  # every third still comes from the project's simulator
MAX_CORRECTIONS = 2
MIN_WINDOWS = 20  # a camera watching a facade sees at least this many of its windows
PERIOD_FIXES = (0.5, 2.0)  # the page's "lines too sparse / too dense" buttons


@dataclass
class Result:
    seed: int
    source: str  # "sim:<scene>" or "synth:<style>"
    size: tuple[int, int]
    windows: int
    right: list[int] = field(default_factory=list)  # windows on the right floor after 0, 1, 2 corrections
    refused: str | None = None
    seconds: float = 0.0


def make_still(seed: int) -> tuple[KnownStill, str]:
    """The still of a seed; a pose showing fewer than MIN_WINDOWS windows is drawn again (no one installs that)."""
    rng = np.random.default_rng(seed)
    if seed % SIM_SHARE == 0:
        scene = SIM_SCENES[(seed // SIM_SHARE) % len(SIM_SCENES)]
        yaw = float(rng.uniform(-30, 30))
        still = sim_still(scene, seed, yaw)
        while len(still.windows) < MIN_WINDOWS and abs(yaw) > 1:
            yaw /= 2
            still = sim_still(scene, seed, yaw)
        return still, f"sim:{scene}"
    layout = random_layout(rng)
    for _ in range(20):
        still = render_still(layout, random_pose(rng, layout), seed)
        if len(still.windows) >= MIN_WINDOWS:
            break
    return still, f"synth:{layout.style}"


def oracle_lowest_floor(still: KnownStill, grid: Grid) -> int:
    """The installer's answer: the true floor whose bottom is nearest the lowest line drawn."""
    line = grid.calibration(still.floor_h, 1).floor_lines[0]
    mid = np.mean(line.ends, axis=0)
    return int(round(still.true_height([mid])[0] / still.floor_h)) + 1


def right_floors(still: KnownStill, image_to_facade: np.ndarray, floor_h: float, ground: int) -> int:
    pts = np.array([[x, y] for _, x, y in still.windows], np.float64).reshape(-1, 1, 2)
    fac = cv2.perspectiveTransform(pts, image_to_facade).reshape(-1, 2)
    floors = ground + np.floor(fac[:, 1] / floor_h).astype(int)
    return int((floors == np.array([f for f, _, _ in still.windows])).sum())


def _homography(points) -> np.ndarray:
    img = np.array([p for p, _ in points], np.float64)
    fac = np.array([f for _, f in points], np.float64)
    return cv2.findHomography(img, fac, 0)[0]


def corrected(still: KnownStill, prop: Proposal, fixes: tuple[int, ...]):
    """The proposal's points with `fixes` dragged to where their claimed facade height truly is."""
    inv = np.linalg.inv(still.facade_to_image)
    pts = list(prop.points)
    for i in fixes:
        img, fac = pts[i]
        along, _ = cv2.perspectiveTransform(np.array([[img]], np.float64), inv)[0, 0]
        height = fac[1] + (prop.ground_floor - 1) * prop.floor_height_m  # truth counts floors from 1 at 0 m
        new = cv2.perspectiveTransform(np.array([[[along, height]]], np.float64), still.facade_to_image)[0, 0]
        pts[i] = ((float(new[0]), float(new[1])), fac)
    return pts


def evaluate(seed: int) -> Result:
    still, source = make_still(seed)
    h, w = still.image.shape[:2]
    res = Result(seed, source, (w, h), len(still.windows))
    t = time.perf_counter()
    try:
        grid = detect_grid(still.image)
    except NotAFacade as exc:
        res.refused, res.right = str(exc), [0]
        res.seconds = time.perf_counter() - t
        # The page still offers a faint grid as a low-confidence start; taking it is the first correction.
        try:
            weak = detect_grid(still.image, allow_weak=True)
        except NotAFacade:
            res.right += [0] * MAX_CORRECTIONS
            return res
        res.right += _corrected_scores(still, weak, MAX_CORRECTIONS - 1)
        return res
    res.seconds = time.perf_counter() - t
    res.right = _corrected_scores(still, grid, MAX_CORRECTIONS)
    return res


def _corrected_scores(still: KnownStill, grid: Grid, budget: int) -> list[int]:
    """Windows right with the proposal, then after each of `budget` corrections (the most helpful first)."""
    prop = grid.calibration(still.floor_h, oracle_lowest_floor(still, grid))
    best = right_floors(still, prop.image_to_facade, prop.floor_height_m, prop.ground_floor)
    out = [best]
    state = (prop, (), False)  # the proposal, points dragged, storey height already halved or doubled
    for _ in range(budget):
        options = [(best, state)]
        for nxt in _next_states(still, grid, *state):
            p, fixes, _ = nxt
            h_img = _homography(corrected(still, p, fixes))
            options.append((right_floors(still, h_img, p.floor_height_m, p.ground_floor), nxt))
        best, state = max(options, key=lambda o: o[0])
        out.append(best)
    return out


def _next_states(still: KnownStill, grid: Grid, prop: Proposal, fixes: tuple[int, ...], rescaled: bool):
    """Every single correction an installer can make on the page: drag one more point, or (once) press
    "lines too dense/sparse" and answer the lowest-floor question again for the new lines."""
    for i in range(len(prop.points)):
        if i not in fixes:
            yield prop, (*fixes, i), rescaled
    if rescaled or fixes:
        return
    for factor in PERIOD_FIXES:
        try:
            g = grid.rescaled(factor)
        except NotAFacade:
            continue
        yield g.calibration(still.floor_h, oracle_lowest_floor(still, g)), (), True


EXAMPLE_SEED = 4001  # a held-out painted facade


def draw_example(seed: int, path: Path) -> None:
    """A still with the proposal's numbered floor lines, as the page draws them, for the benchmark page."""
    still, _ = make_still(seed)
    image = still.image.copy()
    try:
        grid = detect_grid(still.image)
    except NotAFacade:
        cv2.imwrite(str(path), image)
        return
    prop = grid.calibration(still.floor_h, oracle_lowest_floor(still, grid))
    k = image.shape[1] / 960
    for line in prop.floor_lines:
        a, b = (tuple(int(round(v)) for v in end) for end in line.ends)
        cv2.line(image, a, b, (0, 212, 255), max(1, round(2 * k)), cv2.LINE_AA)
        # A black outline under the coloured label, so it reads on any facade.
        for colour, thickness in (((0, 0, 0), max(2, round(3 * k))), ((0, 212, 255), max(1, round(k)))):
            at = (a[0] + 4, a[1] - 4)
            cv2.putText(
                image, f"{line.floor}F", at, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * k, colour, thickness, cv2.LINE_AA
            )
    h, w = image.shape[:2]
    small = cv2.resize(image, (960, round(960 * h / w)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, 85])


def real_footage() -> list[tuple[str, str]]:
    """What the proposal says about the first frame of each licensed real clip (none is a facade from below)."""
    from edge.calibrate.still import StillError, take_still
    from edge.realbench import footage_dir  # $EDGE_FOOTAGE_DIR, else ../shared/footage, as the other benches

    try:
        folder = footage_dir()
    except FileNotFoundError as exc:
        print(f"edge bench calibration: no real footage: {exc}", file=sys.stderr)
        return []
    out = []
    for clip in sorted(folder.glob("*.mp4")):
        try:
            image = take_still(str(clip)).image
            g = detect_grid(image)
            out.append((clip.name, f"proposed: {g.lines} floor lines, repeat {g.strength:.2f}"))
        except NotAFacade as exc:
            out.append((clip.name, f"refused: {exc}"))
        except StillError as exc:
            out.append((clip.name, f"unreadable: {exc}"))
    return out


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


METHOD = """# Facade calibration: how often the proposal puts windows on their floor

Written by `edge bench calibration --markdown docs/benchmarks/calibration.md` (2 cores, about 8 minutes).

**Stills.** Every third still is frame 0 of the project's simulator (`edge.sim`, randomised scenes `throw`,
`tiny`, `birds`, `night`: resolution, noise, tone, blur, lens effects drawn from the seed) with the camera
yawed by up to ±30°. The others come from the facade painter in `edge/calibrate/synth.py`, which draws
buildings the simulator never does: 12–34 storeys of 2.8–3.6 m, bays of 3–4.5 m, four styles (a plain grid,
balconies with railing bands, continuous ribbon windows with no columns, paired windows), slab bands that
are darker, lighter or absent, air conditioners and laundry between floors; seen from 12–60 m with a
45–100° lens, anywhere along the facade, yawed up to ±35°, rolled up to ±5°, roof in or out of view, at
704x576, 1280x720, 1280x960, 1920x1080 or 2560x1440, under random sky, gain, gamma, vignette, blur, noise,
tree crowns in front of the lower floors and JPEG at quality 40–95. A pose showing fewer than 20 windows
is drawn again (nobody mounts a camera like that).

**Scored.** Every visible window's centre is put through the proposed calibration; it is right when it
lands in its true floor. The installer's answer to "which floor is the lowest line drawn" is simulated:
the true floor whose bottom is nearest that line. A **correction** is one thing done on the page: drag a
proposed point onto the height it claims (kept where it is along the facade), or tap "lines too
dense/sparse" once (and answer the lowest-floor question again); after each, the one that helps most is
taken. A still the proposal refuses counts as 0% right alone; when the storeys repeat faintly the page still
offers them as a low-confidence guess, and taking it counts as the first correction (a refusal without a
guess stays 0%: adding four points by hand is more than two corrections).

**Suites.** `tuning` (seeds 0–39) is what the proposal was developed on. Each version was then measured once
on a suite it had never seen, whose failures were studied before the next: seeds 1000–1199 for the first
version (88.0% of windows right alone, 94.2% after two corrections: nearly all misses were half or double
storeys, fixed by the brightness test and the vanishing-point refinement); 2000–2199 for the second (93.2%
alone, 96.0% after two: faint facades were refused, now offered as a low-confidence guess); 3000–3199 for
the third (91.9% alone, 95.5% after two: paired windows still taken for half storeys when the brightness
had a slow gradient, now removed, and when only one period was a candidate, now checked too). That last
suite is reported below as `studied`; `held_out` (4000–4199) is new to this version.

"""


def report(results: dict[str, list[Result]], real: list[tuple[str, str]]) -> str:
    lines = [
        "| suite | stills | windows | refused | right floor, proposal alone | after ≤1 correction | after ≤2 |"
        " stills ≥90% alone | median s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in results.items():
        n = sum(r.windows for r in rs)
        right = [sum(r.right[k] for r in rs) for k in range(MAX_CORRECTIONS + 1)]
        good = sum(r.windows and r.right[0] / r.windows >= 0.9 for r in rs)
        med = float(np.median([r.seconds for r in rs]))
        refused = sum(r.refused is not None for r in rs)
        cells = " | ".join(_pct(x, n) for x in right)
        lines.append(f"| {name} | {len(rs)} | {n} | {refused} | {cells} | {_pct(good, len(rs))} | {med:.2f} |")
    lines += ["", "By source (held-out suite):", "", "| source | stills | refused | alone | ≤1 | ≤2 |"]
    lines += ["|---|---|---|---|---|---|"]
    held = results.get("held_out", [])
    for source in sorted({r.source for r in held}):
        rs = [r for r in held if r.source == source]
        n = sum(r.windows for r in rs)
        cells = " | ".join(_pct(sum(r.right[k] for r in rs), n) for k in range(MAX_CORRECTIONS + 1))
        lines.append(f"| {source} | {len(rs)} | {sum(r.refused is not None for r in rs)} | {cells} |")
    lines += ["", "By resolution (held-out suite):", "", "| size | stills | alone | ≤2 |", "|---|---|---|---|"]
    for size in sorted({r.size for r in held}):
        rs = [r for r in held if r.size == size]
        n = sum(r.windows for r in rs)
        lines.append(
            f"| {size[0]}x{size[1]} | {len(rs)} | {_pct(sum(r.right[0] for r in rs), n)} | "
            f"{_pct(sum(r.right[-1] for r in rs), n)} |"
        )
    # Every suite's, so each row says which it came from (the tables above are the held-out suite's only);
    # a still with every window on its floor is not among the worst.
    imperfect = [(name, r) for name, rs in results.items() for r in rs if r.right[-1] < r.windows]
    worst = sorted(imperfect, key=lambda nr: nr[1].right[-1] / max(nr[1].windows, 1))[:12]
    lines += ["", "Worst stills after two corrections, of every suite:", ""]
    lines += ["| suite | seed | source | size | alone | ≤2 | why |", "|---|---|---|---|---|---|---|"]
    for name, r in worst:
        why = r.refused or ""
        lines.append(
            f"| {name} | {r.seed} | {r.source} | {r.size[0]}x{r.size[1]} | {_pct(r.right[0], r.windows)} | "
            f"{_pct(r.right[-1], r.windows)} | {why} |"
        )
    if real:
        lines += [
            "",
            "Real footage (first frame of each licensed clip in $EDGE_FOOTAGE_DIR, else ../shared/footage; "
            "none shows a facade from below):",
            "",
            "| clip | proposal |",
            "|---|---|",
        ]
        lines += [f"| {name} | {what} |" for name, what in real]
    return "\n".join(lines) + "\n"


def run_bench(args) -> int:
    """Run the suites (all, or --suite), print the report, write it to --markdown when given."""
    names = [args.suite] if getattr(args, "suite", None) in SUITES else list(SUITES)
    results = {}
    for name in names:
        rs = []
        for seed in SUITES[name]:
            rs.append(evaluate(seed))
            r = rs[-1]
            print(
                f"{name} {r.seed:5d} {r.source:16s} {r.size[0]}x{r.size[1]} windows {r.windows:4d} right "
                f"{r.right} {r.refused or ''}",
                flush=True,
            )
        results[name] = rs
    real = [] if getattr(args, "no_real", False) else real_footage()
    text = report(results, real)
    print(text)
    if args.markdown:
        md = Path(args.markdown)
        example = md.with_name(md.stem + "-example.jpg")
        draw_example(EXAMPLE_SEED, example)
        picture = f"![a held-out painted facade with its proposed floor lines]({example.name})"
        text = METHOD + picture + "\n\n" + text
        md.write_text(text, encoding="utf-8")
    held = results.get("held_out")
    if not held:
        return 0
    n = sum(r.windows for r in held)
    alone, fixed = sum(r.right[0] for r in held) / n, sum(r.right[-1] for r in held) / n
    return 0 if alone >= 0.9 and fixed >= 0.99 else 1
