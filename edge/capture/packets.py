"""Compressed packets kept for evidence: a ring of the last seconds, and remuxing them to a file unchanged."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av


@dataclass(frozen=True)
class StreamParams:
    """What it takes to write a stream's packets again without decoding them."""

    codec: str
    width: int
    height: int
    extradata: bytes | None
    time_base: Fraction
    rate: Fraction | None

    @property
    def length_prefixed(self) -> bool:
        """True for H.264/H.265 packets as stored in mp4 (avcC/hvcC), False for Annex B (RTSP, TS)."""
        return bool(self.extradata) and self.extradata[0] == 1

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream) -> StreamParams:
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or None
        return cls(
            cc.name,
            cc.width,
            cc.height,
            bytes(cc.extradata) if cc.extradata else None,
            Fraction(stream.time_base),
            Fraction(rate) if rate else None,
        )


@dataclass(frozen=True)
class KeptPacket:
    """One compressed packet with its capture time `t` (seconds: wall clock live, stream time in replay)."""

    data: bytes
    pts: int | None
    dts: int | None
    keyframe: bool
    t: float
    params: StreamParams

    @classmethod
    def of(cls, packet: av.Packet, t: float, params: StreamParams) -> KeptPacket:
        return cls(bytes(packet), packet.pts, packet.dts, bool(packet.is_keyframe), t, params)

    def to_av(self) -> av.Packet:
        p = av.Packet(self.data)
        p.pts, p.dts, p.time_base = self.pts, self.dts, self.params.time_base
        p.is_keyframe = self.keyframe
        return p


class PacketRing:
    """The last `seconds` of packets, always beginning at a keyframe; safe to feed and read from two threads.

    Each packet gets a sequence number, so a reader can ask for exactly the packets it has not seen.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._packets: deque[tuple[int, KeptPacket]] = deque()
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, pkt: KeptPacket) -> None:
        """Append a packet; a change of codec or size starts the ring afresh (they cannot share a file)."""
        with self._lock:
            if self._packets and self._packets[-1][1].params != pkt.params:
                self._packets.clear()
            if not self._packets and not pkt.keyframe:
                return  # nothing decodes before the first keyframe
            self._seq += 1
            self._packets.append((self._seq, pkt))
            self._trim(pkt.t - self.seconds)

    def _trim(self, oldest: float) -> None:
        # Drop whole groups of pictures, as long as the next keyframe still starts before `oldest`.
        while True:
            nxt = next((i for i, (_, p) in enumerate(self._packets) if i > 0 and p.keyframe), None)
            if nxt is None or self._packets[nxt][1].t > oldest:
                break
            for _ in range(nxt):
                self._packets.popleft()
        # A camera that sends no further keyframe (intra refresh) would make the ring grow without end:
        # past twice its length, the oldest packets go even if the clip can then not start at a keyframe.
        while self._packets and self._packets[0][1].t < oldest - self.seconds:
            self._packets.popleft()

    def clear(self) -> None:
        """Forget every packet: a new connection's timestamps cannot follow the old ones in one clip."""
        with self._lock:
            self._packets.clear()

    def since(self, t: float) -> list[tuple[int, KeptPacket]]:
        """Packets from the last keyframe at or before `t` (or the oldest kept) to the newest."""
        with self._lock:
            pkts = list(self._packets)
        start = 0
        for i, (_, p) in enumerate(pkts):
            if p.keyframe and p.t <= t:
                start = i
        return pkts[start:]

    def after(self, seq: int) -> list[tuple[int, KeptPacket]]:
        """Packets newer than sequence number `seq`."""
        with self._lock:
            return [(s, p) for s, p in self._packets if s > seq]
