"""Renders a simulated scene frame by frame, with the ground truth of every throw.

The facade is a textured plane warped into a pinhole camera; thrown objects, birds and leaves move in
3D under their own physics and are drawn with sub-pixel coverage and motion blur; trees, laundry, rain,
insects, lights, exposure steps, clouds, shake, sensor noise and H.264 compression are layered on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.sim.camera import PinholeCamera
from edge.sim.scenes import OBJECTS, Scene, Throw

G = 9.81
WINDOW_PITCH_M = 3.6
IR_SWITCH_GAIN = (0.55, 1.8)  # brightness step when the IR-cut filter switches (day optics <-> IR lamp)
IR_SWITCH_NOISE = 1.5  # the gain the camera adds with the IR lamp raises its noise by about this much
_LUMA_BGR = np.array([0.114, 0.587, 0.299])  # BT.601 weights, in OpenCV's channel order
MIN_NOISE = 0.5  # luma levels: quantisation and codec noise stay when the sensor noise is set to zero


def scene_camera(scene: Scene) -> PinholeCamera:
    """The camera of a scene: centred on the building, roof near the top of the frame."""
    rng = np.random.default_rng(scene.seed + 7)
    width_m = scene.columns * WINDOW_PITCH_M
    x = width_m / 2 + float(rng.uniform(-3, 3))
    return PinholeCamera.looking_up(
        scene.width, scene.height, scene.hfov_deg, scene.distance_m, x, scene.floors * scene.floor_height_m
    )


def visible_height_range(cam: PinholeCamera, scene: Scene) -> tuple[float, float]:
    """Lowest and highest facade heights seen at the centre column of the image."""
    hinv = np.linalg.inv(cam.facade_homography())
    pts = cv2.perspectiveTransform(np.array([[[cam.width / 2, cam.height - 1.0]], [[cam.width / 2, 0.0]]]), hinv)
    return float(pts[0, 0, 1]), float(pts[1, 0, 1])


@dataclass
class _Mover:
    """Anything drawn as a blurred blob moving in 3D: position as a function of time."""

    start_s: float
    end_s: float
    size_m: float
    grey: int
    kind: str

    def position(self, t: float) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def opacity(self, t: float) -> float:
        return 1.0


class _Falling(_Mover):
    """A thrown object: gravity and quadratic drag, integrated finely once."""

    def __init__(self, throw: Throw, scene: Scene, dt: float):
        size, vt, grey = OBJECTS[throw.kind]
        size *= throw.size_scale
        super().__init__(
            throw.time_s, throw.time_s + 30.0, size, grey if throw.grey is None else throw.grey, throw.kind
        )
        self.throw = throw
        self.tone_fixed = throw.grey is not None  # a drawn tone is the tone seen, day or night
        self.tumble_hz = 1.5 + 2.0 * ((throw.column * 37 + round(throw.time_s * 100)) % 100) / 100
        base = (throw.floor - 1) * scene.floor_height_m
        x = (throw.column + 0.5) * WINDOW_PITCH_M
        p = np.array([x, base + throw.release_up_m, throw.release_out_m])
        v = np.array(throw.velocity, dtype=float)
        k = G / vt**2
        self.dt = dt / 8
        n = int(30.0 / self.dt)
        path = np.empty((n, 3))
        for i in range(n):
            path[i] = p
            a = np.array([0.0, -G, 0.0]) - k * np.linalg.norm(v) * v
            v = v + a * self.dt
            p = p + v * self.dt
            if p[1] < 0:
                path[i + 1 :] = p
                break
        self.path = path
        self.origin = path[0]

    def position(self, t: float) -> np.ndarray:
        i = int(np.clip((t - self.start_s) / self.dt, 0, len(self.path) - 1))
        return self.path[i]

    def opacity(self, t: float) -> float:
        # A flat object tumbling shows more and less of itself to the camera.
        return 1.0 - self.throw.tumble * 0.5 * (1 + math.sin(2 * math.pi * self.tumble_hz * (t - self.start_s)))


class _Bird(_Mover):
    """Glides, flaps along, or swoops and pulls out; never falls freely."""

    def __init__(self, rng: np.random.Generator, scene: Scene, cam: PinholeCamera, lo: float, hi: float):
        start = float(rng.uniform(0, max(0.5, scene.duration_s - 4)))
        super().__init__(start, start + 8.0, float(rng.uniform(0.25, 0.45)), int(rng.integers(25, 70)), "bird")
        self.mode = str(rng.choice(["glide", "flap", "swoop"]))
        side = float(rng.choice([-1.0, 1.0]))
        width = scene.columns * WINDOW_PITCH_M
        self.p0 = np.array([width / 2 - side * (width / 2 + 8), rng.uniform(lo + 6, hi), rng.uniform(4, 14)])
        speed = float(rng.uniform(8, 13))
        self.v = np.array([side * speed, 0.0, 0.0])
        if self.mode == "glide":
            self.v[1] = -rng.uniform(0.5, 2.0)
        self.phase = float(rng.uniform(0, 6.28))
        self.swoop_at = float(rng.uniform(1.0, 2.5))

    def position(self, t: float) -> np.ndarray:
        s = t - self.start_s
        p = self.p0 + self.v * s
        if self.mode == "flap":
            p[1] += 0.3 * math.sin(2 * math.pi * 4 * s + self.phase) + 0.4 * s
        elif self.mode == "swoop" and s > self.swoop_at:
            # a dive at 30-45 degrees below horizontal for about a second, then a pull-out and climb
            u = s - self.swoop_at
            p[1] -= 0.8 * abs(self.v[0]) * (u - u**2 / 2.4) if u < 1.2 else 0.8 * abs(self.v[0]) * 0.6 - (u - 1.2)
        return p

    def opacity(self, t: float) -> float:
        return 0.65 + 0.35 * abs(math.sin(2 * math.pi * 5 * (t - self.start_s) + self.phase))


class _Leaf(_Mover):
    """Falls slowly at terminal speed, swaying and tumbling."""

    def __init__(self, rng: np.random.Generator, scene: Scene, crown: np.ndarray):
        start = float(rng.uniform(0, max(0.5, scene.duration_s - 3)))
        super().__init__(start, start + 20.0, float(rng.uniform(0.05, 0.1)), int(rng.integers(30, 90)), "leaf")
        self.p0 = crown + rng.uniform(-2.0, 2.0, 3) * np.array([1.0, 0.6, 1.0])
        self.vt = float(rng.uniform(0.9, 1.6))
        self.sway = float(rng.uniform(0.3, 0.6))
        self.freq = float(rng.uniform(0.6, 1.2))
        self.drift = float(rng.uniform(-0.6, 0.6))
        self.phase = float(rng.uniform(0, 6.28))

    def position(self, t: float) -> np.ndarray:
        s = t - self.start_s
        w = 2 * math.pi * self.freq * s + self.phase
        return self.p0 + np.array([self.sway * math.sin(w) + self.drift * s, -self.vt * s, 0.3 * math.cos(w)])

    def opacity(self, t: float) -> float:
        return 0.4 + 0.6 * abs(math.sin(2 * math.pi * 1.7 * (t - self.start_s) + self.phase))


def _splat(
    frame: np.ndarray, p0: np.ndarray, p1: np.ndarray, width_px: float, grey: float, opacity: float
) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Composite a motion-blurred round object from p0 to p1, conserving its coverage when sub-pixel."""
    ss = 4
    r = max(width_px, 1.0) / 2 + 2
    x0, y0 = int(math.floor(min(p0[0], p1[0]) - r)), int(math.floor(min(p0[1], p1[1]) - r))
    x1, y1 = int(math.ceil(max(p0[0], p1[0]) + r)), int(math.ceil(max(p0[1], p1[1]) + r))
    h, w = frame.shape[:2]
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h or x1 - x0 > 600 or y1 - y0 > 600:
        return None
    canvas = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.float32)
    a = ((p0 - (x0, y0)) * ss * 16).round().astype(int)
    b = ((p1 - (x0, y0)) * ss * 16).round().astype(int)
    thick = max(1, round(width_px * ss))
    cv2.line(canvas, tuple(a), tuple(b), 1.0, thickness=thick, lineType=cv2.LINE_AA, shift=4)
    alpha = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    total = float(alpha.sum())
    if total <= 0:
        return None
    alpha *= min(1.0, (math.pi / 4 * width_px**2) / total * (1 + math.hypot(*(p1 - p0)) / max(width_px, 1e-3)))
    alpha = np.clip(alpha * opacity, 0, 1)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    al = alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]
    roi = frame[cy0:cy1, cx0:cx1].astype(np.float32)
    if roi.size == 0:
        return None
    frame[cy0:cy1, cx0:cx1] = (roi * (1 - al) + grey * al).round().astype(np.uint8)
    # The pixel the object changes most, with its value before and after: the object's contrast.
    py, px = np.unravel_index(int(np.argmax(al[..., 0])), al.shape[:2])
    before = roi[py, px].astype(np.float64)  # B, G, R
    return cx0 + int(px), cy0 + int(py), before, before + (grey - before) * float(al[py, px, 0])


