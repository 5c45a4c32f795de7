"""Named simulated scenes: a building, a camera, throws and distractors, all drawn from a seed."""

from __future__ import annotations

import zlib
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
    grey: int | None = None  # the object's grey level; None: its kind's usual tone
    size_scale: float = 1.0  # times its kind's usual size
    tumble: float = 0.0  # share of its area that comes and goes as it tumbles
    release_up_m: float = 1.3  # where it leaves the hand: above its storey's floor ...
    release_out_m: float = 0.25  # ... and in front of the wall


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
    # Rendering choices that `edge.sim.randomise` draws; these defaults are the plain renderer.
    randomised: bool = False
    bitrate_kbps: int | None = None  # encode at this bitrate instead of at `crf`
    gop_s: float = 2.0  # keyframe interval
    gamma: float = 1.0  # tone curve of the camera's output
    gain: float = 1.0  # exposure: brightness multiplier
    exposure_frac: float = 0.5  # shutter open this share of the frame interval: the length of motion blur
    noise_grain_px: float = 0.0  # spatial correlation of the sensor noise (IR grain is blotchy)
    fixed_pattern: float = 0.0  # std of a per-pixel offset that never changes
    dead_pixels: int = 0  # stuck dark or bright pixels
    vignette: float = 0.0  # share of brightness lost in the corners
    glare: float = 0.0  # strength of a light's halo in view
    droplets: int = 0  # water drops on the lens
    ir_switches: int = 0  # IR-cut filter switches: instant brightness and noise steps


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


def build_scene(name: str, seed: int, randomised: bool = False, **overrides) -> Scene:
    """The scene called `name`, laid out from `seed`; overrides (width, height, duration_s ...) win.

    `randomised` also draws the camera and the look of the image (edge.sim.randomise) from the seed.
    """
    from edge.sim.randomise import randomise_camera, randomise_look

    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; known: {', '.join(sorted(SCENES))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    # A randomised scene lays out its own throws: one seed must not give every scene the same ones.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())] if randomised else seed)
    # Its own stream, so the plain scenes stay as they were; the name too, so scenes of one seed differ.
    looks = np.random.default_rng([seed, 0x5EED, zlib.crc32(name.encode())])
    scene = Scene(name=name, seed=seed, randomised=randomised, **given)
    scene.distance_m *= float(rng.uniform(0.85, 1.15))
    if randomised:
        randomise_camera(scene, looks)
        for k, v in given.items():
            setattr(scene, k, v)
    SCENES[name](scene, rng)
    if randomised:
        randomise_look(scene, looks)
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


def _rain_throw(s, r):
    s.throws = _throws(r, s, HEAVY + LIGHT + TINY, 2)
    s.rain, s.clouds, s.droplets = 120.0, 0.3, 6


def _night_busy(s, r):
    s.night, s.noise, s.clouds = True, 5.0, 0.0
    s.throws = _throws(r, s, HEAVY + LIGHT + TINY, 2)
    s.insects, s.window_switches = 2, 4


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
    "rain_throw": _rain_throw,
    "night_busy": _night_busy,
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
