"""Plain data passed between detection stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Blob:
    """One connected region of motion in a frame, in work-resolution pixels."""

    x: float
    y: float
    w: int
    h: int
    area: int
    contrast: float
    strength: float = 0.0  # the strongest pixel's difference, in multiples of its own motion threshold


class GlobalEvent(StrEnum):
    """Why a frame gave no blobs at all: the whole image changed, or the background is still being learned."""

    START = "start"  # first frame, or a new frame size: the background is seeded
    WARMUP = "warmup"  # the background and its noise are still being learned
    EXPOSURE = "exposure"  # mean brightness jumped: exposure step, IR-cut switch
    CHANGE = "change"  # a large share of the frame changed at once: lights, a cloud's shadow, a big jolt

    @property
    def blinds(self) -> bool:
        """True for a true whole-frame change, after which new blobs are not trusted for a moment."""
        return self in (GlobalEvent.EXPOSURE, GlobalEvent.CHANGE)


class AlertLevel(StrEnum):
    """How sure the fall decision is: suspected alerts a person to look; confirmed is a fall by physics."""

    SUSPECTED = "suspected"
    CONFIRMED = "confirmed"


class UpdateKind(StrEnum):
    """What changed about an event: decided (new), level raised (update), or the object gone (end)."""

    NEW = "new"
    UPDATE = "update"
    END = "end"


@dataclass
class MotionResult:
    """What the prefilter found in one frame."""

    blobs: list[Blob]
    global_event: GlobalEvent | None = None
    shift: tuple[float, float] = (0.0, 0.0)
    dropped: int = 0  # blobs beyond max_blobs, the faintest, left out of a busy frame (rain, IR grain)


@dataclass
class Origin:
    """Where the object left the facade."""

    x: float
    y: float
    floor: int | None
    facade_x_m: float | None
    height_m: float | None = None


@dataclass
class Verdict:
    """The physics judgement of one track at one moment."""

    level: AlertLevel | None
    score: float
    reasons: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # the failed rules' names (edge.detect.fall), as `reasons`
    fall_m: float | None = None
    accel_g: float | None = None
    speed_mps: float | None = None
    origin: Origin | None = None
    verifier_score: float | None = None  # the learned second look's probability of a fall, when it looked


@dataclass
class FallEvent:
    """A detected fall, in source-resolution pixels and frame numbers."""

    id: str
    camera: str
    level: AlertLevel
    score: float
    start_frame: int
    alert_frame: int
    end_frame: int
    trajectory: list[tuple[int, float, float]]
    origin: Origin
    fall_m: float | None
    accel_g: float | None
    speed_mps: float | None
    fps: float
    ended: bool = False
    verifier_score: float | None = None  # the learned second look's probability of a fall, when it looked

    @classmethod
    def from_record(cls, rec: dict) -> FallEvent:
        """The event back from its JSON record (events.jsonl, event.json), to draw it again after a restart."""
        o = rec["origin"]
        return cls(
            id=rec["id"],
            camera=rec["camera"],
            level=AlertLevel(rec["level"]),
            score=rec["score"],
            start_frame=rec["start_frame"],
            alert_frame=rec["alert_frame"],
            end_frame=rec["end_frame"],
            trajectory=[(int(f), float(x), float(y)) for f, x, y in rec["trajectory"]],
            origin=Origin(o["x"], o["y"], o.get("floor"), o.get("facade_x_m"), o.get("height_m")),
            fall_m=rec.get("fall_m"),
            accel_g=rec.get("accel_g"),
            speed_mps=rec.get("speed_mps"),
            fps=rec["fps"],
            ended=rec.get("ended", False),
            verifier_score=rec.get("verifier_score"),
        )
