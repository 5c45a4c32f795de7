"""The original evidence clip: written packet by packet, byte for byte, surviving a kill, for every codec."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import pytest

from edge.capture.packets import KeptPacket
from edge.capture.source import Clock, SourceOptions, StreamEnded, VideoSource
from edge.publish.original import Made, OriginalClip, recover_partial

REPO = Path(__file__).resolve().parent.parent
AUD = b"\x00\x00\x00\x01\x09"  # H.264 access unit delimiter, which MPEG-TS requires before each picture


def _ffmpeg(out: Path, size: str, rate: int, seconds: float, *codec: str) -> Path:
    src = f"testsrc2=size={size}:rate={rate}"
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", str(seconds), *codec, str(out)]
    subprocess.run(cmd, check=True)
    return out


def _packets(path: Path) -> list[KeptPacket]:
    """The packets a camera source gives for `path`, as the node would keep them."""
    src = VideoSource(str(path), SourceOptions(clock=Clock.STREAM))
    src.open()
    got = []
    try:
        for kept, _ in src.packets():
            if kept is not None:
                got.append(kept)
    except StreamEnded:
        pass
    finally:
        src.close()
    return got


def _demux(path: Path) -> list[bytes]:
    with av.open(str(path)) as inp:
        return [bytes(p) for p in inp.demux(inp.streams.video[0]) if p.size]


def _readable(path: Path) -> int:
    """How many packets a reader gets from a file being written (none while it is only a header)."""
    try:
        return len(_demux(path))
    except av.error.EOFError:
        return 0


def _frames(path: Path) -> list[tuple[int, int]]:
    """(width, height) of every frame a reader decodes from `path`; raises if it cannot decode."""
    with av.open(str(path)) as inp:
        return [(f.width, f.height) for p in inp.demux(inp.streams.video[0]) for f in p.decode()]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    x264 = ["-c:v", "libx264", "-g", "25", "-bf", "2", "-pix_fmt", "yuv420p"]
    return {
        # mp4: length-prefixed H.264 with B-frames, turned into Annex B by the source as from an RTSP camera
        "h264": _ffmpeg(d / "h264.mp4", "320x240", 25, 4, *x264),
        "h264_big": _ffmpeg(d / "h264_big.mp4", "352x288", 25, 1, *x264),
        "mjpeg": _ffmpeg(d / "mjpeg.avi", "320x240", 10, 3, "-c:v", "mjpeg", "-q:v", "3"),
        "h263": _ffmpeg(d / "h263.3gp", "352x288", 10, 3, "-c:v", "h263"),
    }


@pytest.fixture(scope="module")
def packets(media):
    return {name: _packets(path) for name, path in media.items()}


def _write(folder: Path, pkts: list[KeptPacket]):
    clip = OriginalClip(folder, pkts[0].params)
    for p in pkts:
        clip.append(p)
    return clip.close()


# --- H.264: packet by packet, byte for byte ---------------------------------------------------------------


def test_h264_written_packet_by_packet_is_the_cameras_packets(tmp_path, media, packets):
    pkts = packets["h264"]
    clip = OriginalClip(tmp_path, pkts[0].params)
    on_disk = []
    for p in pkts:
        assert clip.append(p)
        on_disk.append(_readable(clip.partial))
    # each packet is readable from the partial file as soon as append() returns: nothing waits in memory
    assert on_disk == list(range(1, len(pkts) + 1))
    result = clip.close()

    assert (result.name, result.made, result.codec, result.packets, result.dropped) == (
        "original.ts",
        Made.REMUX,
        "h264",
        len(pkts),
        0,
    )
    assert (result.first_t, result.last_t) == (pkts[0].t, pkts[-1].t)
    final = tmp_path / "original.ts"
    assert final.stat().st_mode & 0o777 == 0o444 and not clip.partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["original.ts"]  # no sidecar left behind

    assert len(_frames(final)) == len(_frames(media["h264"])) == 100
    written = _demux(final)
    assert len(written) == len(pkts)
    for got, sent in zip(written, pkts, strict=True):
        # the camera's bytes, whole and unchanged; MPEG-TS only puts its access unit delimiter in front
        assert got == sent.data or (not sent.data.startswith(AUD) and got == AUD + b"\xf0" + sent.data)
    assert any(
        got != sent.data for got, sent in zip(written, pkts, strict=True)
    )  # the delimiter is really added here


def test_an_existing_original_is_never_overwritten(tmp_path, packets):
    _write(tmp_path, packets["h264"][:25])
    before = (tmp_path / "original.ts").read_bytes()
    with pytest.raises(FileExistsError):
        OriginalClip(tmp_path, packets["h264"][0].params)
    assert (tmp_path / "original.ts").read_bytes() == before
    assert _write(tmp_path / "other", packets["h264"][:25]).name == "original.ts"  # control: a fresh folder


def test_a_clip_without_packets_leaves_nothing(tmp_path, packets):
    clip = OriginalClip(tmp_path, packets["h264"][0].params)
    with pytest.raises(ValueError):
        clip.close()
    assert list(tmp_path.iterdir()) == []


# --- timestamps and stream changes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["h264", "mjpeg"])
def test_a_packet_whose_timestamp_goes_backwards_is_dropped_and_counted(tmp_path, packets, name):
    pkts = packets[name][:30]
    late = replace(pkts[3], t=pkts[10].t)  # packet 3 again, arriving after packet 10: its dts goes back
    repeat = replace(pkts[12], t=pkts[12].t)  # the same dts twice
    fed = pkts[:11] + [late] + pkts[11:13] + [repeat] + pkts[13:]

    result = _write(tmp_path / "bad", fed)
    assert (result.packets, result.dropped) == (len(pkts), 2)
    control = _write(tmp_path / "good", pkts)
    assert (control.packets, control.dropped) == (len(pkts), 0)
    # nothing else lost: the same packets and frames as the clean clip
    assert _demux(tmp_path / "bad" / result.name) == _demux(tmp_path / "good" / control.name)
    assert len(_frames(tmp_path / "bad" / result.name)) == len(pkts)


def test_packets_without_timestamps_get_them_from_their_capture_time(tmp_path, packets):
    pkts = [replace(p, pts=None, dts=None) for p in packets["mjpeg"]]
    result = _write(tmp_path, pkts)
    assert (result.packets, result.dropped) == (len(pkts), 0)
    assert _demux(tmp_path / result.name) == [p.data for p in pkts]


def test_a_stream_change_mid_clip_ends_the_clip(tmp_path, packets):
    first, other = packets["h264"][:50], packets["h264_big"]
    assert first[0].params != other[0].params
    clip = OriginalClip(tmp_path / "changed", first[0].params)
    assert clip.extend(first) == len(first) and not clip.ended
    assert not clip.append(other[0]) and clip.ended
    assert clip.extend(other[1:] + packets["h264"][50:]) == 0  # the same stream coming back is not taken either
    result = clip.close()
    assert (result.packets, result.last_t) == (len(first), first[-1].t)
    assert _frames(tmp_path / "changed" / result.name) == [(320, 240)] * len(first)

    control = OriginalClip(tmp_path / "whole", other[0].params)  # the second stream alone is written whole
    control.extend(other)
    assert not control.ended
    assert control.close().packets == len(other)


# --- MJPEG and codecs nothing carries ---------------------------------------------------------------------


def test_mjpeg_is_kept_byte_for_byte_in_matroska(tmp_path, media, packets):
    pkts = packets["mjpeg"]
    assert pkts[0].params.codec == "mjpeg"
    result = _write(tmp_path, pkts)
    assert (result.name, result.made, result.codec, result.source_codec) == (
        "original.mkv",
        Made.REMUX,
        "mjpeg",
        "mjpeg",
    )
    assert _demux(tmp_path / "original.mkv") == [p.data for p in pkts]
    assert _frames(tmp_path / "original.mkv") == [(320, 240)] * 30 == _frames(media["mjpeg"])


def test_a_codec_no_container_carries_is_reencoded_and_says_so(tmp_path, media, packets):
    pkts = packets["h263"]
    assert pkts[0].params.codec == "h263"
    result = _write(tmp_path, pkts)
    assert (result.name, result.made, result.codec, result.source_codec) == (
        "original.ts",
        Made.REENCODE,
        "h264",
        "h263",
    )
    assert result.packets == len(pkts)
    assert _frames(tmp_path / "original.ts") == [(352, 288)] * len(_frames(media["h263"])) == [(352, 288)] * 30
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_programs", "-of", "json", str(tmp_path / "original.ts")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(probe.stdout)["programs"][0]["tags"]["service_name"] == "re-encoded from h263"


def test_uncompressed_frames_are_refused_rather_than_guessed(tmp_path, packets):
    raw = replace(packets["mjpeg"][0].params, codec="rawvideo")
    with pytest.raises(ValueError, match="pixel format"):
        OriginalClip(tmp_path, raw)
    assert list(tmp_path.iterdir()) == []


# --- crashes ----------------------------------------------------------------------------------------------

_KILLED_WRITER = """
import os, pickle, signal, sys
from pathlib import Path
from edge.publish.original import OriginalClip
pkts = pickle.loads(Path(sys.argv[1]).read_bytes())
clip = OriginalClip(Path(sys.argv[2]), pkts[0].params)
clip.extend(pkts)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("name", "suffix", "lag"), [("h264", ".ts", 0), ("mjpeg", ".mkv", 1)])
def test_a_killed_writer_leaves_a_clip_that_recovers(tmp_path, packets, name, suffix, lag):
    import pickle

    pkts = packets[name][:40]
    (tmp_path / "pkts").write_bytes(pickle.dumps(pkts))
    folder = tmp_path / "event"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "pkts"), str(folder)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert not (folder / f"original{suffix}").exists() and (folder / f".original-partial{suffix}").exists()

    result = recover_partial(folder)
    assert result is not None and result.recovered
    # Matroska holds the packet being written in its cluster buffer until the next one arrives
    assert (result.name, result.packets, result.first_t) == (f"original{suffix}", len(pkts) - lag, pkts[0].t)
    # estimated from the file's timestamps: within the reordering delay of B-frames (2 frames here)
    assert result.last_t == pytest.approx(pkts[len(pkts) - 1 - lag].t, abs=0.081)
    final = folder / result.name
    assert final.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in folder.iterdir()) == [result.name]
    assert len(_frames(final)) == len(pkts) - lag
    assert recover_partial(folder) is None  # control: nothing left to recover, the original is untouched
    assert final.stat().st_mode & 0o777 == 0o444


