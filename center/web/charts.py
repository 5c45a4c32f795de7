"""Charts drawn on the server as SVG (no script, so they print and pass the CSP): a building's elevation with
where a throw came from, a heat map of alerts by floor on a facade, and alerts by hour of day."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

FLOOR_H_PX = 14  # one storey on the elevation and the heat map
WIDTH_PX = 320
MIN_FACADE_M = 30.0  # a facade drawn at least this wide when the origin gives no width
HEAT = ("#fff5eb", "#fdd0a2", "#fd8d3c", "#e6550d", "#a63603")  # light to dark: none to the month's most


@dataclass
class Origin:
    """Where one alert left the facade (metres along it, metres above ground, floor), any part unknown."""

    x_m: float | None
    height_m: float | None
    floor: int | None


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def elevation(floors: int, origins: list[Origin], title: str, ground_floor: int = 1) -> str:
    """The facade as `floors` storeys; the origin floor filled, each origin point as a red ring."""
    top = 16
    height = top + floors * FLOOR_H_PX + 20
    xs = [o.x_m for o in origins if o.x_m is not None]
    span = max([MIN_FACADE_M] + [x * 1.2 for x in xs])
    left, inner = 34, WIDTH_PX - 44
    body = [f'<text x="{left}" y="11">{escape(title)}</text>']
    hit = {o.floor for o in origins if o.floor is not None}
    for i in range(floors):
        number = ground_floor + i
        y = top + (floors - 1 - i) * FLOOR_H_PX
        fill = "#f4a582" if number in hit else "#eef1f5"
        body.append(
            f'<rect x="{left}" y="{y}" width="{inner}" height="{FLOOR_H_PX - 2}" fill="{fill}" stroke="#9aa5b1"/>'
        )
        if number in hit or number % 5 == 0 or i == 0:
            body.append(f'<text x="{left - 4}" y="{y + 10}" text-anchor="end">{number}</text>')
    ground_y = top + floors * FLOOR_H_PX
    body.append(f'<line x1="10" y1="{ground_y}" x2="{WIDTH_PX - 4}" y2="{ground_y}" stroke="#333"/>')
    body.append(f'<text x="{left}" y="{ground_y + 14}">0 m</text>')
    body.append(f'<text x="{left + inner}" y="{ground_y + 14}" text-anchor="end">{span:.0f} m</text>')
    for o in origins:
        if o.floor is None:
            continue
        x = left + inner * (o.x_m / span if o.x_m is not None else 0.5)
        y = ground_y - (o.floor - ground_floor + 0.5) * FLOOR_H_PX  # mid-storey: the floor is what counts
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="#d00" stroke-width="2.5"/>')
    return _svg(WIDTH_PX, height, body, title)


def heat_map(floors: int, counts: dict[int, int], title: str, ground_floor: int = 1) -> str:
    """A facade's storeys coloured by how many alerts came from each (darkest: the month's most)."""
    top = 16
    height = top + floors * FLOOR_H_PX + 8
    most = max(counts.values(), default=0)
    left, inner = 34, 160
    body = [f'<text x="{left}" y="11">{escape(title)}</text>']
    for i in range(floors):
        number = ground_floor + i
        n = counts.get(number, 0)
        shade = HEAT[0] if n == 0 else HEAT[1 + min(3, int(3 * (n - 1) / max(1, most - 1)))]
        y = top + (floors - 1 - i) * FLOOR_H_PX
        body.append(
            f'<rect x="{left}" y="{y}" width="{inner}" height="{FLOOR_H_PX - 2}" fill="{shade}" stroke="#ccc"/>'
        )
        if n or number % 5 == 0 or i == 0:
            body.append(f'<text x="{left - 4}" y="{y + 10}" text-anchor="end">{number}</text>')
        if n:
            body.append(f'<text x="{left + inner + 6}" y="{y + 10}">{n}</text>')
    return _svg(left + inner + 40, height, body, title)


def by_hour(counts: list[int], title: str) -> str:
    """24 bars, local hour of the alert."""
    top, bar_h, bar_w, left = 16, 120, 14, 24
    most = max(counts + [1])
    body = [f'<text x="{left}" y="11">{escape(title)}</text>']
    for hour, n in enumerate(counts):
        h = bar_h * n / most
        x = left + hour * (bar_w + 2)
        body.append(f'<rect x="{x}" y="{top + bar_h - h:.1f}" width="{bar_w}" height="{h:.1f}" fill="#3b6ea5"/>')
        if n:
            body.append(f'<text x="{x + bar_w / 2}" y="{top + bar_h - h - 2:.1f}" text-anchor="middle">{n}</text>')
        if hour % 3 == 0:
            body.append(f'<text x="{x + bar_w / 2}" y="{top + bar_h + 12}" text-anchor="middle">{hour}</text>')
    return _svg(left + 24 * (bar_w + 2) + 8, top + bar_h + 18, body, title)
