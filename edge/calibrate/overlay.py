"""What the page draws for a calibration: numbered floor lines, the roof line and the facade's ends."""

from __future__ import annotations

import numpy as np

from edge.config import FacadeConfig

GRID = 32  # image samples per side used to find which facade heights and stretch are in view
MAX_LINES = 150  # a 150-storey view is no facade seen from its foot: stop drawing
BEYOND_STOREYS = 2  # floor lines drawn this many storeys below and above the outermost points
LINE_OVERHANG = 0.15  # floor lines reach this share of the facade's width beyond its outer points


def _clip(a, b, w: int, h: int):
    """The part of segment a-b inside the image, or None (Liang-Barsky)."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, w - 1 - x0), (-dy, y0), (dy, h - 1 - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t0 > t1:
        return None
    return [round(x0 + t0 * dx, 1), round(y0 + t0 * dy, 1)], [round(x0 + t1 * dx, 1), round(y0 + t1 * dy, 1)]


def draw(cfg: FacadeConfig, image_size: tuple[int, int]) -> dict:
    """Floor lines (bottom of each floor, numbered), roof and extent lines in image pixels, and the homography."""
    fac = [p.facade for p in cfg.points]
    fm = cfg.facade_map()
    w, h = image_size
    hmat = fm.image_to_facade
    side = np.sign((hmat @ np.array([*np.mean([p.image for p in cfg.points], axis=0), 1.0]))[2])
    gx, gy = np.meshgrid(np.linspace(0, w - 1, GRID), np.linspace(0, h - 1, GRID))
    hom = hmat @ np.vstack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    ok = np.sign(hom[2]) == side
    xs, ys = hom[0, ok] / hom[2, ok], hom[1, ok] / hom[2, ok]
    out: dict = {"image_to_facade": hmat.tolist(), "floors": [], "roof": None, "extent": []}
    if not ok.any():
        return out
    # Across the stretch the points span (or the extent), a little beyond: not out over the sky.
    along = [x for x, _ in fac]
    lo, hi = cfg.extent_m or (min(along), max(along))
    pad = LINE_OVERHANG * (hi - lo)
    xa, xb = max(float(xs.min()), lo - pad), min(float(xs.max()), hi + pad)
    fh, g = cfg.floor_height_m, cfg.ground_floor
    # Heights in view, but not far beyond the points (or above the roof): lines there crowd into the sky.
    heights = [y for _, y in fac]
    top = (cfg.top_floor - g + 1) * fh if cfg.top_floor is not None else max(heights) + BEYOND_STOREYS * fh
    low, high = max(ys.min(), min(heights) - BEYOND_STOREYS * fh), min(ys.max(), top)
    first, last = int(np.ceil(low / fh)), int(np.floor(high / fh))
    if last - first > MAX_LINES:
        return out
    for n in range(first, last + 1):
        a, b = fm.to_image(np.array([[xa, n * fh], [xb, n * fh]]))
        seg = _clip(a, b, w, h)
        if seg:
            out["floors"].append({"floor": g + n, "a": seg[0], "b": seg[1]})
    if cfg.top_floor is not None:
        y = (cfg.top_floor - g + 1) * fh
        seg = _clip(*fm.to_image(np.array([[xa, y], [xb, y]])), w, h)
        out["roof"] = {"floor": cfg.top_floor, "a": seg[0], "b": seg[1]} if seg else None
    for x in cfg.extent_m or ():
        seg = _clip(*fm.to_image(np.array([[x, float(ys.min())], [x, float(ys.max())]])), w, h)
        if seg:
            out["extent"].append({"x_m": x, "a": seg[0], "b": seg[1]})
    return out
