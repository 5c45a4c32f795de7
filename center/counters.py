"""Counted, rate-limited log lines for rejected input: a flood from the network stays a few log lines."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from edge.listen import printable

log = logging.getLogger("center.ingest")


class Drops:
    """Messages and files refused, by reason; logs the 1st, 2nd, 4th, 8th, ... of each reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, reason: str, where: str, detail: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            n = self.counts[reason]
        if n & (n - 1) == 0:
            log.warning("dropped (%s) %s %s [%d so far]", reason, printable(where, 200), detail, n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
