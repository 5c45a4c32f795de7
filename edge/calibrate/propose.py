"""The automatic proposal: the facade's storey grid found in one still, turned into a facade calibration.

Steps: line segments (LSD); the vanishing points of the facade's verticals and horizontals (RANSAC; for the
horizontals also the point the rows of horizontal-edge pixels line up towards, which far buildings with tiny
windows need), the vertical one then moved until the floor lines are evenly spaced (or found from that
spacing alone when the view has no usable verticals); a rectification that sends both to infinity, in which
facade height is an affine function of one coordinate; the period of the horizontal lines and
horizontal-edge pixels along that height (autocorrelation, in the share of the height where they repeat
best, with the facade's brightness ruling out half a storey) is one storey, and where their edges end
against the sky is the roof. The installer's two answers (storey height, number of the
lowest floor line drawn) fix the scale and the numbering; points the installer drags re-fit the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from edge.calibrate.period import SPANS, WHOLE, Periodicity, find_period, phase_of, regularity
from edge.calibrate.vanish import (
    INLIER_DEG,
    WORK_WIDTH,
    RowPixels,
    Segments,
    VanishingPoint,
    agreement,
    find_segments,
    focal_from_vps,
    ransac_vp,
    split_families,
)

DEFAULT_HFOV_DEG = 70.0  # assumed when the view hides the focal length (no yaw): only the metres along change
FOCAL_RANGE_HFOV_DEG = (15.0, 130.0)  # a focal length from vanishing points outside this is noise
MIN_FAMILY_SUPPORT = 0.4  # summed inlier length (half image widths) per direction: two long building edges
MIN_STRENGTH = 0.3  # autocorrelation at the storey period below this: no repeating storeys
WEAK_STRENGTH = 0.15  # from here to MIN_STRENGTH the page may still offer the grid, marked low-confidence
MIN_FLOOR_LINES = 5  # a camera watching for throws sees many storeys; fewer lines repeat by chance
ROWS_SHARPER = 1.15  # the rows' vanishing point is tried first when they line up this much more sharply there
MIN_VP_SEPARATION_DEG = 30.0  # the two directions must differ this much at the image centre
SPACING_SEARCH = np.linspace(-3.0, 0.5, 71)  # 1/height of the vanishing line on the vertical axis: steep tilt
# up (-3) to a camera looking slightly down (0.5), in half image widths
SPACING_MARGIN = 1.2  # the spacing search's storeys replace the measured verticals' only when this much stronger
REFINE_STEPS = np.linspace(-0.12, 0.12, 25)  # around the vanishing line the vertical edges give
TONE_SAMPLES = 200_000  # pixels sampled for the brightness profile: every storey gets hundreds at 4 MP
EDGE_PIXELS = 30_000  # the strongest horizontal-edge pixels kept: every storey of a 4 MP facade gets hundreds
EDGE_NOISE = 4.0  # an edge pixel's gradient is this many times the still's median one: not sky or wall grain
EDGE_ANISOTROPY = 2.0  # and it runs within about 27 degrees of the horizontal direction at that pixel
MIN_LINE_SEGMENTS = 20  # fewer horizontal segments cannot say how far the storeys reach: edge pixels do
EDGE_SHARE = 0.05  # the corner points sit this share of the structure's width inside its ends
REFIT_RANGE = (0.2, 5.0)  # a storey height the installer's points change more than this is a misplaced point
ROOF_SEARCH_ABOVE = 3  # the roof is at most this many storeys above the highest line drawn (percentile range)
ROOF_STEP = 0.05  # of a storey: the step of the search for where the edges stop
ROOF_SKY = 1.5  # of a storey: this much empty height above the roof (sky, or beyond the frame's edge)
ROOF_SKY_SEEN = 0.4  # of which at least this much in the picture
ROOF_EMPTY = 0.1  # "empty": this share of a typical storey's edges for its height, or less
ROOF_FULL = 0.5  # the storey under the roof holds at least this share of a typical storey's edges
ROOF_INTO_STOREY = 0.375  # the storey the edges end in is the top floor once they reach this far into it:
# they end below the true roof more often than above (top windows, a parapet of the sky's tone); a share
# between two ROOF_STEPs, so a library's rounding cannot tip a roof found exactly halfway (studied 6000-6199)


class NotAFacade(ValueError):
    """The still shows no facade grid the proposal can use; the message says what was missing."""


@dataclass(frozen=True)
class FloorLine:
    floor: int  # the floor whose bottom this line is
    ends: tuple[tuple[float, float], tuple[float, float]]  # image pixels, left and right end


@dataclass
class Grid:
    """The storey grid found in a still, before the installer's answers: heights in storeys, along in units."""

    image_size: tuple[int, int]
    image_to_units: np.ndarray  # pixels -> (along, up) in the rectified frame
    period: float  # one storey, in units
    phase: float  # the lowest floor line drawn is at this height in units
    lines: int  # floor lines drawn
    along: list[tuple[float, float]]  # for each line: the along range of the structure seen on it, in units
    strength: float
    focal_px: float
    focal_known: bool
    column_period: float | None = None  # window bays, in units, when they repeat clearly
    heights: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # ys, xs, weights
    weak: str | None = None  # why this grid would have been refused, when detect_grid(allow_weak=True) kept it
    roof: float | None = None  # height in units where the facade's edges end against the sky, when in view
    storeys_found: bool = True  # False: only the facade's plane was found (detect_grid(geometry_only=True))

    def rescaled(self, factor: float) -> Grid:
        """The grid with the storey `factor` times as tall: the installer's fix for lines twice too dense (2)
        or too sparse (0.5)."""
        if self.heights is None or factor == 1:
            return self
        ys, xs, wts = self.heights
        period = self.period * factor
        per = Periodicity(period, phase_of(ys, wts, period), self.strength)
        lines, along = _floor_lines(per, ys, xs, wts)
        if len(lines) < MIN_FLOOR_LINES:
            raise NotAFacade(f"with storeys {factor:g} times as tall only {len(lines)} floor lines are in view")
        return replace(self, period=period, phase=lines[0], lines=len(lines), along=along)

    def refit(self, placed: list[tuple[tuple[float, float], int]]) -> Grid:
        """The grid with its storey height and lowest line moved to points the installer placed: (image px,
        index of the floor line it is on). One point on the lowest line moves every line with it; one on
        another line sets the storey height; two lines set both. The vanishing geometry stays."""
        if not placed:
            return self
        by_line: dict[int, list[float]] = {}
        for (x, y), k in placed:
            by_line.setdefault(k, []).append(float(_apply(self.image_to_units, [[x, y]])[0, 1]))
        ks = np.array(sorted(by_line), float)
        us = np.array([np.mean(by_line[int(k)]) for k in ks])
        period, phase = self.period, self.phase
        if len(ks) >= 2:
            period, phase = np.polyfit(ks, us, 1)
        elif ks[0] == 0:
            phase = us[0]
        else:
            period = (us[0] - phase) / ks[0]
        if not REFIT_RANGE[0] <= period / self.period <= REFIT_RANGE[1]:
            raise NotAFacade(
                f"the points placed make a storey {period / self.period:.2f} times the one found: "
                "place each point on the floor line its number says"
            )
        return replace(self, period=float(period), phase=float(phase))

    def through(self, marks: list[tuple[tuple[float, float], int]]) -> tuple[Grid, int]:
        """The grid through floor lines the installer marked: (image px on the line, number of the floor whose
        bottom it is), on two floors or more; and the number of the lowest line it then draws."""
        by_floor: dict[int, list[float]] = {}
        for (x, y), floor in marks:
            by_floor.setdefault(int(floor), []).append(float(_apply(self.image_to_units, [[x, y]])[0, 1]))
        if len(by_floor) < 2:
            raise NotAFacade("mark a second floor line, on another floor: two floors give the storey height")
        floors = np.array(sorted(by_floor), float)
        us = np.array([np.mean(by_floor[int(f)]) for f in floors])
        period, at_zero = np.polyfit(floors, us, 1)  # the height of floor f's bottom line is at_zero + f * period
        if period <= 0:
            raise NotAFacade("the floor lines marked are in the wrong order: a higher floor must be marked higher")
        if self.heights is None:
            raise NotAFacade("no floor lines to draw")
        ys, xs, wts = self.heights
        lines, along = _floor_lines(Periodicity(float(period), float(at_zero % period), 0.0), ys, xs, wts)
        if len(lines) < 2:
            raise NotAFacade("the marked floor lines leave fewer than two floor lines in view")
        lowest = round((lines[0] - at_zero) / period)
        grid = replace(
            self, period=float(period), phase=lines[0], lines=len(lines), along=along, storeys_found=True
        )
        return grid, int(lowest)

    def calibration(
        self, floor_height_m: float = 3.0, lowest_floor: int = 1, bay_width_m: float | None = None
    ) -> Proposal:
        """The facade calibration for the installer's answers: storey height, number of the lowest line drawn."""
        sy = floor_height_m / self.period
        sx = sy
        top_floor = None
        if self.roof is not None:  # the highest storey the facade's edges reach far enough into
            top = lowest_floor + math.ceil((self.roof - self.phase) / self.period - ROOF_INTO_STOREY) - 1
            top_floor = top if top >= max(1, lowest_floor) else None
        if bay_width_m is not None and self.column_period is not None:
            sx = bay_width_m / self.column_period
        ground = min(1, lowest_floor)
        y0 = (lowest_floor - ground) * floor_height_m
        x0 = min(a for a, _ in self.along)
        to_metres = np.array([[sx, 0, -sx * x0], [0, sy, y0 - sy * self.phase], [0, 0, 1.0]])
        h = to_metres @ self.image_to_units
        hinv = np.linalg.inv(h)
        lines, points = [], []
        for k, (a, b) in enumerate(self.along):
            y = y0 + k * floor_height_m
            ends = _apply(hinv, [[sx * (a - x0), y], [sx * (b - x0), y]])
            lines.append(FloorLine(lowest_floor + k, (_pair(ends[0]), _pair(ends[1]))))
        for k in (0, self.lines - 1):
            a, b = self.along[k]
            inset = EDGE_SHARE * (b - a)
            for u in (a + inset, b - inset) if k == 0 else (b - inset, a + inset):
                fac = (round(float(sx * (u - x0)), 2), round(float(y0 + k * floor_height_m), 2))
                img = _apply(hinv, [fac])[0]
                points.append((tuple(round(float(v), 1) for v in img), fac))
        return Proposal(
            image_size=self.image_size,
            floor_height_m=floor_height_m,
            ground_floor=ground,
            points=points,
            floor_lines=lines,
            image_to_facade=h,
            strength=self.strength,
            along_scale_known=self.focal_known or (bay_width_m is not None and self.column_period is not None),
            top_floor=top_floor,
        )


