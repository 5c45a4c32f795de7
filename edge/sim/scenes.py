"""Named simulated scenes: a building, a camera, throws and distractors, all drawn from a seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Kinds of thrown object: size in metres, terminal speed in m/s (drag), grey level by day.
OBJECTS: dict[str, tuple[float, float, int]] = {
    "cigarette": (0.04, 7.0, 235),
    "bottle_cap": (0.03, 12.0, 225),
    "lighter": (0.05, 16.0, 60),
    "fruit": (0.08, 25.0, 70),
    "bottle": (0.12, 28.0, 200),
    "brick": (0.22, 40.0, 90),
    "shoe": (0.28, 22.0, 40),
    "paper": (0.15, 4.5, 245),
    "bag": (0.30, 5.0, 250),
}
HEAVY = ["fruit", "bottle", "brick", "shoe"]
TINY = ["cigarette", "bottle_cap", "lighter"]
LIGHT = ["paper", "bag"]


@dataclass
class Throw:
    """One object leaving a window."""

    time_s: float
    floor: int
    column: int
    kind: str
    velocity: tuple[float, float, float]  # m/s at release: along, up, out


@dataclass
class Scene:
    """Everything `edge sim` needs to render one clip."""

    name: str
    seed: int
    width: int = 1920
    height: int = 1080
    fps: float = 25.0
    duration_s: float = 12.0
    floors: int = 26
    columns: int = 10
    floor_height_m: float = 3.0
    distance_m: float = 28.0
    hfov_deg: float = 62.0
    night: bool = False
    throws: list[Throw] = field(default_factory=list)
    birds: int = 0
    leaves: int = 0
    trees: bool = False
    laundry: int = 0
    rain: float = 0.0  # streaks per frame per megapixel
    insects: int = 0
    window_switches: int = 0
    exposure_steps: int = 0
    clouds: float = 0.15  # contrast of the moving clouds
    shake_px: float = 0.0
    noise: float = 1.6
    crf: int = 21


def _lowest_visible_floor(scene: Scene) -> int:
    from edge.sim.render import scene_camera, visible_height_range  # render depends on this module

    lo, _ = visible_height_range(scene_camera(scene), scene)
    return max(1, int(np.ceil(lo / scene.floor_height_m)) + 1)


def _throws(
    rng: np.random.Generator,
    scene: Scene,
    kinds: list[str],
    count: int,
    gap_s: float | None = None,
    high: bool = False,
) -> list[Throw]:
    """Throws from windows at least two floors above the bottom of the view (higher ones when `high`)."""
    out = []
    low_floor = _lowest_visible_floor(scene) + 2
    if high:
        low_floor = (low_floor + scene.floors) // 2
    span = max(0.0, scene.duration_s - 5.5)
    for i in range(count):
        t = 1.8 + (rng.uniform(0, span) if gap_s is None else i * gap_s + 1.0)
        floor = int(rng.integers(low_floor, scene.floors + 1))
        column = int(rng.integers(0, scene.columns))
        if gap_s is not None and out:
            column = (out[-1].column + int(rng.integers(2, scene.columns - 1))) % scene.columns
        vel = (float(rng.uniform(-1.2, 1.2)), float(rng.uniform(-0.5, 1.5)), float(rng.uniform(0.5, 2.5)))
        out.append(Throw(round(t, 2), floor, column, str(rng.choice(kinds)), vel))
    return out


def _distractors_only(s: Scene) -> Scene:
    s.throws = []
    return s


def build_scene(name: str, seed: int, **overrides) -> Scene:
    """The scene called `name`, laid out from `seed`; overrides (width, height, duration_s ...) apply first."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; known: {', '.join(sorted(SCENES))}")
    rng = np.random.default_rng(seed)
    scene = Scene(name=name, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    scene.distance_m *= float(rng.uniform(0.85, 1.15))
    SCENES[name](scene, rng)
    return scene


def _throw(s, r):
    s.throws = _throws(r, s, HEAVY + LIGHT, 2)


def _tiny(s, r):
    s.distance_m, s.hfov_deg = 22.0, 40.0  # a longer lens on the upper floors resolves a bottle cap
    s.throws = _throws(r, s, TINY, 2, high=True)


def _light(s, r):
    s.throws = _throws(r, s, LIGHT, 2)


def _two(s, r):
    s.throws = _throws(r, s, HEAVY, 2, gap_s=0.3)


def _night(s, r):
    s.night, s.noise, s.clouds = True, 3.5, 0.0
    s.throws = _throws(r, s, HEAVY + LIGHT, 2)
    s.insects = 1


def _four_mp(s, r):
    s.width, s.height = 2560, 1440
    s.throws = _throws(r, s, HEAVY + TINY, 2)


def _far(s, r):
    s.distance_m, s.hfov_deg = 55.0, 50.0
    s.throws = _throws(r, s, HEAVY, 2)


def _mixed(s, r):
    s.throws = _throws(r, s, HEAVY + LIGHT + TINY, 2)
    s.birds, s.laundry, s.leaves, s.trees, s.clouds = 2, 3, 3, True, 0.25


def _birds(s, r):
    _distractors_only(s)
    s.birds = 5


def _leaves(s, r):
    _distractors_only(s)
    s.leaves, s.trees = 10, True


def _laundry(s, r):
    _distractors_only(s)
    s.laundry = 8


def _rain(s, r):
    _distractors_only(s)
    s.rain, s.clouds = 120.0, 0.3


def _insects(s, r):
    _distractors_only(s)
    s.night, s.noise, s.clouds, s.insects = True, 3.5, 0.0, 4


def _windows(s, r):
    _distractors_only(s)
    s.night, s.noise, s.clouds, s.window_switches = True, 3.0, 0.0, 12


def _exposure(s, r):
    _distractors_only(s)
    s.exposure_steps = 4


def _clouds(s, r):
    _distractors_only(s)
    s.clouds = 0.6


def _shake(s, r):
    _distractors_only(s)
    s.shake_px = 4.0


def _calm(s, r):
    _distractors_only(s)
    s.birds, s.laundry, s.leaves, s.trees, s.clouds = 2, 3, 3, True, 0.3


def _demo(s, r):
    s.throws = _throws(r, s, HEAVY, 1)
    s.birds, s.laundry = 2, 2


SCENES = {
    "throw": _throw,
    "tiny": _tiny,
    "light": _light,
    "two_throws": _two,
    "night": _night,
    "4mp": _four_mp,
    "far": _far,
    "mixed": _mixed,
    "birds": _birds,
    "leaves": _leaves,
    "laundry": _laundry,
    "rain": _rain,
    "insects": _insects,
    "windows": _windows,
    "exposure": _exposure,
    "clouds": _clouds,
    "shake": _shake,
    "calm": _calm,
    "demo": _demo,
}