class Renderer:
    """Draws the frames of one scene; `truth()` describes its throws."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.rng = np.random.default_rng(scene.seed + 1000)
        self.cam = scene_camera(scene)
        self.h_img = self.cam.facade_homography()
        self.lo, self.hi = visible_height_range(self.cam, scene)
        self.dt = 1.0 / scene.fps
        self.windows = self._window_polygons()
        self.lit = self.rng.random(len(self.windows)) < (0.3 if scene.night else 0.0)
        self.facade_rgb, self.facade_w = self._facade_layer()
        self.sky = self._sky_gradient()
        self.cloud_tex = self._cloud_texture() if scene.clouds > 0 else None
        self.throws = [_Falling(t, scene, self.dt) for t in scene.throws]
        self.birds = [_Bird(self.rng, scene, self.cam, self.lo, self.hi) for _ in range(scene.birds)]
        self.trees = self._trees() if scene.trees else []
        crowns = [c for c, _ in self.trees] or [np.array([self.cam.position[0], self.lo + 4, 10.0])]
        self.leaves = [_Leaf(self.rng, scene, crowns[i % len(crowns)]) for i in range(scene.leaves)]
        self.laundry = [self._laundry_item() for _ in range(scene.laundry)]
        self.insects = [self._insect() for _ in range(scene.insects)]
        n = int(scene.duration_s * scene.fps)
        self.switches = sorted(
            (int(self.rng.integers(0, n)), int(self.rng.integers(len(self.windows))))
            for _ in range(scene.window_switches)
        )
        self.exposure = sorted(
            (int(self.rng.integers(scene.fps, n)), float(self.rng.choice([0.7, 1.35])))
            for _ in range(scene.exposure_steps)
        )
        self.gain = 1.0
        self.shake = self._shake_track(n)
        self._static: np.ndarray | None = None
        self._looks = _Looks(scene, self.rng, n) if scene.randomised else None
        self.droplets = [self._droplet() for _ in range(scene.droplets)]

    # -- static layers -------------------------------------------------------------------------------------
    def _window_polygons(self) -> list[tuple[int, int, np.ndarray]]:
        s = self.scene
        out = []
        for floor in range(1, s.floors + 1):
            base = (floor - 1) * s.floor_height_m
            for col in range(s.columns):
                x = (col + 0.5) * WINDOW_PITCH_M
                quad = np.array(
                    [
                        [x - 0.8, base + 0.9],
                        [x + 0.8, base + 0.9],
                        [x + 0.8, base + 2.4],
                        [x - 0.8, base + 2.4],
                    ]
                )
                img = cv2.perspectiveTransform(quad.reshape(-1, 1, 2), self.h_img).reshape(-1, 2)
                out.append((floor, col, img))
        return out

    def _facade_layer(self) -> tuple[np.ndarray, np.ndarray]:
        s, rng = self.scene, self.rng
        day = not s.night
        width_m, top = s.columns * WINDOW_PITCH_M, s.floors * s.floor_height_m
        ppm = float(np.clip(self.cam.f / s.distance_m * 1.3, 8, 40))
        tw, th = int(width_m * ppm), int(top * ppm)
        wall = np.array([172, 188, 204] if day else [48, 48, 48], np.float32)
        noise = cv2.resize(rng.normal(0, 1, (th // 16 + 2, tw // 16 + 2)).astype(np.float32), (tw, th))
        tex = np.clip(wall + noise[..., None] * (7 if day else 3), 0, 255).astype(np.uint8)
        for floor in range(1, s.floors + 1):
            y = int(th - (floor - 1) * s.floor_height_m * ppm)
            cv2.rectangle(tex, (0, y - int(0.25 * ppm)), (tw, y), (138, 150, 162) if day else (35, 35, 35), -1)
        m = np.array([[1 / ppm, 0, 0], [0, -1 / ppm, top], [0, 0, 1]])
        warp = self.h_img @ m
        size = (s.width, s.height)
        rgb = cv2.warpPerspective(tex, warp, size, flags=cv2.INTER_AREA)
        weight = cv2.warpPerspective(np.ones((th, tw), np.float32), warp, size, flags=cv2.INTER_LINEAR)
        for i, (_, _, quad) in enumerate(self.windows):
            shade = int(rng.integers(55, 95)) if day else int(rng.integers(18, 30))
            cv2.fillPoly(
                rgb,
                [(quad * 16).round().astype(np.int32)],
                (shade + 15, shade + 5, shade),
                lineType=cv2.LINE_AA,
                shift=4,
            )
            if self.lit[i]:
                self._paint_window(rgb, i, True)
        return rgb, weight

    def _paint_window(self, rgb: np.ndarray, i: int, on: bool) -> None:
        quad = self.windows[i][2]
        colour = (150, 200, 225) if on else (24, 22, 20)
        cv2.fillPoly(rgb, [(quad * 16).round().astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=4)

    def _sky_gradient(self) -> np.ndarray:
        s = self.scene
        v = np.linspace(0, 1, s.height, dtype=np.float32)[:, None, None]
        top = np.array([200, 150, 95] if not s.night else [22, 22, 22], np.float32)
        low = np.array([235, 215, 190] if not s.night else [38, 38, 38], np.float32)
        return np.broadcast_to(top * (1 - v) + low * v, (s.height, s.width, 3)).copy()

    def _cloud_texture(self) -> np.ndarray:
        s, rng = self.scene, self.rng
        w, h = s.width * 2, s.height
        tex = np.zeros((h, w), np.float32)
        for octave, amp in ((48, 1.0), (16, 0.5), (6, 0.25)):
            small = rng.random((h // (s.height // octave) + 2, w // (s.height // octave) + 2)).astype(np.float32)
            tex += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * amp
        tex = np.clip((tex - tex.mean()) / (tex.std() + 1e-6) * 0.5 + 0.3, 0, 1)
        return tex

    def _trees(self) -> list[tuple[np.ndarray, float]]:
        out = []
        elev = math.radians(self.cam.pitch_deg) - math.atan(self.cam.height / 2 / self.cam.f) + math.radians(4)
        for side in (-1, 1):
            dist = float(self.rng.uniform(12, 16))
            crown = np.array(
                [
                    self.cam.position[0] + side * self.rng.uniform(5, 9),
                    1.5 + dist * math.tan(elev),
                    self.cam.position[2] - dist,
                ]
            )
            out.append((crown, float(self.rng.uniform(1.8, 2.6))))
        return out

    def _laundry_item(self) -> dict:
        s = self.scene
        floor = int(self.rng.integers(max(2, int(self.lo / s.floor_height_m) + 2), s.floors))
        col = int(self.rng.integers(0, s.columns))
        x = (col + 0.5) * WINDOW_PITCH_M + float(self.rng.uniform(-0.6, 0.6))
        return {
            "x": x,
            "y": (floor - 1) * s.floor_height_m + 1.0,
            "len": float(self.rng.uniform(0.6, 1.1)),
            "colour": tuple(int(c) for c in self.rng.integers(40, 250, 3)),
            "freq": float(self.rng.uniform(0.8, 2.5)),
            "phase": float(self.rng.uniform(0, 6.28)),
        }

    def _insect(self) -> dict:
        s = self.scene
        return {
            "p": np.array([self.rng.uniform(0, s.width), self.rng.uniform(0, s.height)]),
            "v": self.rng.normal(0, 8, 2),
            "r": float(self.rng.uniform(4, 14) * s.width / 1920),
            "start": float(self.rng.uniform(0, s.duration_s / 2)),
        }

    def _shake_track(self, n: int) -> np.ndarray:
        amp = self.scene.shake_px * self.scene.width / 1920
        if amp <= 0:
            return np.zeros((n, 2))
        t = np.arange(n) * self.dt
        gust = (np.sin(2 * np.pi * t / 4.0) > -0.2).astype(float)  # shakes in gusts, calm in between
        jitter = self.rng.normal(0, 1, (n, 2))
        jitter = cv2.GaussianBlur(jitter, (1, 5), 1.2)
        return (
            np.column_stack([np.sin(2 * np.pi * 2.3 * t), np.cos(2 * np.pi * 1.7 * t)]) * amp * gust[:, None]
            + jitter * amp * 0.3 * gust[:, None]
        )

    # -- frames --------------------------------------------------------------------------------------------
    def _background(self, i: int) -> np.ndarray:
        for frame, win in self.switches:
            if frame == i:
                self.lit[win] = not self.lit[win]
                self._paint_window(self.facade_rgb, win, bool(self.lit[win]))
                self._static = None
        if self.cloud_tex is None and self._static is not None:
            return self._static.copy()
        sky = self.sky
        if self.cloud_tex is not None:
            shift = int(i * 1.5 * self.scene.width / 1920) % self.scene.width
            cloud = self.cloud_tex[:, shift : shift + self.scene.width, None] * self.scene.clouds
            white = 250.0 if not self.scene.night else 60.0
            sky = sky * (1 - cloud) + white * cloud
        wgt = self.facade_w[..., None]
        out = (self.facade_rgb.astype(np.float32) * wgt + sky * (1 - wgt)).astype(np.uint8)
        if self.cloud_tex is None:
            self._static = out
            return out.copy()
        return out

    def _draw_mover(self, frame: np.ndarray, m: _Mover, t: float, shake: np.ndarray) -> tuple | None:
        if not (m.start_s <= t <= m.end_s):
            return None
        pts, z = self.cam.project(np.array([m.position(t - self.scene.exposure_frac * self.dt), m.position(t)]))
        if (z <= 0.5).any():
            return None
        pts = pts + shake
        width_px = m.size_m * self.cam.f / float(z[1])
        fixed = getattr(m, "tone_fixed", False)
        grey = m.grey if fixed or not self.scene.night else min(255, m.grey + 120)
        change = _splat(frame, pts[0], pts[1], width_px, grey, m.opacity(t))
        mid = (pts[0] + pts[1]) / 2
        return float(mid[0]), float(mid[1]), width_px, change

    def render(self, i: int) -> tuple[np.ndarray, dict[int, tuple[float, float, float, float]]]:
        """Frame i (BGR uint8) and each throw's image position, width and contrast-to-noise ratio in it."""
        s = self.scene
        t = i * self.dt
        shake = self.shake[i]
        frame = self._background(i)
        for item in self.laundry:
            self._draw_laundry(frame, item, t)
        for bird in self.birds:
            self._draw_mover(frame, bird, t, shake)
        truth = {}
        for k, throw in enumerate(self.throws):
            got = self._draw_mover(frame, throw, t, shake)
            if got is not None and 0 <= got[0] < s.width and 0 <= got[1] < s.height:
                truth[k] = got
        crowns = self._draw_trees(frame, t)  # in front of the facade and of anything falling along it
        truth = {
            k: v for k, v in truth.items() if not any(np.hypot(v[0] - c[0], v[1] - c[1]) < r for c, r in crowns)
        }
        for leaf in self.leaves:
            self._draw_mover(frame, leaf, t, shake)
        self._draw_insects(frame, i)
        self._draw_rain(frame)
        for when, gain in self.exposure:
            if i >= when:
                self.gain = 1.0 + (gain - 1.0) * min(1.0, (i - when + 1) / 4)
        if self.gain != 1.0 and self._looks is None:
            frame = cv2.convertScaleAbs(frame, alpha=self.gain)
        if shake.any():
            m = np.float32([[1, 0, shake[0]], [0, 1, shake[1]]])
            frame = cv2.warpAffine(frame, m, (s.width, s.height), borderMode=cv2.BORDER_REFLECT)
        if self._looks is not None:
            self._draw_droplets(frame, i)
            frame, cnr = self._looks.apply(frame, i, self.gain)
            return frame, {k: (x, y, w, cnr(c)) for k, (x, y, w, c) in truth.items()}
        noise = np.empty(frame.shape, np.int16)
        cv2.setRNGSeed((s.seed * 100_003 + i) % 2**31)  # OpenCV's generator is global: seed it per frame
        cv2.randn(noise, 0, s.noise)
        frame = cv2.add(frame, noise, dtype=cv2.CV_8U) if s.noise > 0 else frame
        if s.night:
            frame = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return frame, {k: (x, y, w, _plain_cnr(c, self.gain, s.noise)) for k, (x, y, w, c) in truth.items()}

    def _draw_laundry(self, frame: np.ndarray, item: dict, t: float) -> None:
        w = 2 * math.pi * item["freq"] * t + item["phase"]
        x, y, ln = item["x"], item["y"], item["len"]
        swing, out = 0.25 * math.sin(w), 0.3 + 0.25 * math.sin(1.3 * w)
        quad = np.array(
            [
                [x - 0.3, y, 0.3],
                [x + 0.3, y, 0.3],
                [x + 0.3 + swing, y - ln, out],
                [x - 0.3 + swing * 0.7, y - ln * (0.9 + 0.1 * math.sin(3 * w)), out],
            ]
        )
        pts, z = self.cam.project(quad)
        if (z > 0).all():
            cv2.fillPoly(frame, [(pts * 16).round().astype(np.int32)], item["colour"], cv2.LINE_AA, shift=4)

    def _draw_trees(self, frame: np.ndarray, t: float) -> list[tuple[np.ndarray, int]]:
        """Draw the swaying crowns; returns their circles (centre, radius), which hide what is behind."""
        circles = []
        for k, (crown, radius) in enumerate(self.trees):
            for j in range(7):
                ang = j * 0.9 + k
                sway = 0.35 * math.sin(2 * math.pi * 0.4 * t + j * 0.7) + 0.1 * math.sin(2 * math.pi * 1.3 * t + j)
                centre = crown + np.array([math.cos(ang) * radius * 0.5 + sway, math.sin(ang) * radius * 0.4, 0.0])
                (c,), (z,) = self.cam.project(centre[None])
                r = int(radius * 0.45 * self.cam.f / z)
                if z > 0:
                    shade = (30 + 5 * j, 70 + 6 * j, 40 + 3 * j)
                    cv2.circle(frame, (int(c[0]), int(c[1])), r, shade, -1, cv2.LINE_AA)
                    circles.append((c, r))
        return circles

    def _draw_insects(self, frame: np.ndarray, i: int) -> None:
        s = self.scene
        for ins in self.insects:
            if i * self.dt < ins["start"]:
                continue
            ins["v"] = ins["v"] * 0.8 + self.rng.normal(0, 6, 2) * s.width / 1920
            ins["p"] = (ins["p"] + ins["v"]) % (s.width, s.height)
            r = ins["r"] * (0.8 + 0.4 * self.rng.random())
            box = int(r * 3)
            x, y = int(ins["p"][0]), int(ins["p"][1])
            x0, y0, x1, y1 = max(0, x - box), max(0, y - box), min(s.width, x + box), min(s.height, y + box)
            if x1 <= x0 or y1 <= y0:
                continue
            patch = np.zeros((y1 - y0, x1 - x0), np.float32)
            cv2.circle(patch, (x - x0, y - y0), max(1, int(r)), 1.0, -1, cv2.LINE_AA)
            patch = cv2.GaussianBlur(patch, (0, 0), max(1.0, r / 2))[..., None] * 0.8
            roi = frame[y0:y1, x0:x1].astype(np.float32)
            frame[y0:y1, x0:x1] = (roi * (1 - patch) + 230 * patch).astype(np.uint8)

    def _draw_rain(self, frame: np.ndarray) -> None:
        s = self.scene
        n = int(s.rain * s.width * s.height / 1e6)
        if n <= 0:
            return
        layer = np.zeros(frame.shape[:2], np.uint8)
        xs = self.rng.uniform(0, s.width, n)
        ys = self.rng.uniform(0, s.height, n)
        ln = self.rng.uniform(15, 60, n) * s.width / 1920
        for x, y, length in zip(xs, ys, ln, strict=True):
            cv2.line(
                layer,
                (int(x), int(y)),
                (int(x + 0.15 * length), int(y + length)),
                int(self.rng.integers(20, 70)),
                1,
                cv2.LINE_AA,
            )
        frame[:] = cv2.add(frame, cv2.cvtColor(layer, cv2.COLOR_GRAY2BGR))

    def _droplet(self) -> dict:
        s, rng = self.scene, self.rng
        scale = s.width / 1920
        return {
            "p": np.array([rng.uniform(0, s.width), rng.uniform(0, s.height)]),
            "r": float(rng.uniform(6, 40) * scale),
            # most drops cling to the lens; some run down it, slowly and at a steady pace
            "v": float(rng.uniform(0.3, 2.0) * scale) if rng.random() < 0.4 else 0.0,
        }

    def _draw_droplets(self, frame: np.ndarray, i: int) -> None:
        """Water on the lens: each drop blurs and brightens what is behind it."""
        s = self.scene
        for d in self.droplets:
            d["p"][1] = (d["p"][1] + d["v"]) % s.height
            r = max(2, int(d["r"]))
            x, y = int(d["p"][0]), int(d["p"][1])
            x0, y0, x1, y1 = max(0, x - r), max(0, y - r), min(s.width, x + r), min(s.height, y + r)
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            roi = frame[y0:y1, x0:x1].astype(np.float32)
            blur = cv2.GaussianBlur(roi, (0, 0), max(1.0, r / 3)) * 1.08 + 4
            mask = np.zeros(roi.shape[:2], np.float32)
            cv2.circle(mask, (x - x0, y - y0), r, 1.0, -1, cv2.LINE_AA)
            mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, r / 6))[..., None]
            frame[y0:y1, x0:x1] = np.clip(roi * (1 - mask) + blur * mask, 0, 255).astype(np.uint8)

    # -- truth ---------------------------------------------------------------------------------------------
    def facade_points(self) -> list[dict]:
        """Four window corners that are well inside the frame, as an installer would pick them."""
        s = self.scene
        good = [
            (f, c, q)
            for f, c, q in self.windows
            if (q[:, 0] > 0.05 * s.width).all()
            and (q[:, 0] < 0.95 * s.width).all()
            and (q[:, 1] > 0.05 * s.height).all()
            and (q[:, 1] < 0.95 * s.height).all()
        ]
        lo_f, hi_f = min(f for f, _, _ in good), max(f for f, _, _ in good)
        cols = [c for f, c, _ in good if f == lo_f]
        cols_hi = [c for f, c, _ in good if f == hi_f]
        pick = [(lo_f, min(cols), 0), (lo_f, max(cols), 1), (hi_f, max(cols_hi), 2), (hi_f, min(cols_hi), 3)]
        out = []
        for f, c, corner in pick:
            quad = next(q for ff, cc, q in self.windows if ff == f and cc == c)
            x = (c + 0.5) * WINDOW_PITCH_M + (0.8 if corner in (1, 2) else -0.8)
            y = (f - 1) * s.floor_height_m + (0.9 if corner < 2 else 2.4)
            out.append(
                {
                    "image": [round(float(quad[corner, 0]), 1), round(float(quad[corner, 1]), 1)],
                    "facade": [round(x, 2), round(y, 2)],
                }
            )
        return out


