"""Camera workers that ended without being asked to stop are replaced, one camera at a time, with backoff.

A worker's thread (or its capture thread) can end for good: a BaseException from a sink, a bug outside the
per-item guards. The other cameras go on; this one is restarted after a delay that doubles at each death in a
row (so a camera that kills its worker every time costs one try a minute, not a busy loop) and starts over once
a worker has run well for _HEALTHY_S. The node's main loop calls check() at each tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.capture.camera import Backoff, CameraState
from edge.worker import CameraWorker

log = logging.getLogger(__name__)

# Most deaths are one bad item: the camera is back within a few seconds. Never under one (the jitter halves it):
# a restarted camera's event ids start with the second it restarted, and must not repeat its dead worker's.
RESTART_FIRST_S = 2.0
RESTART_MAX_S = 60.0  # a camera that kills every worker is tried once a minute: a log line a minute, no busy loop
_HEALTHY_S = 300.0  # a worker that ran this long before dying died of something new: the backoff starts over
_OLD_CAPTURE_WAIT_S = 10.0  # a dead worker's capture is given this long to let go of the camera before the new one


def death(worker: CameraWorker) -> str | None:
    """Why `worker` ended without being asked to stop, or None while it runs, was stopped, or played a file out."""
    if not worker.ran or worker.alive or worker.asked_to_stop:
        return None
    if worker.death is not None:
        return f"its worker died: {worker.death}"
    status = worker.capture.status
    if status.state == CameraState.ENDED or worker.capture.is_file:
        return None  # a file is read once: played to its end, or to a damaged part, it is done, not dead
    if not worker.capture.is_alive():
        return f"its capture thread ended ({status.state}: {status.reason})"
    return "its worker thread ended"


@dataclass
class _Pending:
    worker: CameraWorker  # the dead one, still in the node's cameras until replaced
    why: str
    due: float  # monotonic time of the restart
    noticed: float
    unmade: str | None = None  # why the last try to remake the camera failed, if one did


class Supervisor:
    """Restarts dead camera workers: `make(name)` builds a fresh one, `replace(name, worker)` puts it in place."""

    def __init__(self, make: Callable[[str], CameraWorker], replace: Callable[[str, CameraWorker], None]):
        self.make, self.replace = make, replace
        self.restarts: dict[str, int] = {}  # per camera, since the node started: stats and /metrics
        self._pending: dict[str, _Pending] = {}
        self._backoff: dict[str, Backoff] = {}

    def check(self, cameras: dict[str, CameraWorker]) -> None:
        """Notice workers that died since the last call, and restart those whose delay is over."""
        now = time.monotonic()
        for name in [n for n, p in self._pending.items() if cameras.get(n) is not p.worker]:
            del self._pending[name]  # a reload replaced or removed the camera meanwhile
        for name, worker in cameras.items():
            why = death(worker) if name not in self._pending else None
            if why is not None:
                self._schedule(name, worker, why, now)
        for name, pending in list(self._pending.items()):
            old_capture = pending.worker.capture
            if now >= pending.due and (not old_capture.is_alive() or now - pending.noticed > _OLD_CAPTURE_WAIT_S):
                self._restart(name, pending)

    def waiting(self) -> dict[str, str]:
        """Cameras waiting to be restarted: name -> why, and when."""
        now = time.monotonic()
        pending = list(self._pending.items())  # a copy: /metrics and /healthz ask from their own thread
        return {n: f"{_reason(p)}; restarting in {max(0.0, p.due - now):.0f} s" for n, p in pending}

    def _schedule(self, name: str, worker: CameraWorker, why: str, now: float) -> None:
        backoff = self._backoff.setdefault(name, Backoff(RESTART_FIRST_S, RESTART_MAX_S))
        if now - worker.started > _HEALTHY_S:
            backoff.reset()
        delay = backoff.next_delay()
        worker.stop()  # its capture, if still running, lets go of the camera
        self._pending[name] = _Pending(worker, why, now + delay, now)
        log.error("camera %s: %s; restarting it in %.1f s (the other cameras go on)", name, why, delay)

    def _restart(self, name: str, pending: _Pending) -> None:
        del self._pending[name]
        try:
            fresh = self.make(name)
        except Exception as exc:  # a model or file gone since the start: try again later, backing off further
            # Not _schedule(): the dead worker's long run would start the backoff over at every failed try (one
            # every second or two, for ever), and the reason must not grow by a clause at each one.
            now = time.monotonic()
            delay = self._backoff[name].next_delay()
            self._pending[name] = _Pending(pending.worker, pending.why, now + delay, pending.noticed, str(exc))
            log.error("camera %s: %s; trying again in %.1f s", name, _reason(self._pending[name]), delay)
            return
        self.restarts[name] = self.restarts.get(name, 0) + 1
        fresh.start()
        self.replace(name, fresh)
        log.warning("camera %s: worker restarted (%d restarts since the node started)", name, self.restarts[name])

    def forget(self, name: str) -> None:
        """A camera removed from the config."""
        self._pending.pop(name, None)
        self._backoff.pop(name, None)


def _reason(pending: _Pending) -> str:
    if pending.unmade is None:
        return pending.why
    return f"{pending.why}; and it could not be remade: {pending.unmade}"