@dataclass
class Proposal:
    """A proposed facade calibration and what to draw of it."""

    image_size: tuple[int, int]
    floor_height_m: float
    ground_floor: int
    points: list[tuple[tuple[float, float], tuple[float, float]]]  # (image px, facade m)
    floor_lines: list[FloorLine]
    image_to_facade: np.ndarray
    strength: float
    along_scale_known: bool
    notes: list[str] = field(default_factory=list)
    top_floor: int | None = None  # the floor whose top is the roof line, when the roof is in view

    def facade_block(self) -> dict:
        """The camera's `facade:` block, as check-config reads it."""
        block = {
            "floor_height_m": round(float(self.floor_height_m), 3),
            "ground_floor": int(self.ground_floor),
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "points": [
                {"image": [float(i[0]), float(i[1])], "facade": [float(f[0]), float(f[1])]} for i, f in self.points
            ],
        }
        if self.top_floor is not None:
            block["top_floor"] = int(self.top_floor)
        return block


def line_of(prop: Proposal, index: int) -> int:
    """Which floor line (0: the lowest drawn) proposal point `index` is on."""
    lowest = prop.floor_lines[0].floor
    y0 = (lowest - prop.ground_floor) * prop.floor_height_m
    return round((prop.points[index][1][1] - y0) / prop.floor_height_m)


