"""Strict YAML files for the center (config and roster), with the node config's loader and error format.

Reuses edge.config's bounded loader (no aliases, no duplicate keys, size and depth limits), its `${ENV}`
substitution and its ConfigError, so a bad file reads `file:line: key.path: why (got value)` and exits 78.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edge.config import MAX_BYTES, ConfigError, key_path, read_mapping, read_text, validation_problem, yaml_line

M = TypeVar("M", bound=BaseModel)


def parse_model(text: str, file: str, model: type[M], environment: bool = True) -> M:
    """Validate YAML text as `model`; every failure is a ConfigError naming the line and key path.

    A model may define `cross_problems()` -> [(path, value, why)] for rules between sections (a building's
    grid must exist): the first one is raised with its line, like a field error. `environment=False`: a
    value that ${NAME} would fill from the environment is refused (text typed by a person on a page must
    not read the center's secrets, which are in its environment for center.yaml)."""
    try:
        root, _, data = read_mapping(text, file, what="file", environment=environment)
        try:
            result = model.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc, root, file, _line_of) from None
        for path, value, why in getattr(result, "cross_problems", lambda: [])():
            raise ConfigError(file, _line_of(root, path), key_path(path), value, why)
        return result
    except ConfigError:
        raise
    except Exception as exc:  # anything a hostile file still provokes is a config error, not a crash
        raise ConfigError(file, None, "", None, f"cannot be read ({type(exc).__name__}: {exc})") from None


def _line_of(root: yaml.Node | None, path: tuple) -> int | None:
    """The line of `path`: of its key when its value is a whole section (the section starts a line later)."""
    line, found = yaml_line(root, path)
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


def parse_file_text(text: str, file: str, model: type[M], environment: bool = True) -> M:
    """Validate text that is to become the file `file` exactly as load_model will read it at the next start:
    the same size bound as read_text (in UTF-8 bytes), then parse_model."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise ConfigError(file, None, "", None, f"too large for a YAML (over {MAX_BYTES} bytes)")
    return parse_model(text, file, model, environment)


def load_model(path: str | Path, model: type[M]) -> M:
    """Read and validate a YAML file (bounded read, UTF-8) as `model`; raises ConfigError."""
    return parse_model(read_text(path, what="YAML"), str(path), model)
