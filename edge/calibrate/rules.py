"""The checks a calibration passes before it is saved: check-config's own rules, and what they cannot see."""

from __future__ import annotations

import itertools
import math

import numpy as np
from pydantic import ValidationError

from edge.config import FacadeConfig, MasksConfig
from edge.geometry import CameraPose, camera_pose

MIN_SPACING_PX = 10.0  # two points closer in the image are one window corner clicked twice
MIN_SPACING_M = 0.3  # or on the facade: the same corner typed twice


class Refused(ValueError):
    """A calibration that must not be saved; the message names the key and why, as check-config does."""


def _first_error(exc: ValidationError, prefix: str) -> Refused:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]))
    return Refused(f"{loc}: {err['msg'].removeprefix('Value error, ')}")


def check_facade(block: dict) -> FacadeConfig:
    """The facade block validated by check-config's model (4+ points, not collinear, bounds), then spacing."""
    try:
        cfg = FacadeConfig.model_validate(block)
    except ValidationError as exc:
        raise _first_error(exc, "facade") from None
    for (i, a), (j, b) in itertools.combinations(enumerate(cfg.points), 2):
        if math.dist(a.image, b.image) < MIN_SPACING_PX:
            raise Refused(
                f"facade.points: points {i + 1} and {j + 1} are {math.dist(a.image, b.image):.1f} px apart in the "
                f"image (at least {MIN_SPACING_PX:g}): spread the points over the facade"
            )
        if math.dist(a.facade, b.facade) < MIN_SPACING_M:
            raise Refused(
                f"facade.points: points {i + 1} and {j + 1} are {math.dist(a.facade, b.facade):.2f} m apart on "
                f"the facade (at least {MIN_SPACING_M:g}): spread the points over the facade"
            )
    return cfg


def check_masks(block: dict) -> MasksConfig:
    try:
        return MasksConfig.model_validate(block)
    except ValidationError as exc:
        raise _first_error(exc, "masks") from None


def reprojection_errors(cfg: FacadeConfig) -> list[float]:
    """Pixels between each point and where the fitted homography puts its facade position."""
    back = cfg.facade_map().to_image(np.asarray([p.facade for p in cfg.points], np.float64))
    return [round(float(math.dist(a, p.image)), 2) for a, p in zip(back, cfg.points, strict=True)]


def pose_of(cfg: FacadeConfig, size: tuple[int, int]) -> CameraPose | None:
    """Where the calibration of a still of `size` puts the camera (as the node will find it), None when it
    cannot tell: too little perspective, or an implausible place (edge.geometry.camera_pose)."""
    return camera_pose(cfg.facade_map().facade_to_image, size)