def _pair(xy) -> tuple[float, float]:
    return round(float(xy[0]), 1), round(float(xy[1]), 1)


def _apply(h: np.ndarray, pts) -> np.ndarray:
    return cv2.perspectiveTransform(np.asarray(pts, np.float64).reshape(-1, 1, 2), h).reshape(-1, 2)


def to_gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def detect_grid(image: np.ndarray, seed: int = 0, allow_weak: bool = False, geometry_only: bool = False) -> Grid:
    """Find the storey grid of a facade in a still (BGR or grey); NotAFacade says why when there is none.

    `allow_weak` returns a grid whose storeys repeat only faintly (with `weak` saying why it would have been
    refused) instead of refusing it: the page offers it as a low-confidence start on a view the installer
    knows is a facade. `geometry_only` returns the facade's plane even when no storeys repeat at all
    (`storeys_found` False): two floor lines the installer marks then give the storeys (`through`).
    """
    gray = to_gray(image)
    h, w = gray.shape
    if min(h, w) < 120:
        raise NotAFacade(f"the image is {w}x{h}: too small to see storeys (at least 120 pixels each way)")
    rng = np.random.default_rng(seed)  # RANSAC draws: the same still gives the same proposal
    seg = find_segments(gray)
    vert, horiz = split_families(seg)
    vh = ransac_vp(horiz, rng)
    if vh is None or vh.support < MIN_FAMILY_SUPPORT:
        got = 0.0 if vh is None else vh.support
        raise NotAFacade(
            f"not a facade: too few straight horizontal edges that meet in one vanishing point "
            f"({got:.1f} of {MIN_FAMILY_SUPPORT} needed); the still should show several storeys of windows"
        )
    to_norm = np.array(
        [
            [1 / seg.scale, 0, -seg.centre[0] / seg.scale],
            [0, 1 / seg.scale, -seg.centre[1] / seg.scale],
            [0, 0, 1.0],
        ]
    )
    tone = _Tone(gray, to_norm)
    measured = ransac_vp(vert, rng)
    # Two guesses at the horizontal vanishing point: RANSAC on the segments (precise where they are the
    # facade's long edges) and where the rows of edge pixels line up (where windows are a few pixels wide,
    # the few segments may be the outline and tree crowns); the one with the stronger storeys.
    guesses = [(vh.point, horiz.subset(vh.inliers))]
    rows = RowPixels(gray, seg)
    lined = rows.best()
    if lined is not None:
        sharper = lined[1] > ROWS_SHARPER * rows.sharpness(vh.point)
        guesses.insert(0 if sharper else 1, (lined[0], horiz.subset(agreement(horiz, lined[0]) < INLIER_DEG)))
    found = vv = ev = hsub = None
    for point, inliers in guesses:
        got = _storeys(point, inliers, measured, _Edges(gray, point, to_norm), tone)
        if got[0] is not None and (found is None or got[0][1].strength > found[1].strength):
            (found, vv, ev), hsub = got, inliers
        # The segments' point with storeys is taken as it is; the rows' point, sharper, must also show
        # stronger storeys (it can line up the pixels around a point near the frame, on a building of few rows).
        if found is not None and found[1].strength >= MIN_STRENGTH and point is vh.point:
            break
    if found is None:
        raise NotAFacade(
            "not a facade: its vertical and horizontal edges do not span a plane; the still should show "
            "several storeys of windows"
        )
    a, per, focal, known = found
    vsub = vert.subset(vv.inliers) if vv is not None else vert
    # Where the floor lines run: the segments, which are the facade's own edges; edge pixels also come from
    # trees, cars and the ground beside it, and only decide where a facade shows too few segments.
    ys, xs, wts = _heights(a, hsub)
    if len(ys) < MIN_LINE_SEGMENTS:
        ys, xs, wts = ev.heights(a)
    lines, along = _floor_lines(per, ys, xs, wts)
    weak = None
    if per.strength < MIN_STRENGTH:
        weak = (
            f"not a facade: no repeating storeys found (periodicity {per.strength:.2f}, at least {MIN_STRENGTH} "
            "needed); aim at a facade with several floors of windows or balconies in view"
        )
        faint = per.strength < WEAK_STRENGTH or len(lines) < MIN_FLOOR_LINES
        if not (allow_weak or geometry_only) or (faint and not geometry_only):
            raise NotAFacade(weak)
    if len(lines) < MIN_FLOOR_LINES and not geometry_only:
        raise NotAFacade(
            f"only {len(lines)} floor lines in view, at least {MIN_FLOOR_LINES} are needed: tilt the camera "
            "to show more storeys"
        )
    to_px = np.diag([seg.scale, seg.scale, 1.0])
    to_px[:2, 2] = seg.centre
    image_to_units = a @ np.linalg.inv(to_px)
    col = _column_period(a, vsub)
    roof = _roof(per.period, lines, *ev.heights(a)[::2], np.linalg.inv(image_to_units), (w, h), along)
    return Grid(
        image_size=(w, h),
        image_to_units=image_to_units,
        period=per.period,
        phase=lines[0],
        lines=len(lines),
        along=along,
        strength=per.strength,
        focal_px=focal * seg.scale,
        focal_known=known,
        column_period=col,
        heights=(ys, xs, wts),
        weak=weak,
        roof=roof,
        storeys_found=weak is None or (per.strength >= WEAK_STRENGTH and len(lines) >= MIN_FLOOR_LINES),
    )