@pytest.mark.parametrize("name", ["h264", "mjpeg"])
def test_a_partial_cut_at_any_byte_recovers_the_frames_before_the_cut(tmp_path, packets, name):
    pkts = packets[name]
    clip = OriginalClip(tmp_path / "writing", pkts[0].params)
    sizes, readable = [], []
    for p in pkts:
        clip.append(p)
        sizes.append(clip.partial.stat().st_size)
        readable.append(_readable(clip.partial))
    clip.sync()
    data = clip.partial.read_bytes()
    side = (tmp_path / "writing" / ".original-partial.json").read_bytes()

    rng = random.Random(7)
    for cut in [rng.randrange(sizes[0], len(data)) for _ in range(8)] + [sizes[0], len(data)]:
        folder = tmp_path / f"cut-{cut}"
        folder.mkdir()
        (folder / clip.partial.name).write_bytes(data[:cut])  # what a power cut at byte `cut` leaves
        (folder / ".original-partial.json").write_bytes(side)
        whole = max((n for size, n in zip(sizes, readable, strict=True) if size <= cut), default=0)
        result = recover_partial(folder)
        if whole == 0:  # the cut fell in the first packet (or, Matroska, the second): nothing to keep
            assert result is None and not list(folder.iterdir())
            continue
        assert result is not None and result.recovered, cut
        frames = _frames(folder / result.name)  # decodes without an error
        # every packet wholly before the cut decodes; an incomplete last one may give one concealed frame
        assert whole <= len(frames) <= whole + 1, (cut, whole, len(frames))
        assert whole <= result.packets <= whole + 1
        assert _demux(folder / result.name)[:whole] == _demux(clip.partial)[:whole]
    clip.close()


def test_a_partial_with_no_packet_is_removed_and_no_partial_is_none(tmp_path, packets):
    clip = OriginalClip(tmp_path / "empty", packets["mjpeg"][0].params)
    clip._stop()  # killed before the first packet: a header and nothing else
    assert clip.partial.exists()
    assert recover_partial(tmp_path / "empty") is None
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "none").mkdir()
    assert recover_partial(tmp_path / "none") is None


def test_recovery_finishes_an_original_renamed_but_not_yet_read_only(tmp_path, packets):
    _write(tmp_path, packets["mjpeg"][:5])
    final = tmp_path / "original.mkv"
    final.chmod(0o644)  # killed between the rename and the chmod
    assert recover_partial(tmp_path) is None
    assert final.stat().st_mode & 0o777 == 0o444


def test_fixture_media_is_what_the_tests_claim(media):
    assert shutil.which("ffmpeg")
    with av.open(str(media["h264"])) as inp:
        assert inp.streams.video[0].codec_context.has_b_frames  # decode order differs from display order
