"""A source's packets read in a thread of their own, so that they wait for the decoder compressed.

A live camera must be read as it sends (or its data is lost); decoding can wait until the worker is ready
for the frames. A 1080p packet is ~20 KB and its decoded luma plane 2 MB: a worker 3 s behind now holds
1.5 MB of packets per camera, not 150 MB of frames. Whether a packet's frames will be detected is decided
when it arrives, as it was when frames were queued: the feed's rule, only counted in packets.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import av

from edge.capture.feed import MAX_QUEUED_BYTES, Feed
from edge.capture.source import VideoSource


@dataclass(frozen=True)
class Demuxed:
    """A packet as read: when it arrived, and whether its frames have room in the feed."""

    packet: av.Packet
    arrival: float  # Unix time, for the capture times of its frames
    received: float  # monotonic, for the stall watchdog
    admitted: bool


class PacketReader:
    """Reads `source` into a queue in its own thread; iterate it (in one other thread) to take the packets.

    A lossless feed (a file) is read at most `ahead` packets ahead of the decoder; a live camera is read as it
    sends, up to MAX_QUEUED_BYTES waiting (a decoder stuck behind a worker that does not read).
    """

    def __init__(self, source: VideoSource, feed: Feed, ahead: int, name: str):
        self.source, self.feed, self.ahead = source, feed, ahead
        self._items: deque[Demuxed] = deque()
        self._bytes = 0
        self._error: Exception | None = None
        self._done = self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (within one packet, or the source's read timeout) and wait for the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def discard(self) -> None:
        """Drop the packets read but not taken (once stopped); the feed gets back the places it kept for them."""
        with self._cond:
            admitted = sum(item.admitted for item in self._items)
            self._items.clear()
            self._bytes = 0
        self.feed.release(admitted)

    def _run(self) -> None:
        try:
            for packet, arrival in self.source.demux():
                with self._cond:
                    if self.feed.lossless:
                        self._cond.wait_for(lambda: self._stopping or len(self._items) < self.ahead)
                    if self._stopping:
                        return
                    if self._bytes + packet.size > MAX_QUEUED_BYTES:
                        self.feed.lose_packet()
                        continue
                item = Demuxed(packet, arrival, time.monotonic(), self.feed.admit())
                with self._cond:
                    self._items.append(item)
                    self._bytes += packet.size
                    self._cond.notify_all()
        except Exception as exc:  # the end of the stream, or a failure: the decoding thread raises it
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Demuxed]:
        """The packets in order; raises what ended the reading (StreamEnded, SourceError) after the last."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._done)
                if not self._items:
                    if self._error is not None:
                        raise self._error
                    return
                item = self._items.popleft()
                self._bytes -= item.packet.size
                self._cond.notify_all()
            yield item
