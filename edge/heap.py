"""glibc's allocator, tuned for a node of many threads handing large frames to each other.

Each thread that allocates gets a malloc arena of its own (up to 8 per core), and memory freed in one is
kept there for reuse: a 1080p frame decoded in a camera's capture thread and freed by its worker leaves
its pages in the capture thread's arena. With four cameras that was ~200 MB of free but resident memory.
Elsewhere than glibc both calls do nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
# Arenas for the whole node: threads share them with little contention, as most of their work (decoding,
# NumPy, OpenCV) runs outside malloc; two per core would already be plenty on the node's 2 cores.
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    # The symbols the process already has, not ctypes.util.find_library("c"): that runs ldconfig in a
    # child process, which counted as a 124 MB child in the benchmarks' peak memory.
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> None:
    """Bound the number of malloc arenas; only threads started afterwards are bound by it."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.warning("could not limit malloc arenas to %d", arenas)


def trim() -> None:
    """Give the pages of freed memory back to the system (a burst of queued frames, a finished clip)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
