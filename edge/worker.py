"""One camera's worker: its capture thread feeds it, and its own thread runs the pipeline in stream order.

`edge run` makes one per camera (a live source, reconnected forever); `edge replay` makes one for a file read
as fast as the machine allows. Both run exactly this code from the first packet to the last clip.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from edge.capture.camera import CameraCapture, CameraState
from edge.capture.feed import Chunk, Feed, StreamStarted, StreamStopped
from edge.pipeline import CameraPipeline

log = logging.getLogger(__name__)
_POLL_S = 0.2  # how often an idle worker checks whether it should stop
_STATE_EVERY_S = 1.0  # how often the camera's capture state is passed on to its offline check


class CameraWorker:
    """Capture → feed → pipeline (ring, detector, evidence) for one camera, in its own thread."""

    def __init__(
        self,
        name: str,
        capture: CameraCapture,
        feed: Feed,
        pipeline: CameraPipeline,
        detect_on: Callable[[], bool] = lambda: True,
        on_frames: Callable[[int], None] | None = None,
    ):
        self.name = name
        self.capture, self.feed, self.pipeline = capture, feed, pipeline
        self.detect_on = detect_on
        self.on_frames = on_frames
        self.frames = 0  # decoded frames handled
        self.failures = 0  # items whose handling raised; counted, reported in stats, never fatal
        self.announced_frames: int | None = None
        self.detect_s = 0.0  # time spent in the pipeline on decoded frames (metrics: ms per frame)
        self.beat = time.monotonic()  # last time the loop came round: the watchdog's proof of life
        self.fed = time.monotonic()  # last time the capture handed it something: the capture's proof of life
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._state_told = 0.0
        self.started = 0.0  # monotonic time the worker started (its supervisor resets backoff after a long run)
        self.death: str | None = None  # what killed the worker's thread, when something did
        self._thread = threading.Thread(target=self._main, name=f"worker-{name}", daemon=True)

    def start(self) -> None:
        self.started = self.fed = time.monotonic()
        self.capture.start()  # first: a worker that sees no live capture and nothing queued is done
        self._thread.start()

    def stop(self) -> None:
        """Stop capturing; the worker then handles what was already captured and saves every clip."""
        self.capture.stop()
        self._stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish; True when it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ran(self) -> bool:
        """The worker's thread was started (and may since have ended)."""
        return self._thread.ident is not None

    @property
    def asked_to_stop(self) -> bool:
        return self._stopping.is_set()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` in this worker's thread between two items (a reloaded config reaches the pipeline so)."""
        self._calls.put(fn)

    def _main(self) -> None:
        """The thread: _run(), and whatever escapes it (a BaseException from a sink, a bug outside the per-item
        guards) recorded for the node's supervisor, which restarts the camera, instead of vanishing."""
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - this thread ends either way; the node must hear why
            self.death = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.error("camera %s: its worker died: %s", self.name, self.death, exc_info=True)
            self.capture.stop()  # nothing takes its frames any more; its replacement connects afresh
            self.feed.close()
            try:  # the clip in progress is evidence: save what the pipeline holds, if it still can
                self.pipeline.finish()
            except Exception:
                log.exception("camera %s: saving the clips of a dead worker failed", self.name)

    def _run(self) -> None:
        while True:
            self.beat = time.monotonic()
            self._run_calls()
            item = self.feed.get(_POLL_S)
            self._tell_state()
            if item is not None:
                self.fed = time.monotonic()
            else:
                if (self._stopping.is_set() or not self.capture.is_alive()) and self.feed.empty:
                    break
                continue
            self._handle(item)
        self.feed.close()
        try:
            self.pipeline.finish()
        except Exception:
            log.exception("camera %s: finishing the pipeline failed", self.name)

    def _tell_state(self) -> None:
        """Whether the camera is online, to the pipeline's offline check (it has no frames to tell it)."""
        problems = self.pipeline.problems
        if problems is None or time.monotonic() - self._state_told < _STATE_EVERY_S:
            return
        self._state_told = time.monotonic()
        status = self.capture.status
        try:  # a file that played to its end is not a camera gone offline
            problems.on_state(time.time(), status.state in (CameraState.ONLINE, CameraState.ENDED), status.reason)
        except Exception:
            log.exception("camera %s: the offline check failed", self.name)
            self.failures += 1

    def _handle(self, item) -> None:
        try:
            if isinstance(item, Chunk):
                if item.packet is not None:
                    self.pipeline.on_packet(item.packet)
                detect = self.detect_on()
                began = time.perf_counter()
                for frame in item.frames:
                    self.pipeline.on_frame(frame, detect)
                self.detect_s += time.perf_counter() - began
                if item.frames:
                    self.frames += len(item.frames)
                    if self.on_frames:
                        self.on_frames(self.frames)
            elif isinstance(item, StreamStarted):
                self.announced_frames = item.frames
                self.pipeline.start_stream(item)
            elif isinstance(item, StreamStopped):
                self.pipeline.end_stream(item)
        except Exception:
            log.exception("camera %s: handling %s failed", self.name, type(item).__name__)
            self.failures += 1

    def _run_calls(self) -> None:
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:
                log.exception("camera %s: applying a change failed", self.name)
