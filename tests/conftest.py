"""Shared fixtures: running the `edge` command, and simulated clips rendered once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.events import final_records, read_rows
from edge.sim.scenes import build_scene
from edge.sim.simulate import simulate

REPO = Path(__file__).resolve().parent.parent


def run_edge(
    *args: str, env: dict | None = None, timeout: float = 600, cwd: Path | str = REPO
) -> subprocess.CompletedProcess:
    """Run `python -m edge ARGS` as a user would (in `cwd`); returns the finished process with text output."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


@pytest.fixture(scope="session")
def sim_clip(tmp_path_factory):
    """Render a scene once per session: sim_clip(name, seed, width=640, height=360, duration_s=8, fps=25)."""
    root = tmp_path_factory.mktemp("sim")
    cache: dict[tuple, Path] = {}

    def make(
        name: str, seed: int, width: int = 640, height: int = 360, duration_s: float = 8.0, fps: float = 25.0
    ) -> Path:
        key = (name, seed, width, height, duration_s, fps)
        if key not in cache:
            folder = root / f"{name}-{seed}-{width}x{height}-{duration_s}-{fps:g}"
            scene = build_scene(name, seed, width=width, height=height, duration_s=duration_s, fps=fps)
            simulate(scene, folder)
            cache[key] = folder
        return cache[key]

    return make


def loop_clip(clip: Path, times: int, out: Path) -> Path:
    """`clip` played `times` times over, remuxed by ffmpeg with continuous timestamps."""
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-stream_loop",
            str(times - 1),
            "-i",
            str(clip),
            "-c",
            "copy",
            str(out),
        ],
        check=True,
    )
    return out


def sim_facade(folder: Path) -> dict:
    """The facade calibration `edge sim` wrote for a clip."""
    return yaml.safe_load((folder / "config.yaml").read_text())["cameras"]["sim"]["facade"]


def read_events(folder: Path) -> list[dict]:
    """Each event's final record (with its evidence paths) from folder/events.jsonl."""
    return final_records(read_rows(folder / "events.jsonl"))


def calibrated_by(cam):
    """The facade map an installer gets from four wall points seen by `cam` (a PinholeCamera)."""
    import numpy as np

    from edge.geometry import FacadeMap

    wall = np.array([[2.0, 10.0], [34.0, 10.0], [34.0, 70.0], [2.0, 70.0]])
    img, _ = cam.project(np.column_stack([wall, np.zeros(4)]))
    return FacadeMap.from_points(img, wall, 3.0, 1)


def posed_facade():
    """A camera 28 m out from a facade, looking up at it, and the calibration of that view with the camera's
    pose (as the node derives it): for origins brought out from the wall."""
    from dataclasses import replace

    from edge.geometry import camera_pose
    from edge.sim.camera import PinholeCamera

    cam = PinholeCamera.looking_up(1920, 1080, 70.0, 28.0, 18.0, 75.0)
    facade = calibrated_by(cam)
    return cam, replace(facade, camera=camera_pose(facade.facade_to_image, (1920, 1080)))