def _luma(bgr: np.ndarray) -> float:
    """BT.601 luma of one B, G, R value: what the detector sees."""
    return float(np.dot(_LUMA_BGR, bgr))


def _plain_cnr(change: tuple[int, int, np.ndarray, np.ndarray] | None, gain: float, noise_sd: float) -> float:
    """Contrast-to-noise ratio of an object drawn by the plain renderer (linear tone, no vignette).

    Its noise is drawn for each colour channel apart, so luma carries |_LUMA_BGR| of it.
    """
    if change is None:
        return 0.0
    _, _, before, after = change
    contrast = abs(_luma(np.clip(after * gain, 0, 255)) - _luma(np.clip(before * gain, 0, 255)))
    return contrast / max(noise_sd * float(np.linalg.norm(_LUMA_BGR)), MIN_NOISE)


class _Looks:
    """A randomised camera's image chain after the optics: exposure, vignetting, glare, tone curve, noise."""

    def __init__(self, scene: Scene, rng: np.random.Generator, frames: int):
        self.scene = scene
        h, w = scene.height, scene.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        self.vignette = (1.0 - scene.vignette * r2).astype(np.float32)
        self.glare = None
        if scene.glare > 0:  # a low sun or a lamp near the top of the view, with its halo
            cx, cy = rng.uniform(0, w), rng.uniform(0, 0.5 * h)
            sigma = rng.uniform(0.05, 0.2) * w
            self.glare = (255 * scene.glare * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))).astype(
                np.float32
            )
        self.fixed = rng.normal(0, scene.fixed_pattern, (h, w)).astype(np.float32) if scene.fixed_pattern else None
        self.dead = rng.choice(h * w, scene.dead_pixels, replace=False) if scene.dead_pixels else None
        self.dead_values = (
            rng.choice(np.array([0, 255], np.uint8), scene.dead_pixels) if scene.dead_pixels else None
        )
        self.switches = sorted(
            int(rng.integers(min(frames - 1, round(2 * scene.fps)), frames)) for _ in range(scene.ir_switches)
        )
        self.switch_gain = [float(rng.choice(IR_SWITCH_GAIN)) for _ in self.switches]
        self.lut = np.clip(255.0 * (np.arange(256) / 255.0) ** (1.0 / scene.gamma), 0, 255).astype(np.uint8)
        self.grain = None
        if scene.noise_grain_px > 0.05:
            ksize = 2 * int(3 * scene.noise_grain_px) + 1
            k1 = cv2.getGaussianKernel(ksize, scene.noise_grain_px)
            # A 2-D blur of white noise scales its spread by the sum of the squared 1-D weights: undo that.
            self.grain = (ksize, float(1.0 / np.sum(k1**2)))

    def _state(self, i: int) -> tuple[float, float]:
        """Brightness and noise multipliers from the IR-cut switches up to frame i."""
        gain, noise = 1.0, 1.0
        for when, g in zip(self.switches, self.switch_gain, strict=True):
            if i >= when:
                gain *= g
                noise *= IR_SWITCH_NOISE if g > 1 else 1 / IR_SWITCH_NOISE
        return gain, noise

    def apply(self, frame: np.ndarray, i: int, step_gain: float):
        """The frame as the camera outputs it, and a function giving a throw's CNR from its drawn change."""
        s = self.scene
        ir_gain, ir_noise = self._state(i)
        gain = s.gain * step_gain * ir_gain
        if s.night:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        lit = frame.astype(np.float32) * (
            self.vignette * gain if frame.ndim == 2 else (self.vignette * gain)[..., None]
        )
        if self.glare is not None:
            lit += self.glare if frame.ndim == 2 else self.glare[..., None]
        out = cv2.LUT(np.clip(lit, 0, 255).astype(np.uint8), self.lut)
        sd = s.noise * ir_noise
        noise = np.empty(out.shape[:2], np.float32)
        cv2.setRNGSeed((s.seed * 100_003 + i) % 2**31)  # OpenCV's generator is global: seed it per frame
        cv2.randn(noise, 0, sd)
        if self.grain is not None:
            ksize, k = self.grain
            noise = cv2.GaussianBlur(noise, (ksize, ksize), s.noise_grain_px) * k
        if self.fixed is not None:
            noise += self.fixed
        noisy = np.clip(out.astype(np.float32) + (noise if out.ndim == 2 else noise[..., None]), 0, 255)
        out = noisy.round().astype(np.uint8)
        if self.dead is not None:
            flat = out.reshape(-1) if out.ndim == 2 else out.reshape(-1, 3)
            flat[self.dead] = self.dead_values if out.ndim == 2 else self.dead_values[:, None]
        if out.ndim == 2:
            out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
        return out, lambda change: self._cnr(change, gain, max(sd, MIN_NOISE))

    def _cnr(self, change: tuple[int, int, np.ndarray, np.ndarray] | None, gain: float, noise_sd: float) -> float:
        """The luma contrast the camera outputs for a drawn change, over the luma noise (one shared draw)."""
        if change is None:
            return 0.0
        x, y, before, after = change
        x, y = min(max(x, 0), self.scene.width - 1), min(max(y, 0), self.scene.height - 1)
        glare = float(self.glare[y, x]) if self.glare is not None else 0.0

        def out(bgr: np.ndarray) -> float:
            # The same chain as apply(): grey first at night, then gain, vignette, glare, clip, gamma per channel.
            values = np.array([_luma(bgr)]) if self.scene.night else bgr
            lin = np.clip(values * gain * float(self.vignette[y, x]) + glare, 0.0, 255.0)
            toned = 255.0 * (lin / 255.0) ** (1.0 / self.scene.gamma)
            return float(toned[0]) if self.scene.night else _luma(toned)

        return abs(out(after) - out(before)) / noise_sd
