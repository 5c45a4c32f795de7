"""One camera's detection: luma frames in, fall events (new / update / end) out. Pure computation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from edge.config import CameraConfig
from edge.detect.fall import SEEING_RULES, FallDecision, Rule
from edge.detect.gated import FrameLook
from edge.detect.motion import MotionPrefilter
from edge.detect.sample import TrackCrops
from edge.detect.tracker import LeadIn, Track, Tracker
from edge.detect.types import AlertLevel, Blob, FallEvent, Origin, UpdateKind, Verdict
from edge.detect.verify import Verifier, second_look
from edge.geometry import CameraGeometry, FacadeMap

_LEVELS = {None: 0, AlertLevel.SUSPECTED: 1, AlertLevel.CONFIRMED: 2}
# A second track on a fall already reported may trail it by a frame or two (the tail of a blur streak split
# off, a codec ghost): it runs along the same path, a little late. A second throw comes seconds apart.
_SAME_PATH_LAG = 2
# Two tracks met at the same places this often are one object: a blob or two in common may be one raindrop
# that both took, while a lost track and the one that picks its object up share its last second.
_MET_FRAMES = 5


@dataclass
class EventUpdate:
    """A change to an event: 'new' when the fall is decided, 'update' on a better verdict, 'end' when gone."""

    kind: UpdateKind
    event: FallEvent


_NO_POINTS = np.empty((0, 3))  # frame, x, y rows: none
_NO_POINTS.setflags(write=False)


@dataclass
class _Duplicate:
    """A live track taken for a reported fall: that fall's event id, the blobs its object left before the track
    began (frame, x, y: its lead-in), and how far the fall's path was last compared."""

    event_id: str
    before: np.ndarray = field(default_factory=lambda: _NO_POINTS)
    checked_to: float = -math.inf  # the fall path's last frame at the last comparison


@dataclass(frozen=True)
class GravityPx:
    """g in pixels per frame squared at pixels of a calibrated view: `g_mpf2` over the local metres per pixel."""

    facade: FacadeMap
    g_mpf2: float  # metres per frame squared

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.g_mpf2 / np.maximum(self.facade.metres_per_pixel_at(np.column_stack([x, y])), 1e-6)


