"""A pipeline sink for tests: it remembers everything it is told."""

from __future__ import annotations

from edge.detect.types import UpdateKind


class Recorder:
    """A sink that remembers everything it is told."""

    def __init__(self):
        self.updates: list[tuple[UpdateKind, dict]] = []
        self.evidence: list = []
        self.problems: list[dict] = []

    def on_update(self, kind, record):
        self.updates.append((kind, record))

    def on_evidence(self, record, files):
        self.evidence.append(files)

    def on_status(self, camera, status):
        pass

    def on_problem(self, record):
        self.problems.append(record)
