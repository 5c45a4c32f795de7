"""`edge sim`: render a scene to an H.264 clip, its ground truth and a config calibrated for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from edge.sim.render import WINDOW_PITCH_M, Renderer
from edge.sim.scenes import OBJECTS, Scene
from edge.video import H264Writer

MUST_MIN_FLOORS = 2.0  # a throw must be found when it falls at least this many floors in view,
MUST_MIN_WIDTH_PX = 1.5  # is at least this wide,
MUST_MIN_CNR = 1.5  # and stands this far above the noise (below it, no single frame shows it)


def simulate(scene: Scene, out_dir: str | Path, progress=None) -> dict:
    """Render `scene` into out_dir (scene.mp4, truth.json, config.yaml); returns the truth."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = Renderer(scene)
    n = int(round(scene.duration_s * scene.fps))
    tracks: dict[int, list] = {k: [] for k in range(len(r.throws))}
    cnrs: dict[int, dict[int, float]] = {k: {} for k in range(len(r.throws))}
    gop = round(scene.gop_s * scene.fps)
    with H264Writer(
        out / "scene.mp4",
        scene.width,
        scene.height,
        scene.fps,
        crf=scene.crf,
        gop=gop,
        bitrate_kbps=scene.bitrate_kbps,
        threads=1,  # the same clip for a seed on any machine
    ) as writer:
        for i in range(n):
            frame, truth = r.render(i)
            writer.write(frame)
            for k, (x, y, w, cnr) in truth.items():
                tracks[k].append([i, round(x, 2), round(y, 2), round(w, 2)])
                cnrs[k][i] = cnr
            if progress:
                progress(i + 1, n)
    facade = {
        "floor_height_m": scene.floor_height_m,
        "ground_floor": 1,
        "points": r.facade_points(),
        "top_floor": scene.floors,
        "extent_m": [0.0, round(scene.columns * WINDOW_PITCH_M, 2)],
    }
    throws = [_throw_truth(r, k, tracks[k], cnrs[k]) for k in range(len(r.throws))]
    truth = {
        "scene": scene.name,
        "seed": scene.seed,
        "width": scene.width,
        "height": scene.height,
        "fps": scene.fps,
        "frames": n,
        "duration_s": scene.duration_s,
        "night": scene.night,
        "rain": scene.rain > 0,
        "condition": "night" if scene.night else "rain" if scene.rain > 0 else "day",
        "look": _look(scene),
        "facade": facade,
        "visible_height_m": [round(r.lo, 2), round(r.hi, 2)],
        "throws": throws,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    (out / "config.yaml").write_text(scene_config(scene, facade, out))
    return truth


def _look(scene: Scene) -> dict:
    """The rendering choices of a scene, for reading a bench result against them."""
    keys = ("randomised", "bitrate_kbps", "gop_s", "gamma", "gain", "exposure_frac", "noise", "noise_grain_px")
    keys += ("fixed_pattern", "dead_pixels", "vignette", "glare", "droplets", "ir_switches", "rain", "insects")
    return {k: (round(v, 3) if isinstance(v, float) else v) for k in keys for v in [getattr(scene, k)]}


def _throw_truth(r: Renderer, k: int, track: list, cnrs: dict[int, float]) -> dict:
    m = r.throws[k]
    t = m.throw
    fps, fh = r.scene.fps, r.scene.floor_height_m
    ((ox, oy),) = r.cam.project(m.origin[None])[0]
    fall_in_view = 0.0
    width = 0.0
    cnr = 0.0
    if track:
        run = _longest_run(track)
        heights = [m.position(f / fps)[1] for f, *_ in run]
        fall_in_view = float(heights[0] - heights[-1])
        width = float(np.median([w for *_, w in run]))
        cnr = float(np.median([cnrs[f] for f, *_ in run]))
    return {
        "kind": t.kind,
        "size_m": OBJECTS[t.kind][0],
        "terminal_mps": OBJECTS[t.kind][1],
        "release_frame": int(round(t.time_s * fps)),
        "first_visible_frame": track[0][0] if track else None,
        "last_visible_frame": track[-1][0] if track else None,
        "origin": {
            "floor": t.floor,
            "column": t.column,
            "facade_x_m": round(float(m.origin[0]), 2),
            "height_m": round(float(m.origin[1]), 2),
            "x": round(float(ox), 1),
            "y": round(float(oy), 1),
        },
        "fall_in_view_m": round(fall_in_view, 2),
        "width_px": round(width, 2),
        "cnr": round(cnr, 2),
        "grey": m.grey,
        "must_detect": bool(
            fall_in_view >= MUST_MIN_FLOORS * fh and width >= MUST_MIN_WIDTH_PX and cnr >= MUST_MIN_CNR
        ),
        "track": track,
    }


def _longest_run(track: list) -> list:
    """The longest stretch of consecutive frames in which the throw is visible (not hidden by a tree)."""
    best, cur = [], []
    for p in track:
        cur = cur + [p] if cur and p[0] == cur[-1][0] + 1 else [p]
        if len(cur) > len(best):
            best = cur
    return best


def scene_config(scene: Scene, facade: dict, out: Path) -> str:
    """A node config for replaying this clip: one camera, calibrated to the rendered facade."""
    cfg = {
        "version": 1,
        "node": {"id": "sim"},
        # Relative: a config's paths are its own folder's, so the clip's folder may be moved or copied whole.
        "storage": {"dir": "storage"},
        "cameras": {"sim": {"source": "scene.mp4", "facade": facade}},
    }
    return (
        "# Written by `edge sim`: the facade points are the rendered camera's exact projection.\n"
        + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
    )
