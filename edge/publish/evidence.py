"""Evidence per event: the original clip (packets as received), an annotated clip, a still and a manifest."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import av
import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.capture.packets import KeptPacket, remux
from edge.detect.facade import FacadeMap
from edge.detect.motion import polygons_mask
from edge.detect.types import FallEvent
from edge.publish.manifest import write_manifest
from edge.video import H264Writer

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


def draw_floor_lines(img: np.ndarray, facade: FacadeMap, event: FallEvent) -> None:
    """Mark the storey boundaries around the origin, so a viewer can count floors."""
    if event.origin.facade_x_m is None or event.origin.floor is None:
        return
    x = event.origin.facade_x_m
    scale = img.shape[0] / 1080
    for k in range(-2, 4):
        h = (event.origin.floor - facade.ground_floor + k) * facade.floor_height_m
        a, b = facade.to_image(np.array([[x - 3.0, h], [x + 3.0, h]]))
        cv2.line(img, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), _WHITE, 1, cv2.LINE_AA)
        if 0 <= k < 3:
            _text(img, str(event.origin.floor + k), tuple(np.round(b).astype(int) + (6, 0)), 0.5 * scale)


@dataclass
class EvidenceJob:
    """An event's evidence being gathered: packets from pre-roll until post-roll after the object is gone."""

    event: FallEvent
    clip_from_t: float
    first_t: float
    packets: list[KeptPacket] = field(default_factory=list)
    last_seq: int = 0
    until_t: float | None = None
    pts_index: dict[int, int] = field(default_factory=dict)

    def take(self, fresh: list[tuple[int, KeptPacket]]) -> None:
        for seq, pkt in fresh:
            if seq > self.last_seq:
                self.packets.append(pkt)
                self.last_seq = seq

    @property
    def complete(self) -> bool:
        return self.until_t is not None and bool(self.packets) and self.packets[-1].t >= self.until_t


@dataclass
class EvidenceFiles:
    """What was written for one event, relative to its folder."""

    folder: Path
    original: str
    annotated: str | None
    still: str | None
    manifest: str


def write_evidence(
    job: EvidenceJob,
    folder: Path,
    caption: str,
    privacy: list,
    facade: FacadeMap | None,
    signer: Ed25519PrivateKey,
    info: dict,
    record: dict,
) -> EvidenceFiles:
    """Write the original (remuxed, never re-encoded), the annotated clip, the still, the event and a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    packets = _until(job.packets, job.until_t)
    original = _write_once(folder, lambda tmp: remux(packets, tmp))
    annotated, still = _annotate(packets, job, folder, caption, privacy, facade)
    record = {
        **record,
        "evidence": {
            "original": original.name,
            "annotated": annotated,
            "still": still,
            "manifest": "manifest.json",
        },
    }
    (folder / "event.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    names = [original.name] + [n for n in (annotated, still) if n] + ["event.json"]
    times = {"first_seen_t": job.first_t, "clip_from_t": packets[0].t, "clip_to_t": packets[-1].t}
    manifest = write_manifest(folder, names, {**info, **times}, signer)
    return EvidenceFiles(folder, original.name, annotated, still, manifest.name)


def _until(packets: list[KeptPacket], until_t: float | None) -> list[KeptPacket]:
    """Packets in decode order up to the first one stamped after `until_t` (the end of the post-roll)."""
    if until_t is None:
        return packets
    cut = next((i for i, p in enumerate(packets) if i > 0 and p.t > until_t), len(packets))
    return packets[:cut]


def _write_once(folder: Path, write) -> Path:
    """Write through a temporary name, then make the file read-only: originals are never modified."""
    tmp = write(folder / ".original-partial")
    final = folder / f"original{tmp.suffix}"
    os.replace(tmp, final)
    final.chmod(0o444)
    return final


def _annotate(
    packets: list[KeptPacket],
    job: EvidenceJob,
    folder: Path,
    caption: str,
    privacy: list,
    facade: FacadeMap | None,
) -> tuple[str | None, str | None]:
    params = packets[0].params
    codec = av.CodecContext.create(params.codec, "r")
    if params.extradata:
        codec.extradata = params.extradata
    event, fps = job.event, job.event.fps
    writer, still = None, None
    index = None
    try:
        for kept, frame in _decoded(codec, packets, params):
            index = job.pts_index.get(frame.pts, None if index is None else index + 1)
            img = blur_privacy(frame.to_ndarray(format="bgr24"), privacy)
            if still is None and index is not None and index >= event.start_frame:
                still = img.copy()
            if writer is None:
                writer = H264Writer(folder / "annotated.mp4", img.shape[1], img.shape[0], fps, crf=23)
            label = f"frame {index}" if index is not None else ""
            draw_event(img, event, index, f"{caption}  {iso_short(kept.t)}  {label}")
            writer.write(img)
    finally:
        if writer is not None:
            writer.close()
    if still is None:
        return ("annotated.mp4" if writer else None), None
    if facade is not None:
        draw_floor_lines(still, facade, event)
    draw_event(still, event, None, caption)
    cv2.imwrite(str(folder / "still.jpg"), still, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return "annotated.mp4", "still.jpg"


def _decoded(codec, packets: list[KeptPacket], params):
    """(packet, frame) pairs in display order, the decoder flushed at the end."""
    kept = packets[0]
    for kept in packets:
        if kept.params != params:
            break
        try:
            frames = codec.decode(kept.to_av())
        except av.error.FFmpegError:
            continue  # a damaged packet: the original keeps it, the annotated copy skips it
        for frame in frames:
            yield kept, frame
    try:
        for frame in codec.decode(None):
            yield kept, frame
    except av.error.FFmpegError:
        return


def iso_short(t: float) -> str:
    """Capture time for the overlay: wall-clock UTC live, seconds into the video in replay."""
    if t > 1e9:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    return f"t={t:8.2f}s"
