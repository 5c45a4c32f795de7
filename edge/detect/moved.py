"""The moved check: where a camera's picture sits against its reference still (pure computation).

ORB features, spread over the picture and matched with a RANSAC similarity fit, give the shift and the
rotation; when no feature matches (an IR night against a still taken by day) the edge maps are aligned
instead (ECC). A recent recognised picture, with its known offset to the reference, carries the match
through dusk and night without ever forgiving a shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

ORB_FEATURES = 500  # features per picture: hundreds agree on a facade, at ~20 ms a check
ORB_CANDIDATES = 4  # corners found per feature kept: the strongest of each grid cell are kept
GRID = 4  # features are spread over a 4x4 grid, so a car or a bird cannot take them all
MATCH_RATIO = 0.85  # Lowe's ratio test: a facade's windows look alike, so a looser ratio than the usual 0.75
RANSAC_PX = 3.0  # reprojection tolerance of a feature match, in pixels of the 640 px work copy
MIN_INLIERS = 25  # feature matches that must agree on one motion before a view counts as recognised
MIN_FEATURES = 4 * MIN_INLIERS  # a picture with fewer features (dark, fog) cannot tell whether it moved
RELEARN_S = 300.0  # a recognised view becomes the recent reference at most this often (follows dusk and dawn)
EDGE_WIDTH = 320  # edge maps for the IR-proof check are this wide: a few ms per alignment
ECC_ITERATIONS = 50  # ECC steps at most (a few ms at EDGE_WIDTH)
ECC_MIN_CORRELATION = 0.4  # one scene: a simulated facade by day against at night 0.58, against a wall 0.06
STILL_SHIFT = 0.005  # a view that moved less than this share of its width since the last check is still
ASPECT_TOLERANCE = 0.02  # a still of another shape than the stream cannot be compared with it
START_SETTLE_S = 5.0  # a reference learned at start waits this long: exposure and focus settle after a connect


def same_shape(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """True when two pictures have the same aspect ratio (within ASPECT_TOLERANCE), whatever their sizes."""
    return abs((a[1] / a[0]) / (b[1] / b[0]) - 1.0) <= ASPECT_TOLERANCE


def gradient(img: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a picture, in luma levels per pixel."""
    f = img.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) / 8.0  # Sobel's weights sum to 8: levels per pixel


# -- the moved check --------------------------------------------------------------------------------------


def _prepare(img: np.ndarray) -> np.ndarray:
    # Local contrast equalised: the same facade at dusk, in sun or under IR gives comparable features.
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)


@dataclass
class View:
    """The ORB features of one picture, and its motion to the reference (3x3, identity for the reference)."""

    keypoints: tuple
    descriptors: np.ndarray | None
    edges: np.ndarray  # gradient magnitude at EDGE_WIDTH: the same under IR as by day, whatever its polarity
    to_reference: np.ndarray
    t: float

    @classmethod
    def of(cls, work: np.ndarray, t: float, to_reference: np.ndarray | None = None) -> View:
        img = _prepare(work)
        orb = cv2.ORB_create(nfeatures=ORB_FEATURES * ORB_CANDIDATES)
        kp, des = orb.compute(img, _spread(orb.detect(img, None), work.shape))
        h, w = work.shape
        small = cv2.resize(work, (EDGE_WIDTH, max(1, round(h * EDGE_WIDTH / w))), interpolation=cv2.INTER_AREA)
        edges = cv2.GaussianBlur(gradient(small), (0, 0), 1.0)
        return cls(kp, des, edges, np.eye(3) if to_reference is None else to_reference, t)


def _edge_motion(view: View, ref: View, work_width: int) -> np.ndarray | None:
    """The motion taking `view` onto `ref` by aligning their edge maps (ECC from no motion); None if unsure.

    Features do not match across an IR switch or a change of contrast polarity; the edges of a facade stay.
    ECC finds small motions from where it starts; what it finds for a larger one is less sure than features.
    """
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 1e-4)
    try:
        cc, warp = cv2.findTransformECC(ref.edges, view.edges, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 5)
    except cv2.error:  # did not converge: nothing alike
        return None
    if cc < ECC_MIN_CORRELATION:
        return None
    k = work_width / view.edges.shape[1]
    scale = np.diag([k, k, 1.0])
    ref_to_view = scale @ np.vstack([warp, [0.0, 0.0, 1.0]]) @ np.linalg.inv(scale)
    return np.linalg.inv(ref_to_view)


