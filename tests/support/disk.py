"""A small filesystem of its own (tmpfs) that can really fill up, for disk-full tests."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER = "filler"


@contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of `size` at `where` for the block; skips the test where mounting needs root."""
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill_up(disk: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file until the disk refuses, then give back `leave_bytes`; returns the filler."""
    filler = disk / FILLER
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        f.truncate(max(0, f.tell() - leave_bytes))
    return filler
