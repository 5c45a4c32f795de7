"""The benches' `--set section.key=value`: a camera setting changed for one run, validated as the config file is.

A value is read as YAML reads it in the config file (`false` is false, `null` is null, `1.5` a number), and the
camera's settings are validated again with it, bounds included: a typo or a value out of range is a clear error
before any clip runs, never a setting silently ignored, coerced (`false` read as true) or out of its bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from edge.config import SHIPPED_VERIFIER, CameraConfig, EdgeConfig

# Whole settings the benches name: the image-space fallback, and physics alone or with the shipped verifier.
NAMED_SETTINGS: dict[str, tuple[tuple[str, ...], Any]] = {
    "facade=none": (("facade",), None),
    "verifier=off": (("fall", "verifier", "model"), None),
    "verifier=on": (("fall", "verifier", "model"), str(SHIPPED_VERIFIER)),
}


class OverrideError(ValueError):
    """A `--set` the camera's config cannot take: no such setting, or a value it does not accept."""


@dataclass(frozen=True)
class Override:
    """One setting to change: its path through the camera's config sections, and the new value."""

    text: str  # as the user wrote it, for messages
    path: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """`section.key=value` (sections may nest: fall.verifier.veto_below=0.2), or one of NAMED_SETTINGS."""
    if text in NAMED_SETTINGS:
        path, value = NAMED_SETTINGS[text]
        return Override(text, path, value)
    dotted, sep, raw = text.partition("=")
    path = tuple(dotted.strip().split("."))
    if not sep or len(path) < 2 or not all(path):
        named = ", ".join(NAMED_SETTINGS)
        raise OverrideError(
            f"--set {text}: expected section.key=value (e.g. fall.min_fall_floors=1.5) or one of {named}"
        )
    if path[0] == "facade":
        # Each clip has its own facade (or none, uncalibrated): one value for all of them measures nothing.
        raise OverrideError(
            f"--set {text}: the facade is each clip's own calibration; only facade=none is settable"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as e:
        raise OverrideError(
            f"--set {text}: the value is not readable as YAML ({getattr(e, 'problem', None) or e})"
        ) from e
    return Override(text, path, value)


def with_overrides(cam: CameraConfig, overrides: list[str]) -> CameraConfig:
    """A copy of `cam` with every override applied, validated as a whole. Raises OverrideError."""
    data = cam.model_dump()
    items = [parse_override(text) for text in overrides]
    for item in items:
        _assign(data, item)
    try:
        return CameraConfig.model_validate(data)
    except ValidationError as e:
        raise OverrideError("; ".join(_problem(err, items) for err in e.errors())) from e


def apply_overrides(cfg: EdgeConfig, overrides: list[str]) -> None:
    """Replace every camera of `cfg` by its copy with `overrides` applied (`with_overrides`)."""
    if overrides:
        for name, cam in list(cfg.cameras.items()):
            cfg.cameras[name] = with_overrides(cam, overrides)


def check_overrides(overrides: list[str]) -> None:
    """Raise OverrideError when any override would be refused by a camera's config (before clips are run)."""
    with_overrides(CameraConfig(source="check"), overrides)


def _problem(err: dict, items: list[Override]) -> str:
    """One validation error, named by the override that set the value it is about (or by all of them)."""
    loc = tuple(str(p) for p in err["loc"])
    owners = [i.text for i in items if loc[: len(i.path)] == i.path or i.path[: len(loc)] == loc]
    return f"--set {' '.join(owners or [i.text for i in items])}: {'.'.join(loc)}: {err['msg']}"


def _assign(data: dict, item: Override) -> None:
    node = data
    for depth, key in enumerate(item.path[:-1]):
        if not isinstance(node.get(key), dict):
            where = ".".join(item.path[: depth + 1])
            known = "no such section" if key not in node else "a setting, not a section"
            raise OverrideError(f"--set {item.text}: {where}: {known}")
        node = node[key]
    key = item.path[-1]
    if key not in node:
        section = ".".join(item.path[:-1]) or "camera"
        known = ", ".join(sorted(node))
        raise OverrideError(f"--set {item.text}: {section} has no setting {key!r} (it has: {known})")
    node[key] = item.value
