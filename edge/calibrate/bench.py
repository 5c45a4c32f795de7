"""`edge bench calibration`: how often the proposal puts windows on their right floor, alone and corrected.

Stills come from the project's simulator (randomised look, camera yawed) and from the facade painter in
`synth` (other layouts, poses, resolutions, lighting, noise, JPEG). The installer's answer to "which floor is
the lowest line drawn" is simulated by an oracle that names the true floor nearest to that line; a correction
is one proposal point dragged onto the height it claims, as an installer does when a line is off its slab.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge.calibrate.propose import Grid, NotAFacade, Proposal, detect_grid, line_of
from edge.calibrate.synth import KnownStill, random_layout, random_pose, render_still, sim_still

# Tuned on the first. The second was the held-out suite of the previous version, whose failing stills were
# studied to find what this version fixes; it compares the versions on the same stills. The third was never
# looked at. Seeds 5000-5149 were development stills too (not reported; `--seeds 5000-5149` runs them).
SUITES = {"tuning": range(0, 40), "studied": range(6000, 6200), "held_out": range(7000, 7200)}
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
    roof_true: int | None = None  # the top floor, when the roof is in view (painted stills)
    roof: int | None = None  # the top floor proposed


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


def true_spot(still: KnownStill, prop: Proposal, i: int) -> tuple[float, float]:
    """Where proposal point `i` belongs: its claimed height, at the place along the facade it now shows."""
    inv = np.linalg.inv(still.facade_to_image)
    img, fac = prop.points[i]
    along, _ = cv2.perspectiveTransform(np.array([[img]], np.float64), inv)[0, 0]
    height = fac[1] + (prop.ground_floor - 1) * prop.floor_height_m  # truth counts floors from 1 at 0 m
    new = cv2.perspectiveTransform(np.array([[[along, height]]], np.float64), still.facade_to_image)[0, 0]
    return float(new[0]), float(new[1])


def corrected(still: KnownStill, prop: Proposal, fixes: tuple[int, ...]):
    """The proposal's points with `fixes` dragged, one by one (the page's free drag), where they belong."""
    pts = list(prop.points)
    for i in fixes:
        pts[i] = (true_spot(still, prop, i), pts[i][1])
    return pts


@dataclass(frozen=True)
class Page:
    """What the installer has done on the page: the grid shown (after "too dense/sparse"), the lowest-floor
    answer, proposal points dragged with re-fitting on (image px, line), then points dragged one by one."""

    grid: Grid
    lowest: int
    placed: tuple[tuple[int, tuple[float, float], int], ...] = ()  # (point, image px, its floor line)
    fixes: tuple[int, ...] = ()
    rescaled: bool = False

    def proposal(self, floor_h: float) -> Proposal:
        return self.grid.refit([(img, k) for _, img, k in self.placed]).calibration(floor_h, self.lowest)


def evaluate(seed: int) -> Result:
    still, source = make_still(seed)
    h, w = still.image.shape[:2]
    res = Result(seed, source, (w, h), len(still.windows))
    res.roof_true = still.top_floor
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
            # No storeys at all, but the facade's plane: the installer marks two floor lines and types their
            # floor numbers, two corrections.
            res.right += [0, _marked_score(still)]
            return res
        res.right += _corrected_scores(still, weak, MAX_CORRECTIONS - 1)
        return _or_marked(still, res)
    res.seconds = time.perf_counter() - t
    res.roof = grid.calibration(still.floor_h, oracle_lowest_floor(still, grid)).top_floor
    res.right = _corrected_scores(still, grid, MAX_CORRECTIONS)
    return _or_marked(still, res)


def _or_marked(still: KnownStill, res: Result) -> Result:
    """Two floor lines marked by hand are two corrections on any still: taken when they do better."""
    if res.right[-1] < res.windows and MAX_CORRECTIONS >= 2:
        res.right[2] = max(res.right[2], _marked_score(still))
        res.right[3:] = [max(v, res.right[2]) for v in res.right[3:]]
    return res


def floor_line_marks(still: KnownStill) -> list[tuple[tuple[float, float], int]]:
    """What an installer marks on a still without storeys found: the bottom line of the lowest and of the
    highest floor with windows in view, each tapped above the middle window and typed with its number."""
    inv = np.linalg.inv(still.facade_to_image)
    floors = [f for f, _, _ in still.windows]
    marks = []
    for floor in (min(floors), max(floors)):
        xy = np.array([[[x, y] for f, x, y in still.windows if f == floor]], np.float64)
        along = float(np.median(cv2.perspectiveTransform(xy, inv)[0, :, 0]))
        at = cv2.perspectiveTransform(np.array([[[along, (floor - 1) * still.floor_h]]]), still.facade_to_image)
        marks.append(((float(at[0, 0, 0]), float(at[0, 0, 1])), floor))
    return marks


def _marked_score(still: KnownStill) -> int:
    """Windows right once two floor lines are marked on the facade's plane, or 0 without one."""
    try:
        plane = detect_grid(still.image, geometry_only=True)
        grid, lowest = plane.through(floor_line_marks(still))
    except NotAFacade:
        return 0
    prop = grid.calibration(still.floor_h, lowest)
    return right_floors(still, prop.image_to_facade, prop.floor_height_m, prop.ground_floor)


