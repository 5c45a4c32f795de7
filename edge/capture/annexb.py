"""Length-prefixed H.264/H.265 (as in mp4) to Annex B (as in RTSP and MPEG-TS), NAL units unchanged.

The original evidence clip keeps every NAL unit byte for byte; only the framing between them changes,
so clips from files and from cameras are written the same way.
"""

from __future__ import annotations

import struct

START = b"\x00\x00\x00\x01"


def _avcc_sets(extra: bytes) -> tuple[int, list[bytes]]:
    size = (extra[4] & 3) + 1
    sets, pos = [], 5
    for count_mask in (0x1F, 0xFF):  # SPS count sits in 5 bits, PPS count in a whole byte
        count = extra[pos] & count_mask
        pos += 1
        for _ in range(count):
            (n,) = struct.unpack_from(">H", extra, pos)
            sets.append(extra[pos + 2 : pos + 2 + n])
            pos += 2 + n
    return size, sets


def _hvcc_sets(extra: bytes) -> tuple[int, list[bytes]]:
    size = (extra[21] & 3) + 1
    sets, pos = [], 23
    for _ in range(extra[22]):
        (count,) = struct.unpack_from(">H", extra, pos + 1)
        pos += 3
        for _ in range(count):
            (n,) = struct.unpack_from(">H", extra, pos)
            sets.append(extra[pos + 2 : pos + 2 + n])
            pos += 2 + n
    return size, sets


class AnnexB:
    """Converts one stream's packets; `header` is its parameter sets with start codes."""

    def __init__(self, codec: str, extradata: bytes):
        if codec in ("hevc", "h265"):
            self.size, sets = _hvcc_sets(extradata)
        elif codec == "h264":
            self.size, sets = _avcc_sets(extradata)
        else:
            raise ValueError(f"cannot reframe {codec} packets")
        self.header = b"".join(START + s for s in sets)

    def convert(self, data: bytes, keyframe: bool) -> bytes:
        """The packet's NAL units with start codes; a keyframe also carries the parameter sets."""
        out = [self.header] if keyframe else []
        pos = 0
        while pos + self.size <= len(data):
            n = int.from_bytes(data[pos : pos + self.size], "big")
            pos += self.size
            out.append(START + data[pos : pos + n])
            pos += n
        return b"".join(out)
