"""Evidence per event: the original clip (packets as received), an annotated clip, a still and a manifest."""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.capture.packets import KeptPacket
from edge.detect.types import FallEvent
from edge.geometry import CameraGeometry, FacadeMap, polygons_mask
from edge.publish.manifest import (
    MANIFEST,
    PARTIAL_SUFFIX,
    manifest_readable,
    sha256_file,
    write_atomic,
    write_manifest,
)
from edge.publish.original import Made, OriginalClip, OriginalResult, recover_partial
from edge.video import H264Writer

log = logging.getLogger(__name__)
_RED, _YELLOW, _WHITE, _BLACK = (40, 40, 230), (0, 215, 255), (255, 255, 255), (0, 0, 0)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=_WHITE) -> None:
    thick = max(1, round(scale * 2))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, _BLACK, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def blur_privacy(img: np.ndarray, privacy: list) -> np.ndarray:
    """Blur the privacy polygons (0..1 coordinates) of a BGR image, in place."""
    mask = polygons_mask(img.shape[:2], privacy)
    if mask is not None:
        k = max(15, (img.shape[1] // 40) | 1)
        blurred = cv2.GaussianBlur(img, (k, k), 0)
        img[mask > 0] = blurred[mask > 0]
    return img


def draw_event(img: np.ndarray, event: FallEvent, upto: int | None, caption: str) -> None:
    """Draw the trajectory (up to frame `upto`), the origin and a caption on a BGR frame."""
    scale = img.shape[0] / 1080
    pts = [(x, y) for f, x, y in event.trajectory if upto is None or f <= upto]
    if len(pts) >= 2:
        poly = np.array(pts, np.float32).round().astype(np.int32)
        cv2.polylines(img, [poly], False, _RED, max(1, round(2 * scale)), cv2.LINE_AA)
    if pts:
        cv2.circle(img, tuple(np.round(pts[-1]).astype(int)), max(3, round(8 * scale)), _YELLOW, 1, cv2.LINE_AA)
    o = event.origin
    c = (round(o.x), round(o.y))
    r = max(6, round(14 * scale))
    cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), _YELLOW, max(1, round(2 * scale)), cv2.LINE_AA)
    label = f"floor {o.floor}" if o.floor is not None else "origin"
    _text(img, label, (c[0] + r + 4, c[1] + r // 2), 0.8 * scale, _YELLOW)
    _text(img, caption, (round(12 * scale), round(36 * scale)), 0.9 * scale)


# An origin read as further out than this share of the camera's distance is none the detector placed: its
# storey lines are drawn on the wall.
_MAX_DRAWN_OUT_SHARE = 0.9


def storey_lines(facade: FacadeMap, event: FallEvent) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The storey boundaries around the origin as pixel segments, each with its offset from the origin floor.

    Drawn as they look at the origin's distance in front of the wall (edge.geometry.CameraPose.in_front),
    so the origin's box sits between the lines of the floor it is labelled with, as the object did.
    """
    o = event.origin
    if o.facade_x_m is None or o.floor is None or o.height_m is None:
        return []
    out = _out_of_wall(facade, event)
    lines = []
    for k in range(-2, 4):
        h = (o.floor - facade.ground_floor + k) * facade.floor_height_m
        ends = [(o.facade_x_m - 3.0, h), (o.facade_x_m + 3.0, h)]
        if out is not None:
            ends = [facade.camera.on_wall(along, up, out) for along, up in ends]
        a, b = facade.to_image(np.array(ends))
        lines.append((k, a, b))
    return lines


def _out_of_wall(facade: FacadeMap, event: FallEvent) -> float | None:
    """How far in front of the wall the origin was placed (CameraPose.in_front); None when on the wall."""
    pose, o = facade.camera, event.origin
    if pose is None:
        return None
    seen_up = float(facade.to_facade(np.array([[o.x, o.y]]))[0][1])  # the wall point its pixel shows
    out = pose.out_from_wall(o.height_m, seen_up)
    return out if out is not None and 0.0 < out < _MAX_DRAWN_OUT_SHARE * pose.distance_m else None


def draw_floor_lines(img: np.ndarray, facade: FacadeMap, event: FallEvent) -> None:
    """Mark the storey boundaries around the origin, so a viewer can count floors."""
    scale = img.shape[0] / 1080
    for k, a, b in storey_lines(facade, event):
        cv2.line(img, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), _WHITE, 1, cv2.LINE_AA)
        if 0 <= k < 3:
            _text(img, str(event.origin.floor + k), tuple(np.round(b).astype(int) + (6, 0)), 0.5 * scale)


class EvidenceStage(StrEnum):
    """How far an event's evidence has come."""

    ORIGINAL = "original"  # original clip, event and signed manifest on disk: the evidence is safe
    COMPLETE = "complete"  # annotated clip and still added, manifest signed again


PENDING = ".annotate"  # marker: the annotated clip and still are still to be made (survives a restart)
FRAMES = "frames.json"  # frame number of each of the original's frames in display order, for the overlay
EVENT = "event.json"


@dataclass
class EvidenceFiles:
    """What was written for one event, relative to its folder."""

    folder: Path
    stage: EvidenceStage
    original: str
    annotated: str | None
    still: str | None
    manifest: str
    note: str | None = None  # why the clip is shorter than asked, when it is


@dataclass
class EvidenceJob:
    """An event's evidence being gathered: packets from pre-roll until post-roll after the object is gone."""

    event: FallEvent
    folder: Path
    clip_from_t: float
    first_t: float
    original: OriginalClip | None = None
    until_t: float | None = None
    last_t: float | None = None
    frame_pts: list[int] = field(default_factory=list)
    past_post_roll: bool = False  # a packet stamped after until_t arrived: nothing more belongs to the clip

    def add(self, pkt: KeptPacket) -> None:
        """Append the next packet of the stream (the clip is written to disk as it grows)."""
        if self.until_t is not None and self.last_t is not None and pkt.t > self.until_t:
            self.past_post_roll = True
            return
        if self.original is None:
            if not pkt.keyframe:
                return  # a clip starts at a keyframe
            self.folder.mkdir(parents=True, exist_ok=True)
            self.original = OriginalClip(self.folder, pkt.params)
        if self.original.append(pkt):
            self.last_t = pkt.t
            if pkt.pts is not None:
                self.frame_pts.append(pkt.pts)

    @property
    def complete(self) -> bool:
        """The post-roll is in: a packet at or past its end has come (times are rarely exactly equal)."""
        if self.until_t is None or self.last_t is None:
            return False
        return self.past_post_roll or self.last_t >= self.until_t


def stored_event(events: Path, event_id: str) -> Path | None:
    """The folder of an event stored right under `events` (itself, not a link out of it), or None. Ids reach
    here from the network: a made-up one must not name, or create, anything."""
    folder = events / event_id
    if not folder.is_dir() or folder.resolve() != events.resolve() / event_id:
        return None
    return folder


def save_original(
    job: EvidenceJob,
    record: dict,
    info: dict,
    signer: Ed25519PrivateKey,
    pts_index: dict[int, tuple[int, float]],
    note: str | None = None,
) -> EvidenceFiles:
    """Close the original clip and sign it with the event: the evidence that must never be lost."""
    folder = job.folder
    written = job.original.close()
    size = [job.original.params.width, job.original.params.height]
    record = {**record, "evidence": {"original": written.name, "manifest": MANIFEST, "frame_size": size}}
    if note:
        record["evidence"]["note"] = note
    write_json(folder / EVENT, record)
    frames = frame_index(sorted(job.frame_pts), pts_index, job.original.params.time_base, job.event.fps)
    write_json(folder / FRAMES, {"frames": frames})
    times = {"first_seen_t": job.first_t, "clip_from_t": written.first_t, "clip_to_t": written.last_t}
    extra = {"original_made_by": str(written.made), **({"note": note} if note else {})}
    (folder / PENDING).touch()
    # The event's id signed in: a receiver that never gets event.json (the center) can tell this manifest and
    # the files it lists from another event's of the same node, filed under this event's name.
    signed = {**info, "event": record["id"], **times, **extra}
    manifest = write_manifest(folder, [written.name, EVENT, FRAMES], signed, signer)
    return EvidenceFiles(folder, EvidenceStage.ORIGINAL, written.name, None, None, manifest.name, note)


def frame_index(pts: list[int], seen: dict[int, tuple[int, float]], time_base: Fraction, fps: float) -> list[list]:
    """[frame number, capture time] of each frame of a clip, by its timestamp `pts` (display order).

    `seen` holds the frames detection saw. A frame it did not see (dropped behind a slow detector, or still
    in the decoder when the post-roll was in) is placed from the nearest frame it saw by the difference of
    their timestamps, as the pipeline numbers frames: else the overlay would draw the whole trajectory on it,
    the future too, and frames.json would leave it without a time."""
    known = sorted(p for p in pts if p in seen)
    out = []
    for p in pts:
        if p in seen:
            out.append(list(seen[p]))
            continue
        if not known:
            out.append([None, None])
            continue
        i = bisect.bisect_left(known, p)
        near = min(known[max(0, i - 1) : i + 1], key=lambda q: abs(q - p))
        index, t = seen[near]
        dt = float((p - near) * time_base)
        out.append([index + round(dt * fps), round(t + dt, 6)])
    return out


RECOVERED = "the node stopped abruptly while recording; the clip ends where its writing stopped"
RESIGNED = "the node stopped while signing; signed again at restart, over the files as they were found"
MALFORMED_ASIDE = MANIFEST + ".malformed"  # kept for whoever looks into it; the new manifest does not cover it


def recover_interrupted(
    events_dir: Path, signer: Ed25519PrivateKey, info_for: Callable[[str], dict]
) -> list[tuple[dict, EvidenceFiles]]:
    """Sign what a crash left: every event folder with an original and no manifest, or one that cannot be read
    (an older node rewrote it in place); returns them."""
    done = []
    if not events_dir.is_dir():
        return done
    for folder in sorted(p for p in events_dir.iterdir() if p.is_dir()):
        try:
            found = _recover_one(folder, signer, info_for)
        except (ValueError, OSError, KeyError) as exc:  # one unreadable folder must not keep every camera down
            log.error("event folder %s: not recovered (%s); left in place as found, unsigned", folder, why(exc))
            continue
        if found is not None:
            done.append(found)
    return done


def why(exc: Exception) -> str:
    """An exception in a log line: its type and message."""
    return f"{type(exc).__name__}: {exc}"


def _recover_one(
    folder: Path, signer: Ed25519PrivateKey, info_for: Callable[[str], dict]
) -> tuple[dict, EvidenceFiles] | None:
    """Sign one event folder a crash left unsigned, or with a manifest that cannot be read; None if it is fine."""
    if (folder / PENDING).exists():  # only a folder being signed can hold a signing killed before its rename
        (folder / (MANIFEST + PARTIAL_SUFFIX)).unlink(missing_ok=True)  # the manifest signed before it stands
    note = _signing_needed(folder)
    if note is None:
        return None
    written = recover_partial(folder) or _finished_unsigned(folder)
    if written is None:
        return None
    record = json.loads((folder / EVENT).read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{EVENT} holds no event")
    if note == RESIGNED:
        log.warning("%s: its manifest cannot be read; kept as %s and signed again", folder, MALFORMED_ASIDE)
        os.replace(folder / MANIFEST, folder / MALFORMED_ASIDE)
    return _sign_recovered(folder, record, written, note, signer, info_for)


def _signing_needed(folder: Path) -> str | None:
    """The note to sign a folder again with, or None when it needs no signing (or has no event)."""
    if not (folder / EVENT).exists():
        return None
    if not (folder / MANIFEST).exists():
        return RECOVERED
    # Only a signing under way (the folder waits for its annotated copy) can have left a manifest half written
    # (by a node older than write_atomic). Any other unreadable manifest is damage or tampering: `edge verify`
    # reports it, and the node must not sign over it. So, too, a start reads no finished folder's manifest.
    if not (folder / PENDING).exists() or manifest_readable(folder):
        return None
    return RESIGNED


def _sign_recovered(
    folder: Path,
    record: dict,
    written: OriginalResult,
    note: str,
    signer: Ed25519PrivateKey,
    info_for: Callable[[str], dict],
) -> tuple[dict, EvidenceFiles]:
    """Sign an original found at start with its event, at stage original: the annotation is done again."""
    size = clip_size(folder / written.name)
    record["evidence"] = {"original": written.name, "manifest": MANIFEST, "frame_size": size, "note": note}
    write_json(folder / EVENT, record)
    if not _frames_readable(folder):
        write_json(folder / FRAMES, {"frames": []})
    times = {"clip_from_t": written.first_t, "clip_to_t": written.last_t}
    info = {**info_for(record.get("camera", "")), "event": folder.name, **times}
    info["original_made_by"] = str(written.made)
    (folder / PENDING).touch()
    manifest = write_manifest(folder, [written.name, EVENT, FRAMES], {**info, "note": note}, signer)
    files = EvidenceFiles(folder, EvidenceStage.ORIGINAL, written.name, None, None, manifest.name, note)
    return {k: v for k, v in record.items() if k != "evidence"}, files


def _frames_readable(folder: Path) -> bool:
    """frames.json as save_original wrote it: the frame index, kept when the original is signed again."""
    try:
        return isinstance(json.loads((folder / FRAMES).read_text()).get("frames"), list)
    except (OSError, ValueError, AttributeError):
        return False


def clip_size(path: Path) -> list[int] | None:
    """[width, height] of a clip's video, or None when it cannot be read."""
    try:
        with av.open(str(path)) as clip:
            stream = clip.streams.video[0]
            return [stream.codec_context.width, stream.codec_context.height]
    except (av.error.FFmpegError, IndexError, OSError):
        return None


def _finished_unsigned(folder: Path) -> OriginalResult | None:
    """An original closed just before a crash, whose manifest was never written (how it was made is lost)."""
    done = sorted(folder.glob("original.*"))
    if not done:
        return None
    return OriginalResult(done[0].name, Made.UNKNOWN, "", "", 0, 0, None, None, recovered=True)


def annotate(
    folder: Path,
    caption: str,
    geometry: CameraGeometry | None,
    signer: Ed25519PrivateKey,
) -> EvidenceFiles:
    """Add the annotated clip and the still to saved evidence, and sign again (a stop kills the process)."""
    record = json.loads((folder / EVENT).read_text())
    event = FallEvent.from_record(record)
    original = record["evidence"]["original"]
    frames = json.loads((folder / FRAMES).read_text())["frames"]
    body = json.loads((folder / MANIFEST).read_text())["manifest"]
    # Signing again must not launder a file changed since it was first signed (a flipped bit, a hand): the
    # first manifest then stands, and shows the change to whoever verifies it.
    changed = [
        n for n in (original, EVENT, FRAMES) if body["files"].get(n, {}).get("sha256") != sha256_file(folder / n)
    ]
    if changed:
        raise EvidenceChanged(f"{', '.join(changed)} changed since signed; not signed again")
    privacy = geometry.privacy if geometry is not None else []
    facade = geometry.facade if geometry is not None else None
    annotated, still = _annotate(folder / original, frames, event, folder, caption, privacy, facade)
    info = {k: v for k, v in body.items() if k not in _MANIFEST_OWN}
    # event.json stays as signed at stage original: rewriting it here would leave the manifest over the
    # old one if the node died between the two. The manifest and events.jsonl name the new files.
    names = [original, EVENT, FRAMES] + [n for n in (annotated, still) if n]
    manifest = write_manifest(folder, names, info, signer)
    (folder / PENDING).unlink(missing_ok=True)
    note = record["evidence"].get("note")
    return EvidenceFiles(folder, EvidenceStage.COMPLETE, original, annotated, still, manifest.name, note)


_MANIFEST_OWN = {"v", "files", "signed_utc", "key_id", "public_key"}  # written by write_manifest itself


class EvidenceChanged(Exception):
    """A file the manifest signed no longer has the hash it was signed with."""


def write_json(path: Path, obj: dict) -> None:
    """Replace a small JSON file atomically: a crash or a power cut leaves the old one or the new one, never
    half (a rename of unsynced data could leave an empty event.json after a power cut). The folder is not
    synced here: this runs on a camera's thread, and the manifest signed after it syncs the folder once."""
    write_atomic(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode(), rename_durable=False)


def _annotate(
    original: Path,
    frames: list[list],
    event: FallEvent,
    folder: Path,
    caption: str,
    privacy: list,
    facade: FacadeMap | None,
) -> tuple[str | None, str | None]:
    writer, still = None, None
    tmp = folder / ".annotated-partial.mp4"
    try:
        for frame, index, t in numbered_frames(original, frames):
            img = blur_privacy(frame.to_ndarray(format="bgr24"), privacy)
            unknown = not frames  # recovered after a crash: which frame is which was not saved
            if still is None and (unknown or index is not None and index >= event.start_frame):
                still = img.copy()
            if writer is None:
                h, w = _for_viewing(img).shape[:2]
                writer = H264Writer(tmp, w, h, event.fps, crf=ANNOTATED_CRF)
            label = f"frame {index}" if index is not None else ""
            stamp = iso_short(t) if t is not None else ""
            draw_event(img, event, index, f"{caption}  {stamp}  {label}")
            writer.write(_for_viewing(img))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return None, None
    # On disk before the manifest that signs it: after a power cut, a signed file come back empty would
    # fail verification, and the manifest signed before it is replaced by then. The manifest syncs the folder.
    _fsync_file(tmp)
    os.replace(tmp, folder / "annotated.mp4")
    if still is None:
        return "annotated.mp4", None
    if facade is not None:
        draw_floor_lines(still, facade, event)
    draw_event(still, event, None, caption)
    ok, jpg = cv2.imencode(".jpg", still, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError("the still could not be encoded as JPEG")
    write_atomic(folder / "still.jpg", jpg.tobytes(), rename_durable=False)
    return "annotated.mp4", "still.jpg"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


ANNOTATED_CRF = 26  # a clip to look at on a phone, not the evidence itself (that is the original)
ANNOTATED_MAX_WIDTH = 1280  # enough to see the trajectory on a phone; encoding 4 MP cost ~7 s of CPU a clip


def _for_viewing(img: np.ndarray) -> np.ndarray:
    """The annotated frame at most ANNOTATED_MAX_WIDTH wide (drawn at full size, so lines stay sharp)."""
    h, w = img.shape[:2]
    if w <= ANNOTATED_MAX_WIDTH:
        return img
    size = (ANNOTATED_MAX_WIDTH, round(h * ANNOTATED_MAX_WIDTH / w / 2) * 2)  # H.264 wants even sizes
    # Linear below a factor of 2 unless it is whole: OpenCV's area averaging is slow for a fractional factor
    # (1080p to 1280 wide: 8.6 ms a frame, linear 1.6). From 2 on, linear skips pixels and a 1-px line fades.
    linear = w < 2 * ANNOTATED_MAX_WIDTH and w % ANNOTATED_MAX_WIDTH != 0
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)


def numbered_frames(
    original: Path, frames: list[list]
) -> Iterator[tuple[av.VideoFrame, int | None, float | None]]:
    """Each frame decoded from an original with its frame number and capture time from frames.json (None, None
    when not known: a clip recovered after a crash has no frames.json entries).

    frames.json has one entry per packet of the original, in display order. A decoder does not give back a
    frame for every packet: the B-frames after an open GOP's keyframe that show before it refer back to the
    GOP before, which is not in the clip, and a damaged packet is skipped. So each frame is matched to its
    entry by its timestamp: counting them would label every frame after such a one with the number, time
    and trajectory of the frame before.
    """
    by_pts: dict[int, list] = {}
    if frames:
        with av.open(str(original)) as clip:
            stamps = [p.pts for p in clip.demux(clip.streams.video[0]) if p.size]
        if len(stamps) == len(frames) and None not in stamps and len(set(stamps)) == len(stamps):
            by_pts = dict(zip(sorted(stamps), frames, strict=True))
    with av.open(str(original)) as clip:
        for k, frame in enumerate(_frames(clip, clip.streams.video[0])):
            if by_pts:
                index, t = by_pts.get(frame.pts, (None, None))
            else:  # timestamps the file does not give back one for one: in decoding order, as before
                index, t = frames[k] if k < len(frames) else (None, None)
            yield frame, index, t


def _frames(clip, stream):
    """Every decodable frame of a clip; damaged packets are skipped (the original keeps them)."""
    for packet in clip.demux(stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def iso_short(t: float) -> str:
    """Capture time for the overlay: wall-clock UTC live, seconds into the video in replay."""
    if t > 1e9:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    return f"t={t:8.2f}s"