def _storeys(vh: np.ndarray, hsub: Segments, vv: VanishingPoint | None, edges: _Edges, tone: _Tone):
    """(rectification, storey period, focal, focal known) or None, the vertical vanishing point used (None
    when found from the spacing) and the evidence, for one horizontal vanishing point."""
    ev = _Evidence(hsub, edges)
    found = None
    if vv is not None and vv.support >= MIN_FAMILY_SUPPORT and _separate(vv.point, vh):
        found = _on_verticals(vv.point, vh, ev, tone)
        if found is None or found[1].strength < MIN_STRENGTH:
            alone = _on_verticals(vv.point, vh, replace(ev, edges_only=True), tone)
            if alone is not None and alone[1].strength >= MIN_STRENGTH:
                found, ev = alone, replace(ev, edges_only=True)
    if found is None or found[1].strength < MIN_STRENGTH:
        # Too few verticals (ribbon windows, one building edge in view), or they disagree with the floors:
        # find where the floor lines' spacing is most regular instead.
        spaced = _vertical_from_spacing(vh, ev)
        if spaced is not None:
            alt = _grid_from(spaced, vh, ev, *_focal(spaced, vh), tone)
            # Nothing repeating either way: the vertical edges, measured, beat an even spacing of nothing; and
            # a spacing searched for scores a little higher by chance, so only a clearly higher one wins.
            better = found is None or (
                alt is not None and alt[1].strength > max(SPACING_MARGIN * found[1].strength, WEAK_STRENGTH)
            )
            if alt is not None and better:
                found, vv = alt, None
    return found, vv, ev