class Detector:
    """Runs prefilter, tracker and fall decision over successive luma frames of one camera."""

    def __init__(
        self,
        camera: str,
        cfg: CameraConfig,
        fps: float,
        geometry: CameraGeometry,
        verifier: Verifier | None = None,
    ):
        self.camera = camera
        self.cfg = cfg
        self.fps = fps
        self.frame_size = frame_size = geometry.frame_size
        self.motion = MotionPrefilter(cfg.motion, fps, geometry.shield)
        self.scale = min(1.0, cfg.motion.max_work_width / frame_size[0])
        work = (round(frame_size[0] * self.scale), round(frame_size[1] * self.scale))
        full_map = geometry.facade
        work_map = full_map.scaled(self.scale) if full_map is not None else None
        gravity = None
        if work_map is not None:
            gravity = GravityPx(work_map, cfg.fall.gravity_mps2 / fps**2)
        self.tracker = Tracker(cfg.tracker, work, fps, gravity)
        self.decision = FallDecision(cfg.fall, fps, work[1], work_map)
        self._events: dict[int, FallEvent] = {}
        self._lead_ins: dict[int, LeadIn] = {}  # by track id: blobs a live event's object left before its track
        self._recent: list[tuple[FallEvent, np.ndarray]] = []  # ended falls, with work-pixel trajectories
        self._same_px = cfg.tracker.same_object_frac * work[1]
        self._duplicates: dict[int, _Duplicate] = {}  # by live track id: the reported fall it is taken for
        self._parted: dict[int, set[str]] = {}  # by live track id: reported falls it was seen apart from
        self._suppress_until = -1
        self._suppress_frames = math.ceil(cfg.motion.suppress_s * fps)
        self.verifier = verifier
        self.crops = TrackCrops()  # what the verifier looks at, kept only when there is one
        self.last_blobs: list[Blob] = []  # the blobs the tracker was last given (for diagnostics)

    def process(self, frame: int, luma: np.ndarray) -> list[EventUpdate]:
        """Feed one frame's luma plane (full resolution); returns what changed about events."""
        result = self.motion.process(luma)
        blobs = result.blobs
        if result.global_event is not None and result.global_event.blinds:
            self._suppress_until = frame + self._suppress_frames
        look = None
        if frame <= self._suppress_until:
            blobs = []
        elif result.global_event is None:
            look = self._look()
        self.last_blobs = blobs
        return self.step(frame, blobs, look)

    def step(self, frame: int, blobs: list[Blob], look: FrameLook | None = None) -> list[EventUpdate]:
        """Feed one frame's blobs to the tracker and judge its tracks; returns what changed about events."""
        ended = self.tracker.step(frame, blobs, look)
        updates = []
        # Ended falls first: a new track judged in this frame then still sees their paths (`_known_fall`).
        for track in ended:
            updates += self._end(track)
            self._duplicates.pop(track.id, None)
            self._parted.pop(track.id, None)
            self.crops.drop(track.id)
        for track in self.tracker.tracks:
            if track.missed != 0:
                continue
            if self.verifier is not None:
                self.crops.add(track.id, self.motion.image, track.points[-1][1], track.points[-1][2])
            if track.hits >= self.cfg.fall.min_points:
                updates += self._judge(track, frame)
        horizon = frame - 2 * self.fps
        self._recent = [(e, p) for e, p in self._recent if e.end_frame >= horizon]
        return updates

    @property
    def duplicates(self) -> frozenset[int]:
        """Ids of the live tracks taken for a fall already reported (`_known_fall`): they raise no event."""
        return frozenset(self._duplicates)

    def _look(self) -> FrameLook | None:
        """This frame as the tracker may search it below the blob threshold, once the background is learned."""
        image, background, threshold = self.motion.image, self.motion.background, self.motion.threshold
        if image is None or background is None or threshold is None or self.cfg.tracker.search_tracks == 0:
            return None
        return FrameLook(image, background, threshold, self.cfg.motion.noise_k, self.cfg.tracker.search_snr)

    def finish(self) -> list[EventUpdate]:
        """End all tracks at the end of the stream."""
        updates = []
        for track in self.tracker.flush():
            updates += self._end(track)
        self._duplicates.clear()
        self._parted.clear()
        return updates

    def _verdict(self, track: Track) -> Verdict:
        """Physics' verdict, with its level then moved by the verifier's second look when there is one."""
        verdict = self._judged(track)
        if self.verifier is None or verdict.level is None:
            return verdict
        sample = self.sample(track)
        if sample is not None:
            verdict.verifier_score = round(self.verifier.score(sample), 3)
            verdict.level = second_look(verdict.level, verdict.verifier_score, self.cfg.fall.verifier)
        return verdict

    def sample(self, track: Track) -> np.ndarray | None:
        """What the verifier sees of `track` now (edge.detect.sample).

        None on a frame whose background was just re-learned (an exposure step, a whole-frame change):
        the background is then the frame itself, object included, and shows no contrast. Physics' level
        stands for that one verdict.
        """
        background, threshold = self.motion.background, self.motion.threshold
        if background is None or threshold is None:
            return None
        return self.crops.sample(track.id, background, threshold)

    def _judge(self, track: Track, frame: int) -> list[EventUpdate]:
        event = self._events.get(track.id)
        if event is None and self._still_duplicate(track):
            return []
        if not self._may_change(track, event):
            return []
        verdict = self._verdict(track)
        if event is None:
            if verdict.level is None:
                return []
            lead = None if track.chained else self.tracker.lead_in(track)
            before = _lead_points(lead)
            known = self._known_fall(track, before)
            if known is not None:
                self._duplicates[track.id] = _Duplicate(known, before)
                return []
            track.falling = True
            self._keep_lead_in(track, lead)
            event = self._new_event(track, frame, verdict)
            self._events[track.id] = event
            return [EventUpdate(UpdateKind.NEW, replace(event))]
        self._refresh(event, track, verdict)
        if _LEVELS[verdict.level] > _LEVELS[event.level]:
            event.level, event.score = AlertLevel(verdict.level), verdict.score
            return [EventUpdate(UpdateKind.UPDATE, replace(event))]
        return []

    def _keep_lead_in(self, track: Track, lead: LeadIn | None) -> None:
        """Keep the blobs a new fall's object left before its track began (`lead`), when they are likelier its
        object's than clutter's and the track with them still moves as a fall.

        A track picked up late (a faint object, or one in rain) names a floor too low: its origin is
        extrapolated from where it was first seen, and only so far. Its object is often among the last
        seconds' blobs before that, and with its curve known they are found (`Tracker.lead_in`). They give
        the event's origin and where its trajectory starts; its level is judged without them, so they never
        change whether or how loudly it alarms. Chain-started tracks were followed back when they began.
        """
        if lead is None or not lead.outweighs_its_misses():
            return
        if self._judged(lead.before(track), waived=SEEING_RULES).level is not None:
            self._lead_ins[track.id] = lead

    def _judged(self, track: Track, waived: tuple[Rule, ...] = ()) -> Verdict:
        """Physics' verdict on a track (no second look), but for the `waived` rules."""
        return self.decision.judge(
            track.points,
            track.widths,
            track.strengths,
            track.lengths,
            track.chance_at_hit,
            track.evidence_at_hit,
            waived=waived,
        )

    def _may_change(self, track: Track, event: FallEvent | None) -> bool:
        """Whether a verdict now could start an event or raise its level: only then is it worth its cost.

        In a busy scene most tracks judged each frame are clutter that has not fallen far (`could_alert`).
        An event's other fields (trajectory, origin) need no verdict in between: they are refreshed from
        a new one whenever the event is reported, on a higher level and when it ends.
        """
        if event is not None and event.level == AlertLevel.CONFIRMED:
            return False
        return self.decision.could_alert(track.points, track.evidence_at_hit)

    def _reported_paths(self) -> dict[str, np.ndarray]:
        """Work-pixel paths of the reported falls, live or ended in the last two seconds, by event id."""
        paths = {e.id: p for e, p in self._recent}
        for t in self.tracker.tracks:
            if t.id in self._events:
                paths[self._events[t.id].id] = np.asarray(t.points)
        return paths

    def _reported_path(self, event_id: str) -> list[tuple[int, float, float]] | np.ndarray | None:
        """The path of one reported fall (as `_reported_paths`), None once it is forgotten."""
        for track_id, event in self._events.items():
            if event.id == event_id:
                return next((t.points for t in self.tracker.tracks if t.id == track_id), None)
        return next((p for e, p in self._recent if e.id == event_id), None)

    def _known_fall(self, track: Track, before: np.ndarray = _NO_POINTS) -> str | None:
        """The id of a reported fall whose path the track runs along (or continues), None when there is none.

        `before` are the blobs the track's object left before the track began (its lead-in): a track that
        picks up an object a reported fall's track has lost finds that track's own blobs there, the same
        points at the same frames, though the lost track may have taken clutter since. A fall the track was
        once seen apart from (`_still_duplicate`) is not that one, wherever it goes.
        """
        pts = _with_lead_in(before, track)
        apart = self._parted.get(track.id, set())
        for event_id, path in self._reported_paths().items():
            if event_id in apart:
                continue
            if _path_distance(path, pts) <= self._same_px or _met(path, pts, self._same_px):
                return event_id
        return None

    def _still_duplicate(self, track: Track) -> bool:
        """Whether a track taken for a reported fall is still taken for it.

        Two objects thrown in quick succession from windows one above the other share a path for the lower
        one's first frames, and it is taken for the upper one. Seen apart at the same moments later on, they
        are two objects, and the lower one is judged as a fall of its own. Only frames when both were seen
        count: a track that picks an object up again after the reported fall's track lost it has none, and
        stays a duplicate, as does one whose fall's path has been forgotten (two seconds after it ended).
        """
        dup = self._duplicates.get(track.id)
        if dup is None:
            return False
        path = self._reported_path(dup.event_id)
        # Only the fall's path gaining a point can change the answer: the track's later points lie past it.
        if path is None or path[-1][0] <= dup.checked_to:
            return True
        dup.checked_to = path[-1][0]
        pts = _with_lead_in(dup.before, track)
        if not _parted(np.asarray(path), pts, self._same_px):
            return True
        del self._duplicates[track.id]
        self._parted.setdefault(track.id, set()).add(dup.event_id)
        return False

    def _end(self, track: Track) -> list[EventUpdate]:
        event = self._events.pop(track.id, None)
        if event is None:
            return []
        self._recent.append((event, np.asarray(track.points)))
        verdict = self._verdict(track)
        self._refresh(event, track, verdict)
        self._lead_ins.pop(track.id, None)
        if _LEVELS[verdict.level] > _LEVELS[event.level]:
            event.level = AlertLevel(verdict.level)
        event.score = max(event.score, verdict.score)
        event.ended = True
        return [EventUpdate(UpdateKind.END, replace(event))]

    def _new_event(self, track: Track, frame: int, verdict: Verdict) -> FallEvent:
        lead = self._lead_ins.get(track.id)
        start = lead.blobs[0][0] if lead is not None else track.points[0][0]
        event = FallEvent(
            id=f"{self.camera}-{start:07d}-{track.id}",
            camera=self.camera,
            level=AlertLevel(verdict.level or AlertLevel.SUSPECTED),
            score=verdict.score,
            start_frame=start,
            alert_frame=frame,
            end_frame=frame,
            trajectory=[],
            origin=Origin(0.0, 0.0, None, None),
            fall_m=None,
            accel_g=None,
            speed_mps=None,
            fps=self.fps,
        )
        self._refresh(event, track, verdict)
        return event

    def _refresh(self, event: FallEvent, track: Track, verdict: Verdict) -> None:
        s = 1.0 / self.scale
        path, fell = track.points, verdict
        lead = self._lead_ins.get(track.id)
        if lead is not None:  # where it fell from and how far: from where its object first showed
            longer = lead.before(track)
            judged = self._judged(longer, waived=SEEING_RULES)  # how well it was seen, the track has shown
            path = longer.points  # as the event's start frame has it
            # Unless, with them, it is no longer a fall while without them it still is.
            fell = verdict if judged.level is None and verdict.level is not None else judged
        event.trajectory = [(f, round(x * s, 1), round(y * s, 1)) for f, x, y in path]
        event.end_frame = track.points[-1][0]
        if fell.origin is not None:
            o = fell.origin
            event.origin = Origin(round(o.x * s, 1), round(o.y * s, 1), o.floor, _r(o.facade_x_m), _r(o.height_m))
        event.fall_m = _r(fell.fall_m)
        event.accel_g = _r(verdict.accel_g, 3)
        event.speed_mps = _r(verdict.speed_mps)
        if verdict.verifier_score is not None:
            event.verifier_score = verdict.verifier_score


