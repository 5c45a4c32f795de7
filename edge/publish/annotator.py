"""Annotated clips and stills for evidence already saved: one at a time, at low priority, resumable.

The original clip and its manifest are written first, by the camera's worker; this thread adds the copies
people look at. An annotation cut short by a stop leaves its folder marked, and the next start finishes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.geometry import CameraGeometry
from edge.publish.evidence import EVENT, PENDING, EvidenceFiles, EvidenceStage, annotate
from edge.publish.manifest import MANIFEST

log = logging.getLogger(__name__)
_NICE = 10  # below detection: an annotated clip may wait, a frame may not


@dataclass(frozen=True)
class Annotation:
    folder: Path
    caption: str
    geometry: CameraGeometry | None


class Annotator(threading.Thread):
    """A queue of saved events whose annotated clip and still are still to be made."""

    def __init__(self, signer: Ed25519PrivateKey, on_done: Callable[[dict, EvidenceFiles], None]):
        super().__init__(name="annotator", daemon=True)
        self.signer, self.on_done = signer, on_done
        self._jobs: queue.Queue[Annotation | None] = queue.Queue()
        self._abort = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0

    def submit(self, folder: Path, caption: str, geometry: CameraGeometry | None) -> None:
        with self._idle:
            self._busy += 1
        self._jobs.put(Annotation(folder, caption, geometry))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted annotation is done; True when they are."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def stop(self, abort: bool = True, timeout: float = 5.0) -> None:
        """Stop; with `abort` the annotation in progress is left for the next start (its folder stays marked)."""
        if abort:
            self._abort.set()
        self._jobs.put(None)
        self.join(timeout)

    def run(self) -> None:
        with contextlib.suppress(OSError):  # not allowed here: annotation runs at normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        while (job := self._jobs.get()) is not None:
            try:
                if not self._abort.is_set():
                    self._do(job)
            except Exception:
                log.exception("annotating %s failed; its original clip and manifest stand", job.folder)
                self._give_up(job)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _do(self, job: Annotation) -> None:
        files = annotate(job.folder, job.caption, job.geometry, self.signer, stop=self._abort.is_set)
        if files is None:
            return
        record = json.loads((job.folder / EVENT).read_text())
        record.pop("evidence", None)
        self.on_done(record, files)

    def _give_up(self, job: Annotation) -> None:
        """An annotation that fails would fail again: the evidence is complete without it."""
        try:
            (job.folder / PENDING).unlink(missing_ok=True)
            record = json.loads((job.folder / EVENT).read_text())
            saved = record.pop("evidence")
            files = EvidenceFiles(
                job.folder, EvidenceStage.COMPLETE, saved["original"], None, None, MANIFEST, saved.get("note")
            )
            self.on_done(record, files)
        except Exception:
            log.exception("%s: cannot report its evidence", job.folder)


def pending(events_dir: Path) -> list[Path]:
    """Event folders whose annotated clip is still to be made (marked when their original was saved)."""
    if not events_dir.is_dir():
        return []
    return sorted(p.parent for p in events_dir.glob(f"*/{PENDING}"))
