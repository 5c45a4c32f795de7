"""The detection-limit plot of the accuracy bench: recall against contrast-to-noise ratio, one line per size.

Drawn with OpenCV, which the node already carries, rather than a plotting library only the bench would use.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

_PANEL_W, _PANEL_H, _MARGIN = 460, 340, 56  # pixels: one panel per split, room for axis labels
_COLOURS = [(180, 180, 180), (40, 160, 230), (60, 180, 60), (200, 90, 40), (150, 40, 150), (0, 0, 0)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(edges: list[float], i: int) -> str:
    lo, hi = edges[i], edges[i + 1]
    return f">={lo:g}" if math.isinf(hi) else f"{lo:g}-{hi:g}"


def _panel(title: str, cells: list[list[tuple[int, int]]], cnr_bins: list[float], width_bins: list[float]):
    img = np.full((_PANEL_H + 2 * _MARGIN, _PANEL_W + 2 * _MARGIN, 3), 255, np.uint8)
    x0, y0, x1, y1 = _MARGIN, _MARGIN, _MARGIN + _PANEL_W, _MARGIN + _PANEL_H
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    ncols = len(cnr_bins) - 1
    xs = [x0 + int((c + 0.5) * _PANEL_W / ncols) for c in range(ncols)]
    for frac in (0.0, 0.25, 0.5, 0.75, 0.97, 1.0):
        y = y1 - int(frac * _PANEL_H)
        cv2.line(img, (x0, y), (x1, y), (225, 225, 225) if frac != 0.97 else (120, 120, 255), 1)
        cv2.putText(img, f"{frac:.0%}", (4, y + 4), _FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for c, x in enumerate(xs):
        cv2.putText(img, _label(cnr_bins, c), (x - 18, y1 + 16), _FONT, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "contrast-to-noise ratio", (x0 + 140, y1 + 40), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (x0, y0 - 36), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for r, row in enumerate(cells):
        colour = _COLOURS[r % len(_COLOURS)]
        pts = [(xs[c], y1 - int(f / n * _PANEL_H)) for c, (f, n) in enumerate(row) if n]
        for a, b in zip(pts, pts[1:], strict=False):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4, colour, -1, cv2.LINE_AA)
        key = f"width {_label(width_bins, r)} px"
        cv2.putText(img, key, (x0 + 6 + (r % 3) * 150, y0 - 22 + 14 * (r // 3)), _FONT, 0.38, colour, 1)
    return img


def write_limit_plot(
    path: str | Path,
    cells_by_split: dict[str, list[list[tuple[int, int]]]],
    cnr_bins: list[float],
    width_bins: list[float],
) -> Path:
    """Write a PNG with one panel per split: recall (y) against CNR bin (x), a line per width bin."""
    panels = [_panel(f"recall, {split}", cells, cnr_bins, width_bins) for split, cells in cells_by_split.items()]
    out = Path(path)
    if not cv2.imwrite(str(out), np.hstack(panels)):
        raise OSError(f"cannot write {out}")
    return out