def _score(still: KnownStill, page: Page) -> int:
    try:
        prop = page.proposal(still.floor_h)
    except NotAFacade:
        return -1
    h_img = _homography(corrected(still, prop, page.fixes)) if page.fixes else prop.image_to_facade
    return right_floors(still, h_img, prop.floor_height_m, prop.ground_floor)


def _corrected_scores(still: KnownStill, grid: Grid, budget: int) -> list[int]:
    """Windows right with the proposal, then after each of `budget` corrections (the most helpful first)."""
    page = Page(grid, oracle_lowest_floor(still, grid))
    best = _score(still, page)
    out = [best]
    for _ in range(budget):
        options = [(best, page)] + [(_score(still, nxt), nxt) for nxt in _next_pages(still, page)]
        best, page = max(options, key=lambda o: o[0])
        out.append(best)
    return out


def _next_pages(still: KnownStill, page: Page):
    """Every single correction the page offers: drag one proposal point where it belongs (re-fitting the grid
    while no point was moved alone, or alone), or (once, first) "lines too dense/sparse" with the lowest-floor
    question answered again for the new lines."""
    prop = page.proposal(still.floor_h)
    placed = {i for i, _, _ in page.placed}
    for i in range(len(prop.points)):
        if not page.fixes and i not in placed:
            yield replace(page, placed=(*page.placed, (i, true_spot(still, prop, i), line_of(prop, i))))
        if i not in page.fixes:
            yield replace(page, fixes=(*page.fixes, i))
    if page.rescaled or page.fixes or page.placed:
        return
    for factor in PERIOD_FIXES:
        try:
            g = page.grid.rescaled(factor)
        except NotAFacade:
            continue
        yield Page(g, oracle_lowest_floor(still, g), rescaled=True)


EXAMPLE_SEED = 6191  # a far paired-window block behind trees the previous version refused (studied suite)


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


def _machine() -> str:
    """The CPU and its cores, as the benchmark pages name the machine they ran on."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


METHOD = """# Facade calibration: how often the proposal puts windows on their floor

Written by `edge bench calibration --markdown docs/benchmarks/calibration.md` ({machine}; {minutes:.0f} minutes,
sharing the machine with other work).

**Stills.** Every third still is frame 0 of the project's simulator (`edge.sim`, randomised scenes `throw`,
`tiny`, `birds`, `night`: resolution, noise, tone, blur, lens effects drawn from the seed) with the camera
yawed by up to ±30°. The others come from the facade painter in `edge/calibrate/synth.py`, which draws
buildings the simulator never does: 12–34 storeys of 2.8–3.6 m, bays of 3–4.5 m, four styles (a plain grid,
balconies with railing bands, continuous ribbon windows with no columns, paired windows), slab bands that
are darker, lighter or absent, air conditioners and laundry between floors; seen from 12–60 m with a
45–100° lens, anywhere along the facade, yawed up to ±35°, rolled up to ±5°, roof in or out of view, at
704x576, 1280x720, 1280x960, 1920x1080 or 2560x1440, under random sky, gain, gamma, vignette, blur, noise,
tree crowns in front of the lower floors and JPEG at quality 40–95. A pose showing fewer than 20 windows
is drawn again (nobody mounts a camera like that). The painted building stands alone in the sky: below
its first floor and beside it there is sky, not a street, a podium or the next block (easier than a real
site for finding where the facade ends, harder for a far building that fills little of the frame).

