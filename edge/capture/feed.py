"""What capture hands to a camera's worker, in order: stream starts and stops, and packets with their frames.

Packets are evidence and are kept (up to MAX_QUEUED_BYTES waiting, a worker stuck for minutes); frames are
dropped when detection falls behind a live camera by more than `max_frames` (counted). A file source waits
instead, so replaying a file loses nothing. Frames that will be detected are counted from the moment their
packet arrives (admit()), while the packet still waits to be decoded: only `decoded_ahead` of them are ever
decoded before the worker takes them, as each holds a whole luma plane.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from edge.capture.packets import KeptPacket, StreamParams
from edge.capture.source import CapturedFrame

MAX_QUEUED_BYTES = 256 * 1024 * 1024  # packets waiting for a stuck worker: ~4 min of an 8 Mbit/s stream
# Decoded frames waiting for a live camera's worker: one ready while it detects on another keeps it busy,
# a second absorbs the jitter of decoding (a keyframe takes several times longer).
DECODED_AHEAD = 2


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
    admitted: bool | None = None  # admit()'s answer when the packet arrived; None: not asked, decided on put


Delivery = StreamStarted | StreamStopped | Chunk


@dataclass
class Feed:
    """A bounded hand-over from a capture thread to a worker thread."""

    max_frames: int
    lossless: bool = False  # wait for room instead of dropping frames (files)
    decoded_ahead: int = DECODED_AHEAD  # decoded frames that may wait; a lossless feed allows max_frames
    dropped: int = 0  # frames
    dropped_packets: int = 0  # only past MAX_QUEUED_BYTES: a stuck worker
    _items: deque = field(default_factory=deque)
    _frames: int = 0  # decoded frames queued
    _waiting: int = 0  # frames queued, and frames admitted whose packet is not decoded yet
    _bytes: int = 0
    _closed: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def admit(self) -> bool:
        """A packet arrived: True when its frame will be detected, False when it is to be dropped (live only)."""
        with self._cond:
            if not self.lossless and self._waiting >= self.max_frames:
                return False
            self._waiting += 1
            return True

    def release(self, packets: int) -> None:
        """`packets` admitted packets will never be put (a decoding failure, a reconnect): free their places.

        Otherwise each failure keeps a place for good, and after `max_frames` of them every frame is dropped.
        """
        if packets:
            with self._cond:
                self._waiting -= packets
                self._cond.notify_all()

    def lose_packet(self) -> None:
        """A packet could not even wait to be decoded (MAX_QUEUED_BYTES): it and its frame are lost."""
        with self._cond:
            self.dropped += 1
            self.dropped_packets += 1

    def put(self, item: Delivery) -> None:
        """Queue an item; a live camera's frames beyond `max_frames` are dropped (the packet is kept)."""
        with self._cond:
            if isinstance(item, Chunk):
                item = self._room_for(item)
            size = len(item.packet.data) if isinstance(item, Chunk) and item.packet is not None else 0
            if size and self._bytes + size > MAX_QUEUED_BYTES:
                self.dropped += len(item.frames)
                self._waiting -= len(item.frames)
                self.dropped_packets += 1
                return
            self._items.append(item)
            self._frames += len(item.frames) if isinstance(item, Chunk) else 0
            self._bytes += size
            self._cond.notify_all()

    def _room_for(self, chunk: Chunk) -> Chunk:
        """The chunk as it may be queued: its frames dropped, or kept once few enough decoded ones wait."""
        if chunk.admitted is True:
            self._waiting -= 1  # the packet's place becomes its frames'
        elif chunk.frames and not self.lossless and self._waiting + len(chunk.frames) > self.max_frames:
            chunk.admitted = False  # asked now, as a chunk from a source read in the same thread is
        if chunk.admitted is False and not self.lossless:
            self.dropped += len(chunk.frames)
            return Chunk(chunk.session, chunk.packet, [], False)
        if chunk.frames:
            limit = self.max_frames if self.lossless else min(self.decoded_ahead, self.max_frames)
            self._cond.wait_for(lambda: self._frames < limit or self._closed)
        self._waiting += len(chunk.frames)
        return chunk

    def get(self, timeout: float) -> Delivery | None:
        """The next item, or None when nothing came within `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            if isinstance(item, Chunk):
                self._frames -= len(item.frames)
                self._waiting -= len(item.frames)
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