def _lead_points(lead: LeadIn | None) -> np.ndarray:
    """The (frame, x, y) rows of a lead-in's blobs, oldest first; none without one."""
    if lead is None:
        return _NO_POINTS
    return np.array([(frame, b.x, b.y) for frame, b in lead.blobs], dtype=np.float64)


def _with_lead_in(before: np.ndarray, track: Track) -> np.ndarray:
    """The track's (frame, x, y) points after the blobs its object left before it began (`_lead_points`)."""
    return np.concatenate([before, np.asarray(track.points, dtype=np.float64)])


def _path_distance(path: np.ndarray, pts: np.ndarray) -> float:
    """Median distance from `pts` (frame, x, y) to where `path` was then, or up to _SAME_PATH_LAG frames before
    or after; where `path` has no point, where its own motion would have taken it. Frames are whole numbers,
    each at most once in `path`, as a track's are."""
    recent = path[-15:]
    t0 = recent[0, 0]
    deg = min(2, len(recent) - 1)
    fx = np.polyfit(recent[:, 0] - t0, recent[:, 1], deg)
    fy = np.polyfit(recent[:, 0] - t0, recent[:, 2], deg)
    frames = np.rint(path[:, 0]).astype(np.int64)
    order = np.argsort(frames, kind="stable")
    best = float("inf")
    for lag in range(-_SAME_PATH_LAG, _SAME_PATH_LAG + 1):
        shifted = pts[pts[:, 0] + lag >= path[0, 0]]
        if not len(shifted):
            continue
        f = shifted[:, 0] + lag
        # Where `path` has a point at that frame, that point; elsewhere its fitted curve.
        slot = np.minimum(np.searchsorted(frames[order], np.rint(f).astype(np.int64)), len(frames) - 1)
        row = order[slot]
        has = frames[row] == np.rint(f)
        wx = np.where(has, path[row, 1], np.polyval(fx, f - t0))
        wy = np.where(has, path[row, 2], np.polyval(fy, f - t0))
        best = min(best, float(np.median(np.hypot(shifted[:, 1] - wx, shifted[:, 2] - wy))))
    return best


def _met(path: np.ndarray, pts: np.ndarray, same_px: float) -> bool:
    """Whether `pts` lay within `same_px` of `path`'s own points in most of at least `_MET_FRAMES` frames both
    were seen (same frame, no lag, no curve): the same object, whatever either did at other moments (a lost
    track that took clutter since)."""
    frames, mine, theirs = np.intersect1d(pts[:, 0], path[:, 0], return_indices=True)
    if len(frames) < _MET_FRAMES:
        return False
    apart = np.hypot(*(pts[mine, 1:3] - path[theirs, 1:3]).T)
    return float(np.median(apart)) <= same_px


def _parted(path: np.ndarray, pts: np.ndarray, same_px: float) -> bool:
    """Whether `pts` (frame, x, y) lay farther than `same_px` from `path` over the frames both were seen.

    False when they share no frame. Elsewhere `path`'s curve is only a guess, which a light object's fall
    soon leaves.
    """
    together = pts[np.isin(pts[:, 0], path[:, 0])]
    return bool(len(together)) and _path_distance(path, together) > same_px


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)
