"""What capture hands to a camera's worker, in order: stream starts and stops, and packets with their frames.

Packets are evidence and are kept (up to _MAX_QUEUED_BYTES waiting, a worker stuck for minutes); decoded
frames are dropped when detection falls behind a live camera (counted). A file source waits instead, so
replaying a file loses nothing.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from edge.capture.packets import KeptPacket, StreamParams
from edge.capture.source import CapturedFrame

_MAX_QUEUED_BYTES = 256 * 1024 * 1024  # packets waiting for a stuck worker: ~4 min of an 8 Mbit/s stream


@dataclass(frozen=True)
class StreamStarted:
    """A (re)connection: what follows is a new stream, with its own timestamps and maybe another size."""

    session: int
    params: StreamParams
    rate: float | None  # frames per second the stream declares, if it does
    frames: int | None = None  # frames a file says it holds (to tell a truncated file)


@dataclass(frozen=True)
class StreamStopped:
    """The stream of `session` ended or failed; `reason` says which."""

    session: int
    reason: str
    ended: bool = False  # the normal end of a file, not a failure


@dataclass
class Chunk:
    """One compressed packet (None at the decoder's final flush) and the frames decoded from it."""

    session: int
    packet: KeptPacket | None
    frames: list[CapturedFrame]


Delivery = StreamStarted | StreamStopped | Chunk


@dataclass
class Feed:
    """A bounded hand-over from a capture thread to a worker thread."""

    max_frames: int
    lossless: bool = False  # wait for room instead of dropping frames (files)
    dropped: int = 0  # frames
    dropped_packets: int = 0  # only past _MAX_QUEUED_BYTES: a stuck worker
    _items: deque = field(default_factory=deque)
    _frames: int = 0
    _bytes: int = 0
    _closed: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def put(self, item: Delivery) -> None:
        """Queue an item; a live camera's frames beyond `max_frames` are dropped (the packet is kept)."""
        with self._cond:
            if isinstance(item, Chunk) and item.frames:
                if self.lossless:
                    self._cond.wait_for(lambda: self._frames < self.max_frames or self._closed)
                elif self._frames + len(item.frames) > self.max_frames:
                    self.dropped += len(item.frames)
                    item = Chunk(item.session, item.packet, [])
            size = len(item.packet.data) if isinstance(item, Chunk) and item.packet is not None else 0
            if size and self._bytes + size > _MAX_QUEUED_BYTES:
                self.dropped += len(item.frames)
                self.dropped_packets += 1
                return
            self._items.append(item)
            self._frames += len(item.frames) if isinstance(item, Chunk) else 0
            self._bytes += size
            self._cond.notify_all()

    def get(self, timeout: float) -> Delivery | None:
        """The next item, or None when nothing came within `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            if isinstance(item, Chunk):
                self._frames -= len(item.frames)
                self._bytes -= len(item.packet.data) if item.packet is not None else 0
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Release a capture thread waiting for room: the worker is going away."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def empty(self) -> bool:
        with self._cond:
            return not self._items
