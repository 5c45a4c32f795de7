"""Strict YAML files for the center (config and roster), with the node config's loader and error format.

Reuses edge.config's bounded loader (no aliases, no duplicate keys, size and depth limits), its `${ENV}`
substitution and its ConfigError, so a bad file reads `file:line: key.path: why (got value)` and exits 78.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edge.config import MAX_BYTES, ConfigError, _dotted, _fill_env, _read_yaml, _walk

M = TypeVar("M", bound=BaseModel)


def parse_model(text: str, file: str, model: type[M]) -> M:
    """Validate YAML text as `model`; every failure is a ConfigError naming the line and key path.

    A model may define `cross_problems()` -> [(path, value, why)] for rules between sections (a building's
    grid must exist): the first one is raised with its line, like a field error."""
    try:
        root, raw = _read_yaml(text, file)
        if raw is None:
            raise ConfigError(file, None, "", None, "the file is empty")
        if not isinstance(raw, dict):
            raise ConfigError(file, 1, "", type(raw).__name__, "the file must be a mapping of sections")
        missing: list[tuple] = []
        data = _fill_env(raw, (), missing)
        if missing:
            path, name = missing[0]
            why = f"environment variable {name} is not set"
            raise ConfigError(file, _line_of(root, path), _dotted(path), f"${{{name}}}", why)
        try:
            result = model.model_validate(data)
        except ValidationError as exc:
            raise _located(exc, root, file) from None
        for path, value, why in getattr(result, "cross_problems", lambda: [])():
            raise ConfigError(file, _line_of(root, path), _dotted(path), value, why)
        return result
    except ConfigError:
        raise
    except Exception as exc:  # anything a hostile file still provokes is a config error, not a crash
        raise ConfigError(file, None, "", None, f"cannot be read ({type(exc).__name__}: {exc})") from None


def _line_of(root: yaml.Node | None, path: tuple) -> int | None:
    """The line of `path`: of its key when its value is a whole section (the section starts a line later)."""
    line, found = _walk(root, path)
    if found and path:
        parent = root
        for part in path[:-1]:
            parent = _child(parent, part)
        value = _child(parent, path[-1])
        if isinstance(value, yaml.MappingNode | yaml.SequenceNode) and isinstance(parent, yaml.MappingNode):
            key = next(k for k, v in parent.value if v is value)
            return key.start_mark.line + 1
    return line


def _child(node, part):
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == str(part)), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def _located(exc: ValidationError, root: Any, file: str) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    value = err.get("input") if err["type"] != "missing" else None
    if err["type"] == "extra_forbidden":
        why = f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        why = "required key is missing"
    else:
        why = err["msg"].removeprefix("Value error, ")
    if isinstance(value, dict | list):
        value = None  # a whole section is no help in a one-line message; the path names it
    return ConfigError(file, _line_of(root, loc), _dotted(loc), value, why)


def load_model(path: str | Path, model: type[M]) -> M:
    """Read and validate a YAML file (bounded read, UTF-8) as `model`; raises ConfigError."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(str(p), None, "", str(p), "is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(str(p), None, "", str(p), f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(str(p), None, "", None, f"too large (over {MAX_BYTES} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(p), None, "", str(p), "not UTF-8 text") from None
    return parse_model(text, str(p), model)
