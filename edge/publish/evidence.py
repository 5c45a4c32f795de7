"""The pictures people look at: an annotated clip and a trajectory still per event."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from edge.detect.facade import FacadeMap
from edge.detect.motion import polygons_mask
from edge.detect.types import FallEvent
from edge.video import H264Writer, VideoError

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


def _frame_index(frame: av.VideoFrame, stream, fps: float) -> int:
    start = stream.start_time or 0
    return int(round(float((frame.pts - start) * stream.time_base) * fps))


def write_event_media(
    source: str | Path,
    event: FallEvent,
    clip_path: Path,
    still_path: Path,
    pre_s: float,
    post_s: float,
    caption: str,
    privacy: list,
    facade: FacadeMap | None,
) -> None:
    """Decode the event's span (pre/post roll) from a video file; write the annotated clip and the still."""
    fps = event.fps
    first = max(0, event.start_frame - round(pre_s * fps))
    last = event.end_frame + round(post_s * fps)
    still_at = event.start_frame
    still = None
    try:
        container = av.open(str(source))
    except av.error.FFmpegError as exc:
        raise VideoError(f"cannot reopen {source} for the evidence clip: {exc}") from None
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = stream.start_time or 0
        container.seek(int(start + first / fps / stream.time_base), stream=stream, backward=True)
        writer = None
        try:
            for frame in container.decode(stream):
                idx = _frame_index(frame, stream, fps)
                if idx < first:
                    continue
                if idx > last:
                    break
                img = blur_privacy(frame.to_ndarray(format="bgr24"), privacy)
                if idx == still_at or (still is None and idx >= still_at):
                    still = img.copy()
                if writer is None:
                    writer = H264Writer(clip_path, img.shape[1], img.shape[0], fps, crf=23)
                seconds = idx / fps
                draw_event(img, event, idx, f"{caption}  t={seconds:7.2f}s  frame {idx}")
                writer.write(img)
        except av.error.FFmpegError:
            pass  # a truncated tail: keep what was decoded, the clip is still evidence
        finally:
            if writer is not None:
                writer.close()
    if still is None:
        raise VideoError(f"{source}: frames {first}..{last} of event {event.id} could not be decoded")
    if facade is not None:
        draw_floor_lines(still, facade, event)
    draw_event(still, event, None, caption)
    cv2.imwrite(str(still_path), still, [cv2.IMWRITE_JPEG_QUALITY, 90])
