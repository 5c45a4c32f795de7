"""Plain data passed between detection stages."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class MotionResult:
    """What the prefilter found in one frame."""

    blobs: list[Blob]
    global_event: str | None = None  # "exposure", "change", "rain", "shake" or None
    shift: tuple[float, float] = (0.0, 0.0)


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
