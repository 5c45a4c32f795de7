"""Writes a camera's `facade:` and `masks:` blocks back into the config, keeping its comments and key order.

The new text is validated by the same code as `edge check-config` before anything is written; the file is
replaced atomically, the previous version kept beside it as FILE.bak.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from edge.config import _ENV, ConfigError, EdgeConfig, config_folder, parse_config

# Indentations (mapping, sequence, dash offset) a hand-written config uses; the one that reproduces the file
# unchanged is used to write it, so that only the calibrated blocks change.
_INDENTS = [(2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (2, 2, 2)]
ENV_PLACEHOLDER = "calibrate-placeholder"  # stands in for ${NAME}s this shell lacks, only while checking


@dataclass
class Saved:
    path: Path
    backup: Path | None
    unset_env: list[str]  # ${NAME}s not set in this shell: filled with a placeholder for the check
    config: EdgeConfig  # the text written, as check-config read it


def _yaml(indent: tuple[int, int, int]) -> YAML:
    y = YAML()  # round trip: comments, order and flow styles are kept
    y.width = 4096  # never re-wrap a long line the installer wrote
    y.preserve_quotes = True
    y.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    return y


def _dump(y: YAML, data) -> str:
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def _fitting_yaml(text: str) -> YAML:
    """The writer whose indentation reproduces this file as it is (the closest one when none does)."""
    best, best_diff = _yaml(_INDENTS[0]), None
    for ind in _INDENTS:
        y = _yaml(ind)
        out = _dump(y, y.load(text))
        diff = sum(a != b for a, b in zip(out.splitlines(), text.splitlines(), strict=False))
        diff += abs(len(out.splitlines()) - len(text.splitlines()))
        if best_diff is None or diff < best_diff:
            best, best_diff = y, diff
        if diff == 0:
            break
    return best


def _flow(value):
    """Lists of numbers and point mappings written on one line each, as installers write them."""
    if isinstance(value, dict):
        m = CommentedMap((k, _flow(v)) for k, v in value.items())
        m.fa.set_flow_style()
        return m
    if isinstance(value, list | tuple):
        s = CommentedSeq(_flow(v) for v in value)
        scalars = all(not isinstance(v, dict | list | tuple) for v in value)
        if scalars or all(isinstance(v, list | tuple) for v in value):
            s.fa.set_flow_style()
        return s
    return value


def _block(data: dict) -> CommentedMap:
    """A block-style mapping whose list values are flow style (points one per line)."""
    out = CommentedMap()
    for k, v in data.items():
        if isinstance(v, list) and v and isinstance(v[0], dict | list):
            seq = CommentedSeq(_flow(x) for x in v)
            out[k] = seq
        else:
            out[k] = _flow(v)
    return out


# The keys the calibration writes: one of them missing from a new block was cleared on the page. Any other key
# (outside_margin_m, a future setting) is the installer's and stays as written.
MANAGED = {
    "facade": {"floor_height_m", "ground_floor", "image_size", "points", "top_floor", "extent_m"},
    "masks": {"shield", "privacy"},
}


def _update(target: CommentedMap, new: dict, managed: set[str]) -> None:
    """Set `new`'s keys in place (keys, their comments and order stay) and drop managed keys it no longer has."""
    for key in [k for k in target if k not in new and k in managed]:
        del target[key]
    fresh = _block(new)
    for key, value in fresh.items():
        target[key] = value


def updated_text(text: str, camera: str, facade: dict, masks: dict | None) -> str:
    """The config text with the camera's facade (and masks, when given) replaced."""
    y = _fitting_yaml(text)
    data = y.load(text)
    cams = data.get("cameras") if isinstance(data, dict) else None
    if not isinstance(cams, dict) or camera not in cams:
        raise ConfigError(None, None, "cameras", camera, f"no camera named {camera!r} in the config")
    cam = cams[camera]
    for key, value in (("facade", facade), ("masks", masks)):
        if value is None:
            continue
        if isinstance(cam.get(key), CommentedMap):
            _update(cam[key], value, MANAGED[key])
        else:
            keys = list(cam)
            at = keys.index("source") + 1 if "source" in keys else len(keys)
            at = keys.index("facade") + 1 if key == "masks" and "facade" in keys else at
            cam.insert(at, key, _block(value))
    return _keep_blank_lines(text, _dump(y, data))


def _keep_blank_lines(old: str, new: str) -> str:
    """Blank lines of the original before each line that is still there (ruamel hangs them on the replaced
    block's last value, so they would go with it)."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    inserts: list[tuple[int, int]] = []
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            continue
        for i, j in zip(range(i1, i2), range(j1, j1 + i2 - i1), strict=True):
            if not a[i].strip():
                continue
            want = next((n for n in range(i + 1) if i - n - 1 < 0 or a[i - n - 1].strip()), 0)
            have = next((n for n in range(j + 1) if j - n - 1 < 0 or b[j - n - 1].strip()), 0)
            if want > have:
                inserts.append((j - have, want - have))
    for at, n in sorted(inserts, reverse=True):
        b[at:at] = ["\n"] * n
    return "".join(b)


def with_placeholders(text: str) -> tuple[str, list[str]]:
    """The text with each `${NAME}` this shell lacks and the file gives no default given the placeholder as
    its default, and those names. check-config's own substitution then fills them in: the process's
    environment is never changed, and `${NAME:-default}` keeps its default as check-config reads it."""
    unset: set[str] = set()

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if default is not None or name in os.environ:
            return m.group(0)
        unset.add(name)
        return f"${{{name}:-{ENV_PLACEHOLDER}}}"

    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)  # a comment's ${NAME} is not read: not named as unset either
            continue
        value, hash_, comment = line.partition(" #")
        out.append(_ENV.sub(sub, value) + hash_ + comment)
    return "".join(out), sorted(unset)


def check_text(text: str, file: str) -> tuple[EdgeConfig, list[str]]:
    """check-config's validation of a config text; raises ConfigError (`file:line: key.path: why`)."""
    filled, unset = with_placeholders(text)
    return parse_config(filled, file, config_folder(file)), unset


def _own_like(fd: int, like: os.stat_result) -> None:
    """Give the file `like`'s owner and group: run as root (sudo), a config owned by the node's user must not
    become root's, unreadable by the service at its next start."""
    if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):  # not root: the file stays the editor's, as before
            os.fchown(fd, like.st_uid, like.st_gid)


def write_like(path: Path, data: bytes, like: os.stat_result) -> None:
    """Write `path` with exactly `like`'s mode (set before any byte is written, also on a file already there)
    and, where allowed, its owner."""
    mode = like.st_mode & 0o777
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # os.open's mode went through the umask, and an old file keeps its own
        _own_like(f.fileno(), like)
        f.write(data)


def save(path: Path, camera: str, facade: dict, masks: dict | None) -> Saved:
    """Validate and write the camera's calibration into the config file; ConfigError when it does not pass."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    new = updated_text(text, camera, facade, masks)
    config, unset = check_text(new, str(path))
    like = path.stat()  # the config holds passwords: its copies are no easier to read, nor owned by another
    # A config that is a link (/etc/edge/edge.yaml into a folder of site configs): the file it names is
    # replaced, and the link kept; replacing the link itself left that file as it was.
    target = path.resolve() if path.is_symlink() else path
    backup = target.with_name(target.name + ".bak")
    write_like(backup, raw, like)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), like.st_mode & 0o777)
            _own_like(f.fileno(), like)
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Saved(path, backup, unset, config)
