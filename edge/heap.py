"""glibc's allocator, tuned for a node of many threads handing large frames to each other.

Each thread that allocates gets a malloc arena of its own (up to 8 per core), and memory freed in one is
kept there for reuse: a 1080p frame decoded in a camera's capture thread and freed by its worker leaves
its pages in the capture thread's arena. With four cameras that was ~200 MB of free but resident memory.
Elsewhere than glibc both calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
# Arenas for the whole node: threads share them with little contention, as most of their work (decoding,
# NumPy, OpenCV) runs outside malloc; two per core would already be plenty on the node's 2 cores.
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> None:
    """Bound the number of malloc arenas; only threads started afterwards are bound by it."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.warning("could not limit malloc arenas to %d", arenas)


def trim() -> None:
    """Give the pages of freed memory back to the system (a burst of queued frames, a finished clip)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
