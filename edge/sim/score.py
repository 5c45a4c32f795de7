"""Matches detected events to a simulated clip's ground truth, and scores them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # explain imports this module's match_tolerance
    from edge.sim.explain import MissCause


@dataclass
class SceneScore:
    """How a replay of one simulated clip compares with its truth."""

    scene: str
    seconds: float
    condition: str = "day"  # day, night or rain
    must: int = 0
    found: int = 0
    confirmed: int = 0  # found throws whose alert was confirmed, which is dispatched at once
    extra_found: int = 0  # throws not required (too small or too short in view) that were found anyway
    floor_exact: int = 0
    floor_near: int = 0
    latencies: list[float] = field(default_factory=list)
    # Per found throw: when its true path had fallen the suspected alert's bar, counted as latencies are.
    rule_latencies: list[float] = field(default_factory=list)
    false_confirmed: int = 0
    false_suspected: int = 0
    duplicates: int = 0
    missed: list[str] = field(default_factory=list)
    missed_index: list[int] = field(default_factory=list)  # each missed throw's index in the truth's throws
    miss_causes: list[MissCause] = field(default_factory=list)  # why each was missed, when the bench asked
    wrong_floor: list[str] = field(default_factory=list)
    floor_errors: list[int] = field(default_factory=list)  # reported minus true floor, per found throw
    height_errors: list[float] = field(default_factory=list)  # reported minus true origin height, metres
    throws: list[ThrowOutcome] = field(default_factory=list)  # every throw in view, must-detect or not


@dataclass(frozen=True)
class ThrowOutcome:
    """One throw's visibility and whether it was found: the data of the detection-limit table."""

    cnr: float
    width_px: float
    must: bool
    found: bool
    fell: bool  # fell the minimum distance in view: visibility alone decides whether it could be found


def _overlap(track: list, trajectory: list, tol: float) -> float:
    """Fraction of the event's points that lie within `tol` pixels of the throw at the same frame."""
    truth = {int(f): (x, y) for f, x, y, _ in track}
    hits = [np.hypot(x - truth[f][0], y - truth[f][1]) <= tol for f, x, y in trajectory if f in truth]
    return sum(hits) / max(1, len(trajectory))


@dataclass(frozen=True)
class AlertBar:
    """The fall a track must be seen to make before its first alert, and the map that measures it."""

    fall_m: float  # suspect_fall_share of the minimum fall, in facade metres
    to_facade: Callable[[np.ndarray], np.ndarray]  # (N, 2) full-frame pixels -> (N, 2) facade [along, up]


def rule_latency(throw: dict, fps: float, bar: AlertBar) -> float | None:
    """Seconds from the throw's first visible frame until its true path has fallen `bar.fall_m` below its
    highest point so far, measured on the facade as the node measures a track (`fell_far_enough`).

    A detector that saw the throw from its first visible frame alerts no sooner, but for its position
    noise; a weakly scored track must fall the whole minimum fall, later still. None when the path never
    falls that far in view.
    """
    track = np.asarray(throw["track"], dtype=np.float64)
    if not len(track):
        return None
    up = bar.to_facade(track[:, 1:3])[:, 1]
    fallen = np.flatnonzero(np.maximum.accumulate(up) - up >= bar.fall_m)
    if not len(fallen):
        return None
    return float((track[fallen[0], 0] - throw["first_visible_frame"]) / fps)


ON_PATH_SHARE = 0.5  # an event is a throw's when this share of its points lie on the throw's path


def match_tolerance(truth: dict, throw: dict) -> float:
    """Pixels an event's point may lie from the throw's true position and still be on it."""
    return max(12.0 * truth["height"] / 1080, 2 * throw["width_px"])


def score_scene(truth: dict, records: list[dict], bar: AlertBar | None = None) -> SceneScore:
    """Recall, floors, latency and false alarms of `records` (events.jsonl rows) against `truth`.

    With the alert's `bar`, also the latency that rule alone allows each found throw (`rule_latency`).
    """
    fps = truth["fps"]
    s = SceneScore(truth["scene"] + f"/{truth['seed']}", truth["frames"] / fps, truth.get("condition", "day"))
    matched: set[int] = set()
    for index, throw in enumerate(truth["throws"]):
        tol = match_tolerance(truth, throw)
        hits = [r for r in records if _overlap(throw["track"], r["trajectory"], tol) >= ON_PATH_SHARE]
        if hits:
            matched.update(id(r) for r in hits)
            s.duplicates += len(hits) - 1
        if throw["track"]:
            fell = throw["fall_in_view_m"] >= 2 * truth["facade"]["floor_height_m"]
            outcome = ThrowOutcome(
                throw.get("cnr", 0.0), throw["width_px"], throw["must_detect"], bool(hits), fell
            )
            s.throws.append(outcome)
        if not throw["must_detect"]:
            s.extra_found += bool(hits)
            continue
        s.must += 1
        label = f"{throw['kind']} floor {throw['origin']['floor']} at frame {throw['release_frame']}"
        if not hits:
            s.missed.append(label)
            s.missed_index.append(index)
            continue
        s.found += 1
        s.confirmed += any(r["level"] == "confirmed" for r in hits)
        first = min(hits, key=lambda r: r["alert_frame"])
        s.latencies.append((first["alert_frame"] - throw["first_visible_frame"]) / fps)
        allowed = rule_latency(throw, fps, bar) if bar is not None else None
        if allowed is not None:
            s.rule_latencies.append(allowed)
        got = first["origin"]["floor"]
        want = throw["origin"]["floor"]
        s.floor_exact += got == want
        s.floor_near += got is not None and abs(got - want) <= 1
        if got is not None:
            s.floor_errors.append(got - want)
        if first["origin"].get("height_m") is not None and "height_m" in throw["origin"]:
            s.height_errors.append(first["origin"]["height_m"] - throw["origin"]["height_m"])
        if got != want:
            s.wrong_floor.append(f"{label}: reported {got}")
    for r in records:
        if id(r) not in matched:
            if r["level"] == "confirmed":
                s.false_confirmed += 1
            else:
                s.false_suspected += 1
    return s
