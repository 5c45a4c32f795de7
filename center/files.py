"""Evidence files under data_dir/evidence/<node>/<event id>/, written only there.

Node and event ids come from the network: they reach a path only when edge's valid_id accepts them, and the
final path is checked to resolve inside the evidence folder before anything is written through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.publish.mqtt import clip_extension, valid_id

KIND_NAMES = {"snapshot": "snapshot", "clip": "clip", "original": "original", "manifest": "manifest"}


class OutsideDataDir(ValueError):
    """A path would leave the evidence folder."""


class EvidenceFiles:
    """Writes evidence files atomically (temporary file + rename) and names them by kind and digest."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.root = (data_dir / "evidence").resolve()  # from nodes: evidence/<node>/<event id>/
        self.photos = (data_dir / "photos").resolve()  # from people on site: photos/<case>/
        for root in (self.root, self.photos):
            root.mkdir(parents=True, exist_ok=True)

    def folder(self, node: str, event_id: str, root: Path | None = None) -> Path:
        if not (valid_id(node) and valid_id(event_id)):
            raise OutsideDataDir(f"bad node or event id {node[:140]!r}/{event_id[:140]!r}")
        root = root or self.root
        folder = root / node / event_id
        if folder.resolve() != folder:  # a link in the way, before anything is created through it
            raise OutsideDataDir(f"{folder} is not inside {self.root}")
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve() != folder:
            raise OutsideDataDir(f"{folder} is not inside {self.root}")
        return folder

    def write(self, node: str, event_id: str, name: str, data: bytes) -> str:
        """Write a node's file; returns its path relative to data_dir (what the database keeps)."""
        return self._write(self.folder(node, event_id), name, data)

    def write_photo(self, case_id: int, name: str, data: bytes) -> str:
        """Write an on-site photo of a case under photos/<case>/."""
        folder = self.photos / str(int(case_id))
        folder.mkdir(parents=True, exist_ok=True)
        return self._write(folder, name, data)

    def _write(self, folder: Path, name: str, data: bytes) -> str:
        if not valid_id(name):
            raise OutsideDataDir(f"bad file name {name[:140]!r}")
        target = folder / name
        tmp = folder / f".{name}.{os.getpid()}.part"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # on disk before the database row that points at it is committed
            os.replace(tmp, target)
        except BaseException:
            # A write cut short (a full disk) leaves no part behind: no row names it, so no retention would ever
            # free it, and on a full disk it holds the space the next alert needs. The message is given again.
            tmp.unlink(missing_ok=True)
            raise
        return str(target.relative_to(self.data_dir.resolve()))

    def path(self, relative: str) -> Path:
        """The absolute path of a stored file, refusing anything that resolves outside the evidence folder."""
        p = (self.data_dir / relative).resolve()
        if not (p.is_relative_to(self.root) or p.is_relative_to(self.photos)):
            raise OutsideDataDir(relative)
        return p


def file_name(kind: str, sha256: str, data: bytes) -> str:
    """<kind>-<first 12 hex of SHA-256>.<ext>: two versions of a file never overwrite each other."""
    if kind == "snapshot" or kind == "photo":
        ext = "jpg"
    elif kind == "manifest":
        ext = "json"
    else:
        ext = clip_extension(data)[1:]
    return f"{KIND_NAMES.get(kind, kind)}-{sha256[:12]}.{ext}"


MEDIA_TYPES = {"snapshot": "image/jpeg", "photo": "image/jpeg", "manifest": "application/json"}
CLIP_TYPES = {".ts": "video/mp2t", ".mkv": "video/x-matroska"}  # anything else is the annotated MP4


def media_type(kind: str, path: Path) -> str:
    """The Content-Type an evidence file is served with: the original clip is MPEG-TS or Matroska (a USB
    camera's), the annotated one MP4."""
    return MEDIA_TYPES.get(kind, CLIP_TYPES.get(path.suffix, "video/mp4"))
