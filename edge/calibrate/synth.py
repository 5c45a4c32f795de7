"""Facade stills with known geometry, for tests and the calibration bench.

Two sources: the project's own renderer (`edge.sim`) seen at a yawed camera pose, and a painter of its own
with other facade layouts (balconies, ribbon windows, paired windows, no slab lines, clutter), so that the
proposal is measured on buildings the project's renderer never draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.sim.camera import PinholeCamera

RESOLUTIONS = [(1280, 720), (1920, 1080), (2560, 1440), (704, 576), (1280, 960)]  # NVR main and sub streams


@dataclass
class Layout:
    """One facade: storeys, bays and what a storey looks like."""

    floors: int
    bays: int
    floor_h: float
    bay_m: float
    style: str  # "grid", "balcony", "ribbon", "paired"
    slab_m: float  # thickness of the floor slab band (0: no visible slab)
    sill_m: float
    window_h: float
    window_w: float
    wall: tuple[int, int, int]
    slab_tone: float  # slab brightness relative to the wall
    clutter: float  # share of windows with an air conditioner box or laundry beside them

    @property
    def width_m(self) -> float:
        return self.bays * self.bay_m

    @property
    def top_m(self) -> float:
        return self.floors * self.floor_h


@dataclass
class Pose:
    """A camera at the foot of the building."""

    width: int
    height: int
    hfov_deg: float
    distance_m: float
    x_m: float
    yaw_deg: float
    roll_deg: float
    roof_at: float  # where the roof line sits, as a share of the frame height from the top (<0: out of view)


@dataclass
class KnownStill:
    """A rendered still and its truth: facade->image homography and each visible window's centre and floor."""

    image: np.ndarray
    facade_to_image: np.ndarray
    floor_h: float
    windows: list[tuple[int, float, float]] = field(default_factory=list)  # (floor, x px, y px)
    top_floor: int | None = None  # the highest floor, when the roof line is in view (painted stills only)

    def true_height(self, xy: np.ndarray) -> np.ndarray:
        """Facade height in metres (from the bottom of floor 1) of image pixels."""
        inv = np.linalg.inv(self.facade_to_image)
        return cv2.perspectiveTransform(np.asarray(xy, np.float64).reshape(-1, 1, 2), inv).reshape(-1, 2)[:, 1]


def random_layout(rng: np.random.Generator) -> Layout:
    """A residential facade: 12-34 storeys of 2.8-3.6 m, bays of 3-4.5 m, one of four styles."""
    style = str(rng.choice(["grid", "balcony", "ribbon", "paired"]))
    floor_h = float(rng.uniform(2.8, 3.6))
    bay = float(rng.uniform(3.0, 4.5))
    wall = tuple(int(c) for c in rng.integers(90, 230, 3))
    return Layout(
        floors=int(rng.integers(12, 35)),
        bays=int(rng.integers(6, 16)),
        floor_h=floor_h,
        bay_m=bay,
        style=style,
        slab_m=float(rng.uniform(0.12, 0.4)) if rng.random() < 0.75 else 0.0,
        sill_m=float(rng.uniform(0.5, 1.0)),
        window_h=float(rng.uniform(1.2, min(1.9, floor_h - 1.2))),
        window_w=float(rng.uniform(0.35, 0.7)) * bay,
        wall=wall,  # type: ignore[arg-type]
        slab_tone=float(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.1, 1.3)])),
        clutter=float(rng.uniform(0.0, 0.4)),
    )


def random_pose(rng: np.random.Generator, layout: Layout, size: tuple[int, int] | None = None) -> Pose:
    """A camera 12-60 m out, anywhere along the facade, yawed up to 35 degrees and rolled up to 5."""
    w, h = size or RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
    return Pose(
        width=w,
        height=h,
        hfov_deg=float(rng.uniform(45, 100)),
        distance_m=float(rng.uniform(12, 60)),
        x_m=float(rng.uniform(0.2, 0.8)) * layout.width_m,
        yaw_deg=float(rng.uniform(-35, 35)),
        roll_deg=float(rng.uniform(-5, 5)),
        roof_at=float(rng.uniform(-0.3, 0.3)),
    )


