"""Annotated clips and stills for evidence already saved: one at a time, in a low-priority process, resumable.

The original clip and its manifest are written first, by the camera's worker; a child process at nice 10
adds the copies people look at, so encoding them never holds the node's interpreter lock or its cores
while frames wait. An annotation cut short by a stop (or the child dying) leaves its folder marked, and
the next start finishes it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import heap
from edge.geometry import CameraGeometry
from edge.publish.evidence import EVENT, PENDING, EvidenceFiles, EvidenceStage, annotate
from edge.publish.manifest import MANIFEST

log = logging.getLogger(__name__)
_NICE = 10  # below detection: an annotated clip may wait, a frame may not
_PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h
_POLL_S = 0.5  # how often the parent checks that the child is still alive
_MAX_TRIES = 2  # an annotation that killed the child twice is given up (its original stands)
_STARTED = "started"  # what the child reports when it takes a job


@dataclass(frozen=True)
class Annotation:
    folder: Path
    caption: str
    geometry: CameraGeometry | None


def _die_with(parent: int) -> None:
    """End this process when `parent` dies, even by SIGKILL (Linux); a node killed must not leave it behind."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's stop() is then the only way out
        return
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)


def _child(jobs, results, key: bytes, parent: int) -> None:
    """The annotating process: takes jobs until None, reports (folder, files or None, error or None)."""
    _die_with(parent)
    heap.limit_arenas()  # the decoder's and encoder's threads would each get an arena of their own
    os.nice(_NICE)
    signer = Ed25519PrivateKey.from_private_bytes(key)
    while (job := jobs.get()) is not None:
        results.put((job.folder, _STARTED, None))  # so that a crash is blamed on this job alone
        try:
            results.put((job.folder, annotate(job.folder, job.caption, job.geometry, signer), None))
        except Exception as exc:  # reported to the parent, which completes the evidence without it
            results.put((job.folder, None, f"{type(exc).__name__}: {exc}"))
        heap.trim()  # a clip's decoder and encoder buffers (~150 MB at 1080p) are not kept between jobs


class Annotator:
    """A queue of saved events whose annotated clip and still are still to be made, and the process making them."""

    def __init__(self, signer: Ed25519PrivateKey, on_done: Callable[[dict, EvidenceFiles], None]):
        self.on_done = on_done
        self._key = signer.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process full of threads
        self._jobs = self._ctx.Queue()
        self._results = self._ctx.Queue()
        self._child: multiprocessing.process.BaseProcess | None = None
        self._pending: dict[Path, tuple[Annotation, int]] = {}  # submitted, not reported; with tries
        self._current: Path | None = None  # the job the child said it is on
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._forwarder = threading.Thread(target=self._forward, name="annotator", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._forwarder.start()

    def _spawn(self) -> None:
        child = self._ctx.Process(
            target=_child,
            args=(self._jobs, self._results, self._key, os.getpid()),
            name="edge-annotator",
            daemon=True,
        )
        child.start()
        self._child = child  # only a started process: stop() may terminate whatever it finds here

    def submit(self, folder: Path, caption: str, geometry: CameraGeometry | None) -> None:
        job = Annotation(folder, caption, geometry)
        with self._lock:  # not while _restart swaps the queue
            self._pending[folder] = (job, 1)
            self._jobs.put(job)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted annotation is reported; True when they are."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout)

    def stop(self, abort: bool = True, timeout: float = 5.0) -> None:
        """Stop; with `abort` the annotation in progress is left for the next start (its folder stays marked)."""
        with self._lock:  # a restart under way finishes first, and none begins after this
            self._stopping.set()
            child = self._child
        # Jobs still queued are marked on disk and made after the next start: the queue must not keep this
        # process alive at exit, flushing them into a pipe nobody reads any more.
        self._jobs.cancel_join_thread()
        if child is not None and child.exitcode is None:
            if abort:
                child.terminate()
            else:
                self._jobs.put(None)
            child.join(timeout)
            if child.is_alive():
                child.kill()
        if self._forwarder.is_alive():
            self._forwarder.join(timeout)

    def _forward(self) -> None:
        while not self._stopping.is_set() or not self._results.empty():
            try:
                folder, files, error = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._stopping.is_set() and self._child is not None and not self._child.is_alive():
                    self._restart()
                continue
            if files == _STARTED:
                self._current = folder
                continue
            with self._lock:
                self._pending.pop(folder, None)
                self._current = None
                self._lock.notify_all()
            try:
                if error is not None:
                    log.error("annotating %s failed (%s); its original clip and manifest stand", folder, error)
                    self._give_up(folder)
                elif files is not None:
                    self.on_done(_record(folder), files)
            except Exception:
                log.exception("%s: cannot report its evidence", folder)

    def _restart(self) -> None:
        """The child died (killed, out of memory): start another and give it what was in flight."""
        with self._lock:
            if self._stopping.is_set():  # stop() ended it: not a death to recover from
                return
            log.error("the annotating process died (exit %s); starting another", self._child.exitcode)
            blamed = self._current  # only the job the child was on when it died counts a try
            tries_now = {f: tries + (f == blamed) for f, (_, tries) in self._pending.items()}
            retry = {f: (job, tries_now[f]) for f, (job, _) in self._pending.items() if tries_now[f] <= _MAX_TRIES}
            self._current = None
            dropped = [f for f in self._pending if f not in retry]
            self._pending = retry
            self._lock.notify_all()
            self._jobs = self._ctx.Queue()  # the old queue may hold a half-read job
            self._spawn()
            for job, _ in retry.values():
                self._jobs.put(job)
        for folder in dropped:
            log.error("%s: annotating it killed the process twice; its original clip and manifest stand", folder)
            self._give_up(folder)

    def complete_without(self, folder: Path) -> None:
        """Finish saved evidence with no annotated copy (one cannot, or must not, be made)."""
        self._give_up(folder)

    def _give_up(self, folder: Path) -> None:
        """An annotation that fails would fail again: the evidence is complete without it."""
        (folder / PENDING).unlink(missing_ok=True)
        record = _record(folder)
        saved = json.loads((folder / EVENT).read_text())["evidence"]
        files = EvidenceFiles(
            folder, EvidenceStage.COMPLETE, saved["original"], None, None, MANIFEST, saved.get("note")
        )
        self.on_done(record, files)


def _record(folder: Path) -> dict:
    record = json.loads((folder / EVENT).read_text())
    record.pop("evidence", None)
    return record


def pending(events_dir: Path) -> list[Path]:
    """Event folders whose annotated clip is still to be made (marked when their original was saved)."""
    if not events_dir.is_dir():
        return []
    return sorted(p.parent for p in events_dir.glob(f"*/{PENDING}"))
