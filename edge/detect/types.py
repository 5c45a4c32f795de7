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

    level: str | None  # "suspected", "confirmed" or None
    score: float
    reasons: list[str] = field(default_factory=list)
    fall_m: float | None = None
    accel_g: float | None = None
    speed_mps: float | None = None
    origin: Origin | None = None


@dataclass
class FallEvent:
    """A detected fall, in source-resolution pixels and frame numbers."""

    id: str
    camera: str
    level: str
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