def _on_verticals(vv: np.ndarray, vh: np.ndarray, ev: _Evidence, tone: _Tone):
    """_grid_from on the measured vertical vanishing point, moved until the floor lines are evenly spaced."""
    point = _refine_vertical(vv, vh, ev)
    found = _grid_from(point, vh, ev, *_focal(point, vh), tone)
    if found is None or found[1].strength < WEAK_STRENGTH:
        # Nothing repeats: the refinement chased noise; the vertical edges' own point is the better plane for
        # floor lines the installer marks.
        found = _grid_from(vv, vh, ev, *_focal(vv, vh), tone) or found
    return found


def _separate(vv: np.ndarray, vh: np.ndarray) -> bool:
    """Whether the two vanishing directions, seen from the image centre, differ enough to span a plane."""

    def direction(vp: np.ndarray) -> np.ndarray:
        d = vp[:2] if abs(vp[2]) < 1e-9 else vp[:2] / vp[2]
        return d / max(np.linalg.norm(d), 1e-12)

    cos = abs(float(direction(vv) @ direction(vh)))
    return math.degrees(math.acos(min(1.0, cos))) >= MIN_VP_SEPARATION_DEG


def _grid_from(
    vv: np.ndarray, vh: np.ndarray, ev: _Evidence, focal: float, known: bool, tone: _Tone | None, spans=SPANS
):
    """(rectification, storey period, focal, focal known) for two vanishing points, or None when degenerate;
    the storeys read in the shares of the height `spans`."""
    try:
        a = _rectify(vv, vh, focal, ev.hsub)
    except NotAFacade:
        return None
    ys, xs, wts = ev.heights(a)
    along = tuple(np.percentile(xs, [5, 95])) if len(xs) else (0.0, 0.0)
    per = find_period(ys, wts, tone.profile(a, along) if tone is not None else None, spans)
    if per is None:
        return None
    return a, per, focal, known