**Scored.** Every visible window's centre is put through the proposed calibration; it is right when it
lands in its true floor. The installer's answer to "which floor is the lowest line drawn" is simulated:
the true floor whose bottom is nearest that line. A **correction** is one thing done on the page: drag one
proposed point onto the floor line its number claims (kept where it is along the facade) — while the
points are the proposal's, the page re-fits the storey height (or, for a point on the lowest line, moves
every line with it) from that one drag, and with "re-fit" unticked, or after any other edit, only that
point moves and the homography is fitted to the four; or tap "lines too dense/sparse" once (and answer the
lowest-floor question again); or mark a floor line: tap it and type the number of the floor whose bottom
it is (with two floors marked the storeys follow from them, on the vanishing geometry found, so two marks
are two corrections; the installer is assumed to count floors as right as the lowest-floor answer: the
bottom lines of the lowest and highest floors with windows in view, above the middle window). After each,
the one that helps most is taken. A still the proposal refuses counts as 0% right alone; when the storeys
repeat faintly the page still offers them as a low-confidence guess, and taking it counts as the first
correction; when they do not repeat at all but the facade's plane is found, the page asks for two floor
lines (a still without even a plane stays 0%: four points typed by hand are more than two corrections).

**Suites.** `tuning` (seeds 0–39) is what the proposal was developed on. Earlier versions were each
measured once on a suite they had never seen (1000–1199: 88.0% alone, 94.2% after two corrections;
2000–2199: 93.2%, 96.0%; 3000–3199: 91.9%, 95.5%; 4000–4199: 94.9%, 96.0%, and 96.1%, 100.0% by the next
version, which had read its failing seeds; 6000–6199: 95.6%, 97.6%). This version was developed on the
tuning suite and on seeds 5000–5149 (not reported; `--seeds 5000-5149` runs them); `studied` is the
previous version's held-out suite 6000–6199, whose failing stills were studied to find what this version
fixes, for a comparison on the same stills; `held_out` (7000–7199) is new to this version.

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
    lines += _roof_table(held)
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


def _roof_table(rs: list[Result]) -> list[str]:
    """How often the roof line (top_floor) is proposed on the right floor, on painted stills."""
    painted = [r for r in rs if r.source.startswith("synth:") and r.refused is None]
    seen = [r for r in painted if r.roof_true is not None]
    right = sum(r.roof == r.roof_true for r in seen)
    off = sum(r.roof is not None and r.roof != r.roof_true for r in seen)
    unseen = [r for r in painted if r.roof_true is None]
    false = sum(r.roof is not None for r in unseen)
    return [
        "",
        "Roof line (`top_floor`) proposed, held-out painted stills not refused:",
        "",
        "| roof in view | stills | proposed on the right floor | on another floor | not proposed |",
        "|---|---|---|---|---|",
        f"| yes | {len(seen)} | {right} | {off} | {len(seen) - right - off} |",
        f"| no | {len(unseen)} | – | {false} (a roof where there is none) | {len(unseen) - false} |",
    ]


def seed_range(text: str) -> range:
    """`--seeds FIRST-LAST` (both included) as a range; ValueError says what is wrong."""
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit() or int(last) < int(first):
        raise ValueError(f"--seeds wants FIRST-LAST, e.g. 5000-5149 (got {text!r})")
    return range(int(first), int(last) + 1)


def run_bench(args) -> int:
    """Run the suites (all, --suite, or --seeds), print the report, write it to --markdown when given."""
    suites = dict(SUITES)
    names = [args.suite] if getattr(args, "suite", None) in SUITES else list(SUITES)
    if getattr(args, "seeds", None):
        try:
            suites = {"seeds": seed_range(args.seeds)}
        except ValueError as exc:
            print(f"edge bench calibration: {exc}", file=sys.stderr)
            return 64
        names = ["seeds"]
    started = time.perf_counter()
    results = {}
    for name in names:
        rs = []
        for seed in suites[name]:
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
        picture = f"![a painted facade with its proposed floor lines]({example.name})"
        minutes = (time.perf_counter() - started) / 60
        text = METHOD.format(machine=_machine(), minutes=minutes) + picture + "\n\n" + text
        md.write_text(text, encoding="utf-8")
    held = results.get("held_out")
    if not held:
        return 0
    n = sum(r.windows for r in held)
    alone, fixed = sum(r.right[0] for r in held) / n, sum(r.right[-1] for r in held) / n
    return 0 if alone >= 0.9 and fixed >= 0.99 else 1