def pose_homography(pose: Pose, top_m: float) -> np.ndarray:
    """Facade metres -> image pixels for a pose, the roll applied as a rotation about the image centre."""
    cam = PinholeCamera.looking_up(
        pose.width, pose.height, pose.hfov_deg, pose.distance_m, pose.x_m, top_m, pose.roof_at, pose.yaw_deg
    )
    c = np.array([[1, 0, pose.width / 2], [0, 1, pose.height / 2], [0, 0, 1.0]])
    r = math.radians(pose.roll_deg)
    rot = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1.0]])
    return c @ rot @ np.linalg.inv(c) @ cam.facade_homography()


Windows = list[tuple[int, float, float]]


def _paint(layout: Layout, rng: np.random.Generator, ppm: float) -> tuple[np.ndarray, Windows]:
    """The facade texture (top row = roof) and each window's (floor, centre x m, centre y m)."""
    tw, th = int(layout.width_m * ppm), int(layout.top_m * ppm)
    wall = np.array(layout.wall, np.float32)
    noise = cv2.resize(rng.normal(0, 1, (th // 12 + 2, tw // 12 + 2)).astype(np.float32), (tw, th))
    tex = np.clip(wall + noise[..., None] * rng.uniform(3, 12), 0, 255).astype(np.uint8)

    def px(x_m: float, y_m: float) -> tuple[int, int]:
        return int(round(x_m * ppm)), int(round(th - y_m * ppm))

    def rect(x0, y0, x1, y1, colour) -> None:
        a, b = px(x0, y1), px(x1, y0)
        cv2.rectangle(tex, a, b, tuple(int(c) for c in colour), -1)

    windows = []
    slab = np.clip(wall * layout.slab_tone, 0, 255)
    for floor in range(1, layout.floors + 1):
        base = (floor - 1) * layout.floor_h
        if layout.style == "ribbon":
            rect(0, base + layout.sill_m, layout.width_m, base + layout.sill_m + layout.window_h, (60, 66, 70))
        if layout.style == "balcony":  # a railing band across each bay, lighter than the wall
            rail = np.clip(wall * rng.uniform(1.05, 1.25), 0, 255)
            for bay in range(layout.bays):
                x = bay * layout.bay_m
                rect(x + 0.2, base, x + layout.bay_m - 0.2, base + 1.05, rail)
        for bay in range(layout.bays):
            x = (bay + 0.5) * layout.bay_m
            shade = rng.integers(30, 110)
            glass = (shade + rng.integers(0, 25), shade + rng.integers(0, 15), shade)
            centres = [x] if layout.style != "paired" else [x - layout.bay_m / 4, x + layout.bay_m / 4]
            ww = layout.window_w if layout.style != "paired" else layout.window_w / 2
            for cx in centres:
                y0 = base + (layout.sill_m if layout.style != "balcony" else 1.1)
                y1 = min(base + layout.floor_h - 0.3, y0 + layout.window_h)
                if layout.style != "ribbon":
                    rect(cx - ww / 2, y0, cx + ww / 2, y1, glass)
                    if rng.random() < 0.5:  # a mullion
                        rect(cx - 0.03, y0, cx + 0.03, y1, wall * 0.9)
                windows.append((floor, cx, (y0 + y1) / 2))
                if rng.random() < layout.clutter:  # an air conditioner box or laundry: clutter between floors
                    bx = cx + rng.choice([-1, 1]) * (ww / 2 + 0.5)
                    by = base + rng.uniform(0.2, layout.floor_h - 0.8)
                    rect(bx - 0.4, by, bx + 0.4, by + 0.55, rng.integers(150, 250, 3))
        if layout.slab_m > 0:
            rect(0, base, layout.width_m, base + layout.slab_m, slab)
    rect(0, layout.top_m - 0.6, layout.width_m, layout.top_m, wall * 0.8)  # parapet
    return tex, windows


def render_still(layout: Layout, pose: Pose, seed: int) -> KnownStill:
    """The facade seen from `pose` over a sky, with noise, blur, tone, vignette, trees and JPEG applied."""
    rng = np.random.default_rng(seed)
    h_img = pose_homography(pose, layout.top_m)
    f = pose.width / 2 / math.tan(math.radians(pose.hfov_deg) / 2)
    ppm = float(np.clip(f / pose.distance_m * 1.2, 6, 36))
    tex, windows = _paint(layout, rng, ppm)
    tw, th = tex.shape[1], tex.shape[0]
    m = np.array([[1 / ppm, 0, 0], [0, -1 / ppm, layout.top_m], [0, 0, 1]])
    size = (pose.width, pose.height)
    rgb = cv2.warpPerspective(tex, h_img @ m, size, flags=cv2.INTER_AREA).astype(np.float32)
    weight = cv2.warpPerspective(np.ones((th, tw), np.float32), h_img @ m, size, flags=cv2.INTER_LINEAR)
    v = np.linspace(0, 1, pose.height, dtype=np.float32)[:, None, None]
    sky_top = rng.uniform([120, 90, 50], [230, 200, 170]).astype(np.float32)
    sky = sky_top * (1 - v) + np.float32(225) * v
    img = rgb * weight[..., None] + sky * (1 - weight[..., None])
    trees = []
    for _ in range(int(rng.integers(0, 4))):  # crowns in front of the lower floors
        c = (float(rng.uniform(0, pose.width)), float(rng.uniform(0.75, 1.05) * pose.height))
        r = float(rng.uniform(0.06, 0.18) * pose.height)
        cv2.circle(img, (int(c[0]), int(c[1])), int(r), rng.uniform([20, 50, 20], [60, 110, 60]).tolist(), -1)
        trees.append((c, r))
    gain, gamma = float(rng.uniform(0.6, 1.3)), float(rng.uniform(0.7, 1.4))
    img = 255.0 * np.clip(img * gain / 255.0, 0, 1) ** gamma
    yy, xx = np.mgrid[0 : pose.height, 0 : pose.width].astype(np.float32)
    r2 = ((xx - pose.width / 2) ** 2 + (yy - pose.height / 2) ** 2) / (pose.width**2 / 4 + pose.height**2 / 4)
    img *= (1 - float(rng.uniform(0, 0.4)) * r2)[..., None]
    blur = float(rng.uniform(0, 1.3))
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.normal(0, rng.uniform(1, 7), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
    out = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    still = KnownStill(out, h_img, layout.floor_h)
    still.windows = _visible(windows, h_img, pose, trees)
    roof = [(layout.floors + 1, x, layout.top_m) for x in np.linspace(0, layout.width_m, 9)]
    still.top_floor = layout.floors if _visible(roof, h_img, pose, []) else None
    return still


def _visible(windows, h_img, pose: Pose, trees) -> list[tuple[int, float, float]]:
    pts = np.array([[x, y] for _, x, y in windows], np.float64).reshape(-1, 1, 2)
    img = cv2.perspectiveTransform(pts, h_img).reshape(-1, 2)
    w = (h_img @ np.column_stack([pts.reshape(-1, 2), np.ones(len(windows))]).T)[2]
    out = []
    for (floor, _, _), (x, y), depth in zip(windows, img, w, strict=True):
        inside = 0 <= x < pose.width and 0 <= y < pose.height and depth > 0
        hidden = any(math.hypot(x - c[0], y - c[1]) < r for c, r in trees)
        if inside and not hidden:
            out.append((floor, float(x), float(y)))
    return out


def sim_still(scene_name: str, seed: int, yaw_deg: float = 0.0) -> KnownStill:
    """Frame 0 of the project's randomised simulated scene, its camera yawed by `yaw_deg`."""
    from edge.sim.render import WINDOW_PITCH_M, Renderer, scene_camera
    from edge.sim.scenes import build_scene

    scene = build_scene(scene_name, seed, randomised=True)
    base = scene_camera(scene)
    cam = PinholeCamera(base.width, base.height, base.hfov_deg, base.position, base.pitch_deg, yaw_deg)

    class _Posed(Renderer):
        # The renderer picks its camera from the scene; this one is given (setting it is ignored).
        cam = property(lambda self: self._given, lambda self, value: None)

    r = _Posed.__new__(_Posed)
    r._given = cam
    Renderer.__init__(r, scene)
    frame, _ = r.render(0)
    still = KnownStill(frame, r.h_img, scene.floor_height_m)
    pose = Pose(scene.width, scene.height, scene.hfov_deg, scene.distance_m, 0, yaw_deg, 0, 0)
    centres = [
        (floor, (col + 0.5) * WINDOW_PITCH_M, (floor - 1) * scene.floor_height_m + 1.65)
        for floor, col, _ in r.windows
    ]
    trees = [(tuple(cam.project(c[None])[0][0]), rad * cam.f / 14) for c, rad in r.trees]
    still.windows = _visible(centres, r.h_img, pose, trees)
    return still