class _Tone:
    """The facade's mean brightness along its rectified height, from a grid of pixel samples."""

    def __init__(self, gray: np.ndarray, to_norm: np.ndarray):
        h, w = gray.shape
        step = max(1, int(math.sqrt(h * w / TONE_SAMPLES)))
        yy, xx = np.mgrid[0:h:step, 0:w:step]
        self.px = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
        self.grey = gray[yy.ravel(), xx.ravel()].astype(np.float64)
        self.to_norm = to_norm  # pixels -> normalised coordinates

    def profile(self, a: np.ndarray, along: tuple[float, float]):
        units = _apply(a @ self.to_norm, self.px)
        inside = np.isfinite(units).all(axis=1) & (units[:, 0] >= along[0]) & (units[:, 0] <= along[1])
        ys, grey = units[inside, 1], self.grey[inside]

        def tone(lo: float, hi: float, bins: int) -> np.ndarray | None:
            sums, _ = np.histogram(ys, bins, (lo, hi), weights=grey)
            counts, _ = np.histogram(ys, bins, (lo, hi))
            seen = counts > 0
            if seen.sum() < bins // 4:
                return None
            idx = np.arange(bins)
            return np.interp(idx, idx[seen], sums[seen] / counts[seen])

        return tone


class _Edges:
    """Pixels on edges that run towards the horizontal vanishing point, weighted by how strongly they do.

    Every pixel votes, so storeys show even where windows are too small or faint for LSD to find segments
    (a far building at 704x576, paired narrow windows, dusk); vertical edges and isotropic texture cancel.
    """

    def __init__(self, gray: np.ndarray, vh: np.ndarray, to_norm: np.ndarray):
        h, w = gray.shape
        k = min(1.0, WORK_WIDTH / w)
        small = gray if k == 1 else cv2.resize(gray, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        gx, gy = cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1)
        yy, xx = np.mgrid[0 : small.shape[0], 0 : small.shape[1]].astype(np.float32)
        px = np.column_stack([(xx.ravel() + 0.5) / k - 0.5, (yy.ravel() + 0.5) / k - 0.5]).astype(np.float64)
        q = _apply(to_norm, px)
        d = vh[None, :2] - q * vh[2]  # towards the horizontal vanishing point, from each pixel
        d /= np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-12)[:, None]
        g = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
        along = np.abs((g * d).sum(axis=1))
        across = np.abs(g[:, 1] * d[:, 0] - g[:, 0] * d[:, 1])
        noise = float(np.median(np.hypot(g[:, 0], g[:, 1])))  # most of a still is flat: wall, sky
        e = across - along
        keep = np.flatnonzero((across > EDGE_NOISE * max(noise, 1.0)) & (across > EDGE_ANISOTROPY * along))
        if len(keep) > EDGE_PIXELS:
            keep = keep[np.argpartition(e[keep], -EDGE_PIXELS)[-EDGE_PIXELS:]]
        self.q = q[keep]  # normalised coordinates
        e = e[keep]
        self.e = np.minimum(e, np.percentile(e, 99)) if len(e) else e

    def heights(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rectified height and along of each edge pixel, weighted by its edge strength times the rectified
        length one pixel spans there (a far storey has fewer pixels, not less facade)."""
        hom = np.column_stack([self.q, np.ones(len(self.q))]) @ a.T
        w = hom[:, 2]
        side = np.sign(np.median(w)) if len(w) else 1.0
        ok = (np.sign(w) == side) & (np.abs(w) > 1e-9)
        stretch = np.sqrt(abs(np.linalg.det(a))) / np.abs(w[ok]) ** 1.5  # sqrt of the Jacobian's determinant
        return hom[ok, 1] / w[ok], hom[ok, 0] / w[ok], self.e[ok] * stretch


@dataclass
class _Evidence:
    """What the storeys are read from: the horizontal LSD segments and the edge pixels in equal shares, or
    the edge pixels alone where only they repeat on the measured vertical edges.

    Both is the usual best; but where windows are a few pixels wide, LSD's few horizontal segments are the
    building's outline and tree crowns, which repeat at no storey, and half the weight on them drowned the
    storeys the edge pixels show (far paired-window blocks refused even on the true vanishing points). It is
    not a choice made for each candidate of the spacing search: that would let the search pick a wrong
    geometry that one of the two happens to make look regular (ribbon windows without verticals).
    """

    hsub: Segments
    edges: _Edges
    edges_only: bool = False

    def heights(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seg = _heights(a, self.hsub)
        pix = self.edges.heights(a)
        if self.edges_only:
            return pix
        parts = [(y, x, w / w.sum()) for y, x, w in (seg, pix) if len(w) and w.sum() > 0]
        if not parts:
            return seg
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _refine_vertical(vv: np.ndarray, vh: np.ndarray, ev: _Evidence) -> np.ndarray:
    """The vertical vanishing point moved along its direction until the floor lines are most evenly spaced.

    Short window edges put the point a few percent off, which shifts a floor every ten or so storeys; the
    spacing of the floor lines fixes its distance (the facade's vanishing line), its direction stays.
    """
    line0 = np.cross(vv, vh)
    if abs(line0[2]) < 1e-12:
        return vv
    s0 = -line0[1] / line0[2]  # 1 / where the vanishing line crosses the image's vertical axis
    towards = np.cross(vv, np.array([0.0, 0.0, 1.0]))  # the line from the image centre through vv
    f, known = _focal(vv, vh)
    best, best_score = vv, -1.0
    for s in s0 + REFINE_STEPS:
        cand = np.cross(np.cross(vh, np.array([0.0, 1.0, s])), towards)
        norm = np.linalg.norm(cand)
        if norm < 1e-12:
            continue
        cand = cand / norm
        try:
            a = _rectify(cand, vh, f, ev.hsub)
        except NotAFacade:
            continue
        ys, _, wts = ev.heights(a)
        score = regularity(ys, wts)
        if score > best_score:
            best, best_score = cand, score
    return best


def _vertical_from_spacing(vh: np.ndarray, ev: _Evidence) -> np.ndarray | None:
    """The vertical vanishing point that makes the floor lines most evenly spaced, for views without verticals.

    Heights depend only on the facade's vanishing line (through vh); it is searched as the line through vh
    and (0, 1/s) on the image's vertical axis. The vertical point on it is the one orthogonal to vh for the
    assumed focal length; only metres along the facade depend on that choice.
    """
    best, best_strength = None, -1.0
    f = 1 / math.tan(math.radians(DEFAULT_HFOV_DEG) / 2)
    omega = np.diag([1 / f**2, 1 / f**2, 1.0])  # image of the absolute conic, principal point at the centre
    for s in SPACING_SEARCH:
        line = np.cross(vh, np.array([0.0, 1.0, s]))
        vv = np.cross(line, omega @ vh)
        if np.linalg.norm(vv) < 1e-12 or not _separate(vv / np.linalg.norm(vv), vh):
            continue
        vv = vv / np.linalg.norm(vv)
        # The whole height only: with a free vanishing line, a third of it left out could be made regular.
        got = _grid_from(vv, vh, ev, f, False, None, WHOLE)
        if got is not None and got[1].strength > best_strength:
            best, best_strength = vv, got[1].strength
    return best


def _focal(vv: np.ndarray, vh: np.ndarray) -> tuple[float, bool]:
    lo, hi = (1 / math.tan(math.radians(d) / 2) for d in FOCAL_RANGE_HFOV_DEG[::-1])
    f = focal_from_vps(vv, vh)
    if f is not None and lo <= f <= hi:
        return f, True
    return 1 / math.tan(math.radians(DEFAULT_HFOV_DEG) / 2), False


def _rectify(vv: np.ndarray, vh: np.ndarray, focal: float, horiz: Segments) -> np.ndarray:
    """Normalised image -> (along, up) units: the inverse of K [r1 r2 t] with r1, r2 towards the two points.

    Facade coordinates are then (sx * along + c, sy * up + d): any error in the assumed focal length only
    scales `along` against `up`, and heights, hence floors, depend on the vanishing points alone.
    """
    k = np.diag([focal, focal, 1.0])
    kinv = np.linalg.inv(k)
    r1 = kinv @ vh
    r2 = kinv @ vv
    r1, r2 = r1 / np.linalg.norm(r1), r2 / np.linalg.norm(r2)
    p0 = np.median(horiz.mid, axis=0) if len(horiz.ends) else np.zeros(2)  # any point of the facade
    t0 = kinv @ np.array([p0[0], p0[1], 1.0])
    g = k @ np.column_stack([r1, r2, t0])
    if abs(np.linalg.det(g)) < 1e-12:
        raise NotAFacade("not a facade: its edges do not span a plane")
    a = np.linalg.inv(g)
    step = 0.02
    base, up, right = _apply(a, [p0, p0 - [0, step], p0 + [step, 0]])
    if up[1] < base[1]:  # facade height grows towards the top of the image
        a[1] *= -1
    if right[0] < base[0]:  # and along the facade to the right
        a[0] *= -1
    return a


def _heights(a: np.ndarray, horiz: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectified height and along of each horizontal segment's midpoint, and its rectified length (weight)."""
    if not len(horiz.ends):  # no segment points at the rows' vanishing point: the edge pixels alone tell
        return np.zeros(0), np.zeros(0), np.zeros(0)
    p = _apply(a, horiz.ends[:, :2])
    q = _apply(a, horiz.ends[:, 2:])
    ok = np.isfinite(p).all(axis=1) & np.isfinite(q).all(axis=1)
    p, q = p[ok], q[ok]
    ys = (p[:, 1] + q[:, 1]) / 2
    xs = (p[:, 0] + q[:, 0]) / 2
    wts = np.abs(q[:, 0] - p[:, 0])
    lo, hi = np.percentile(wts, [0, 99]) if len(wts) else (0, 0)
    return ys, xs, np.clip(wts, lo, hi)


def _floor_lines(per: Periodicity, ys, xs, wts) -> tuple[list[float], list[tuple[float, float]]]:
    """Heights of the floor lines within the structure seen, and the along range of structure at each."""
    lo, hi = np.percentile(ys, [2, 98])
    k0 = math.ceil((lo - per.phase) / per.period - 0.25)
    k1 = math.floor((hi - per.phase) / per.period + 0.25)
    heights, along = [], []
    for k in range(k0, k1 + 1):
        y = per.phase + k * per.period
        near = np.abs(ys - y) < 0.5 * per.period
        if wts[near].sum() <= 0:
            continue
        a, b = np.percentile(xs[near], [3, 97])
        heights.append(y)
        along.append((float(a), float(b)))
    return heights, along


def _roof(period, lines, ys, wts, units_to_image, size, along) -> float | None:
    """The height where the facade's edges end against the sky (the roof), when that is in view.

    Going up from a storey under the highest line drawn, the first height with next to nothing above it
    for ROOF_SKY of a storey (some of it in the picture), with a full storey below it.
    """
    if len(lines) < 2:
        return None

    def weight(lo: float, hi: float) -> float:
        return float(wts[(ys > lo) & (ys < hi)].sum())

    typical = float(np.median([weight(y, y + period) for y in lines[:-1]]))
    mid = float(np.mean(along[-1]))
    w, h = size
    for y in np.arange(lines[-1] - period, lines[-1] + ROOF_SEARCH_ABOVE * period, ROOF_STEP * period):
        if weight(y, y + ROOF_SKY * period) > ROOF_EMPTY * ROOF_SKY * typical:
            continue
        x, v = _apply(units_to_image, [[mid, y + ROOF_SKY_SEEN * period]])[0]
        if not (0 <= x < w and 0 <= v < h):
            return None  # the sky above is not in the picture: the roof may be there, out of view
        if weight(y - period, y) < ROOF_FULL * typical:
            return None  # the facade fades out (haze, a tree) rather than ends
        return float(y)
    return None


def _column_period(a: np.ndarray, vert: Segments) -> float | None:
    """The repeat of window bays along the facade, from the vertical edges; None when it is not clear."""
    if len(vert.ends) < 8:
        return None
    p = _apply(a, vert.ends[:, :2])
    q = _apply(a, vert.ends[:, 2:])
    xs = (p[:, 0] + q[:, 0]) / 2
    wts = np.abs(q[:, 1] - p[:, 1])
    per = find_period(xs, wts)
    return per.period if per is not None and per.strength >= MIN_STRENGTH else None
