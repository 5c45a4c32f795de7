"""Domain randomisation: every choice the renderer makes about the camera and the image, drawn from a seed.

A detector tuned on one renderer learns where that renderer puts noise, contrast and blur. Drawing those
from wide, realistic ranges makes the renderer's own habits one more variation among many (Tobin et al.
2017), so a rule that only works for one look fails the bench instead of failing in the field.
"""

from __future__ import annotations

import math

import numpy as np

from edge.sim.scenes import Scene

# (width, height) a camera's main stream has, and how often: most compounds run 1080p, some 720p or 4 MP.
RESOLUTIONS = [((1280, 720), 0.3), ((1920, 1080), 0.5), ((2560, 1440), 0.2)]
FRAME_RATES = [12.0, 15.0, 20.0, 25.0, 30.0]  # what NVR channels are set to in practice
BITRATE_KBPS = (500.0, 8000.0)  # a starved sub-stream to a generous main stream
GOP_S = (1.0, 10.0)  # keyframe interval; long GOPs make the image pulse at each keyframe
RELEASE_UP_M = (0.9, 2.1)  # where a throw leaves the hand, above its storey's floor: sill to raised arm
RELEASE_OUT_M = (0.2, 1.3)  # and in front of the wall: a hand out of a window to one over a balcony rail


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def randomise_camera(scene: Scene, rng: np.random.Generator) -> None:
    """The camera's geometry and stream: resolution, frame rate, field of view, distance to the facade."""
    (w, h), _ = RESOLUTIONS[int(rng.choice(len(RESOLUTIONS), p=[p for _, p in RESOLUTIONS]))]
    scene.width, scene.height = w, h
    scene.fps = float(rng.choice(FRAME_RATES))
    scene.hfov_deg *= float(rng.uniform(0.85, 1.15))
    scene.distance_m *= float(rng.uniform(0.9, 1.1))
    scene.bitrate_kbps = round(_log_uniform(rng, *BITRATE_KBPS))
    scene.gop_s = float(rng.uniform(*GOP_S))


def randomise_look(scene: Scene, rng: np.random.Generator) -> None:
    """The image: noise and its structure, tone curve, blur, lens effects, and each throw's tone and size."""
    if scene.night:
        # IR grain: strong, blotchy, with fixed-pattern noise and hot pixels of a cheap sensor in low light
        scene.noise = float(rng.uniform(2.5, 9.0))
        scene.noise_grain_px = float(rng.uniform(0.0, 1.6))
        scene.fixed_pattern = float(rng.uniform(0.0, 3.0))
        scene.dead_pixels = int(rng.integers(0, 300))
        scene.ir_switches = int(rng.integers(0, 2))
        scene.insects = max(scene.insects, int(rng.integers(0, 3)))
    else:
        scene.noise = float(rng.uniform(0.6, 4.0))
        scene.noise_grain_px = float(rng.uniform(0.0, 0.8))
        scene.fixed_pattern = float(rng.uniform(0.0, 1.5))
        scene.dead_pixels = int(rng.integers(0, 40))
        scene.glare = float(rng.uniform(0.2, 0.9)) if rng.random() < 0.3 else 0.0
        scene.clouds = float(rng.uniform(0.0, 0.6))
    scene.gamma = float(rng.uniform(0.7, 1.4))
    scene.gain = float(rng.uniform(0.7, 1.3))
    scene.vignette = float(rng.uniform(0.0, 0.45))
    scene.exposure_frac = float(rng.uniform(0.1, 1.0))
    if scene.rain > 0:
        scene.rain = float(rng.uniform(30.0, 260.0))
        scene.droplets = int(rng.integers(2, 14))
    for throw in scene.throws:
        throw.grey = int(rng.integers(15, 251))  # either sign against wall, window or sky, often faint
        throw.size_scale = float(rng.uniform(0.6, 1.8))
        throw.tumble = float(rng.uniform(0.0, 0.6))
    # Drawn after the looks, so each throw's tone and size stay what they were before these were drawn.
    for throw in scene.throws:
        # From a hand over a window sill to a raised arm, and from a window to beyond a balcony rail: an
        # object in front of the wall looks higher to a camera below it, the more the further out.
        throw.release_up_m = float(rng.uniform(*RELEASE_UP_M))
        throw.release_out_m = float(rng.uniform(*RELEASE_OUT_M))
