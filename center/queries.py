"""The one query for "cases this caller may see, filtered": the JSON API, the alert list, the statistics and
the month report all read cases through it, so a filter or the building rule cannot differ between them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from center.db import Case
from center.models import CaseState, Level, Verdict


@dataclass(frozen=True)
class CaseQuery:
    """Which cases (each field empty: any); alerts at or after `since` and before `until` (aware instants)."""

    state: CaseState | None = None
    building: str | None = None
    level: Level | str | None = None
    verdict: Verdict | None = None
    assignee: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def cases_seen(query: CaseQuery, buildings: Collection[str] | None, with_events: bool = True) -> Select:
    """The cases matching `query` in `buildings` (None: every building), newest alert first."""
    q = select(Case)
    if with_events:
        q = q.options(selectinload(Case.events))
    for column, wanted in (
        (Case.state, query.state),
        (Case.building, query.building),
        (Case.level, query.level),
        (Case.verdict, query.verdict),
        (Case.assignee, query.assignee),
    ):
        if wanted:
            q = q.where(column == wanted)
    if query.since:
        q = q.where(Case.alert_at >= query.since)
    if query.until:
        q = q.where(Case.alert_at < query.until)
    if buildings is not None:
        q = q.where(Case.building.in_(sorted(buildings)))
    return q.order_by(Case.alert_at.desc(), Case.id.desc())


def local_midnight(day: dt.date, tz: str) -> dt.datetime:
    """The instant a local day begins in the center's time zone."""
    return dt.datetime.combine(day, dt.time(), ZoneInfo(tz))