def _spread(keypoints, shape: tuple[int, int]) -> list:
    """The strongest keypoints of each cell of a GRID x GRID grid: no one busy object takes them all."""
    h, w = shape
    cells: dict[tuple[int, int], list] = {}
    for kp in keypoints:
        x, y = kp.pt
        cells.setdefault((min(GRID - 1, int(x * GRID / w)), min(GRID - 1, int(y * GRID / h))), []).append(kp)
    per_cell = max(1, ORB_FEATURES // (GRID * GRID))
    return [kp for cell in cells.values() for kp in sorted(cell, key=lambda k: -k.response)[:per_cell]]


class Match(StrEnum):
    """What a picture was recognised against, or why it could not tell."""

    REFERENCE = "reference"  # the reference still (or the one learned at start)
    RECENT = "recent"  # a recent recognised view, with its known offset to the reference
    EDGES = "edges"  # no features matched, but the edge map is the reference's, in place (IR night)
    NONE = "none"  # a steady view that matches neither: not the scene of the reference
    UNSTEADY = "unsteady"  # matches neither, and its own features do not come back: cannot tell
    FEW = "few features"  # too dark or featureless to tell


@dataclass(frozen=True)
class Alignment:
    """How a picture sits against the reference: its shift in frame widths, or not recognised (None)."""

    shift: float | None
    rotation_deg: float | None
    inliers: int
    via: Match
    to_reference: np.ndarray | None = None


def _motion(view: View, ref: View) -> tuple[np.ndarray, int] | None:
    """The similarity motion taking `view`'s points onto `ref`'s, with its inlier count; None if unsure."""
    if view.descriptors is None or ref.descriptors is None or len(view.keypoints) < MIN_INLIERS:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(view.descriptors, ref.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < MATCH_RATIO * p[1].distance]
    if len(good) < MIN_INLIERS:
        return None
    src = np.float32([view.keypoints[m.queryIdx].pt for m in good])
    dst = np.float32([ref.keypoints[m.trainIdx].pt for m in good])
    m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
    n = int(inliers.sum()) if inliers is not None else 0
    if m is None or n < MIN_INLIERS:
        return None
    return np.vstack([m, [0.0, 0.0, 1.0]]), n


def shift_of(to_reference: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """Mean displacement of the frame's corners and centre (in frame widths) and the rotation, in degrees."""
    w, h = size
    pts = np.float32([[0, 0], [w, 0], [w, h], [0, h], [w / 2, h / 2]]).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(pts, to_reference)
    shift = float(np.linalg.norm((moved - pts).reshape(-1, 2), axis=1).mean()) / w
    return shift, math.degrees(math.atan2(to_reference[1, 0], to_reference[0, 0]))


class MovedCheck:
    """The view against the reference still, through a recent recognised view when the light has changed."""

    def __init__(self, reference: np.ndarray | None, learned: bool):
        self.reference_image = reference
        self.learned = learned  # no still from calibration: the reference is the first settled picture
        self.reference: View | None = None
        self.recent: View | None = None
        self.previous: View | None = None  # the last checked picture

    def ready(self, work: np.ndarray, t: float, started: float) -> bool:
        """Prepare the reference at the work size; False while a learned one waits for the picture to settle."""
        if self.reference is not None:
            return True
        if self.reference_image is not None and not same_shape(self.reference_image.shape, work.shape):
            self.reference_image, self.learned = None, True  # the stream changed shape: the still cannot compare
        if self.reference_image is None:
            if t - started < START_SETTLE_S:
                return False
            self.reference_image = work
        ref = cv2.resize(self.reference_image, (work.shape[1], work.shape[0]), interpolation=cv2.INTER_AREA)
        self.reference = View.of(ref, t)
        return True

    def align(self, work: np.ndarray, t: float) -> Alignment:
        """Where this picture sits against the reference; the recent view is refreshed when it is in place."""
        view = View.of(work, t)
        if len(view.keypoints) < MIN_FEATURES:
            return Alignment(None, None, 0, Match.FEW)
        size = (work.shape[1], work.shape[0])
        for name, ref in ((Match.REFERENCE, self.reference), (Match.RECENT, self.recent)):
            if ref is None:
                continue
            found = _motion(view, ref)
            if found is None:
                continue
            to_ref = ref.to_reference @ found[0]
            shift, rotation = shift_of(to_ref, size)
            view.to_reference = to_ref
            self.previous = view
            return Alignment(shift, rotation, found[1], name, to_ref)
        for ref in (self.reference, self.recent):
            found = _edge_motion(view, ref, work.shape[1]) if ref is not None else None
            if found is not None:
                to_ref = ref.to_reference @ found
                shift, rotation = shift_of(to_ref, size)
                view.to_reference = to_ref
                self.previous = view
                return Alignment(shift, rotation, 0, Match.EDGES, to_ref)
        # Not the reference. Only a steady view whose features come back from one check to the next (a
        # camera turned to a wall, a new obstacle) tells that; features that do not even come back (grain,
        # wet asphalt, traffic) cannot tell anything.
        still = _motion(view, self.previous) if self.previous is not None else None
        steady = still is not None and shift_of(still[0], size)[0] < STILL_SHIFT
        self.previous = view
        return Alignment(None, None, 0, Match.NONE if steady else Match.UNSTEADY)

    def remember(self, t: float) -> None:
        """Keep the picture aligned at `t` as the recent view (at most every RELEARN_S), with its motion to the
        reference; its features were found by align(), not again."""
        view = self.previous
        if view is None or view.t != t:
            return
        if self.recent is None or t - self.recent.t >= RELEARN_S:
            self.recent = view
