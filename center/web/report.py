"""The month report: the API's statistics (center.stats.compute) of a local month, alerts by floor on each
facade, and the cases as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from center.api import Caller, Context
from center.db import Case
from center.models import MAX_FLOORS
from center.queries import CaseQuery, cases_seen, local_midnight
from center.stats import Stats, compute
from center.web import charts
from center.web.views import YEARS, person_label

CSV_COLUMNS = (
    "case", "building", "facade", "floor", "alert_at", "level", "state", "verdict", "assignee",
    "acknowledged_at", "resolved_at", "ack_s", "resolve_s",
)  # fmt: skip


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a cell Excel or WPS would run as a formula (OWASP's list)


def text_cell(value: str) -> str:
    """A free-text cell (a name from the roster) as text a spreadsheet shows, never a formula it runs: a name
    such as '=HYPERLINK(...)' opened in the office's Excel would send data away or run a command."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def month_of(text: str | None, tz: str) -> dt.date:
    """The first day of a 'YYYY-MM' month; this month (in the center's zone) when absent or malformed."""
    try:
        year, month = (int(p) for p in (text or "").split("-"))
        if year not in YEARS:
            raise ValueError(f"year {year}")
        return dt.date(year, month, 1)
    except ValueError:
        return dt.datetime.now(ZoneInfo(tz)).date().replace(day=1)


def month_cases(s: Session, who: Caller, first: dt.date, tz: str) -> list[Case]:
    """The cases the caller may see whose alert fell in the local month beginning `first`, oldest first."""
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    query = CaseQuery(since=local_midnight(first, tz), until=local_midnight(nxt, tz))
    return list(reversed(s.scalars(cases_seen(query, who.buildings)).all()))  # oldest first, as the CSV reads


def facade_of_case(ctx: Context, case: Case) -> str | None:
    for e in case.events:
        facade = ctx.roster.facade_of(e.node, e.camera)
        if facade:
            return facade
    return None


@dataclass
class Report:
    month: dt.date
    stats: Stats
    heat: list[str]  # one SVG per facade that had alerts
    hours: str  # SVG


def build(ctx: Context, cases: list[Case], first: dt.date, t) -> Report:
    by_facade: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for c in cases:
        if c.building in ctx.roster.buildings and c.floor is not None:
            by_facade[(c.building, facade_of_case(ctx, c) or "?")][c.floor] += 1
    # An alert from above the roster's top floor (a roof, or a roster that is out of date) is kept, so drawn.
    heat = [
        charts.heat_map(
            min(max(ctx.roster.buildings[b].floors, *n), MAX_FLOORS),
            dict(n),
            f"{ctx.roster.buildings[b].name} {facade}",
        )
        for (b, facade), n in sorted(by_facade.items())
    ]
    stats = compute(cases, ctx.cfg.timezone)
    return Report(first, stats, heat, charts.by_hour(stats.by_hour, t("by_hour")))


def to_csv(ctx: Context, cases: list[Case], t) -> str:
    zone = ZoneInfo(ctx.cfg.timezone)

    def local(x: dt.datetime | None) -> str:
        return x.astimezone(zone).isoformat(timespec="seconds") if x else ""

    def secs(a: dt.datetime | None, b: dt.datetime | None) -> str:
        return f"{(b - a).total_seconds():.0f}" if a and b else ""

    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for c in cases:
        b = ctx.roster.buildings.get(c.building) if c.building else None
        floor = c.floor if c.floor is not None else ""
        w.writerow(
            [
                c.id, text_cell(b.name if b else c.building or ""), text_cell(facade_of_case(ctx, c) or ""), floor,
                local(c.alert_at), c.level, c.state, c.verdict or "", text_cell(person_label(ctx, c.assignee, t)),
                local(c.acknowledged_at), local(c.resolved_at), secs(c.dispatched_at, c.acknowledged_at),
                secs(c.created_at, c.resolved_at),
            ]
        )  # fmt: skip
    return out.getvalue()
