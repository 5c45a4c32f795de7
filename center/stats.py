"""Statistics of the loop: where and when alerts come, how many were false, how fast people act."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import Row, Select
from sqlalchemy.orm import Session

from center.db import Case
from center.models import CaseState, Verdict


class Stats(BaseModel):
    cases: int = Field(description="Cases (throws) in the period; alerts of several cameras count once.")
    by_building: dict[str, int]
    by_floor: dict[str, dict[str, int]] = Field(description="building -> floor -> cases ('?' without a floor)")
    by_hour: list[int] = Field(description="24 counts by local hour of the alert")
    by_verdict: dict[str, int]
    false_alarm_share: float | None = Field(description="false alarms among cases with a verdict")
    median_ack_s: float | None = Field(description="dispatch to acknowledgement")
    median_resolve_s: float | None = Field(description="alert received to resolved")
    resolved_share: float | None = Field(description="resolved among all cases")
    put_right_share: float | None = Field(description="resolved among cases found to be real (thrown or fell)")


# What `compute` reads of a case: selected alone (`stats_of`), a year of cases is rows of these, not objects.
STATS_COLUMNS = (
    Case.building,
    Case.floor,
    Case.alert_at,
    Case.verdict,
    Case.state,
    Case.created_at,
    Case.dispatched_at,
    Case.acknowledged_at,
    Case.resolved_at,
)


def stats_of(session: Session, cases: Select, zone: str) -> Stats:
    """`compute` over the cases `cases` selects, reading only `STATS_COLUMNS` and in no order."""
    return compute(session.execute(cases.with_only_columns(*STATS_COLUMNS).order_by(None)).all(), zone)


def compute(cases: Sequence[Case | Row], zone: str) -> Stats:
    """The statistics of `cases` (whole cases, or rows of `STATS_COLUMNS`), hours in time zone `zone`."""
    tz = ZoneInfo(zone)
    by_building: Counter[str] = Counter()
    by_floor: dict[str, Counter[str]] = defaultdict(Counter)
    by_hour = [0] * 24
    verdicts: Counter[str] = Counter()
    ack, resolve = [], []
    for c in cases:
        b = c.building or "?"
        by_building[b] += 1
        by_floor[b][str(c.floor) if c.floor is not None else "?"] += 1
        by_hour[c.alert_at.astimezone(tz).hour] += 1
        if c.verdict:
            verdicts[c.verdict] += 1
        if c.acknowledged_at and c.dispatched_at:
            ack.append(_seconds(c.acknowledged_at - c.dispatched_at))
        if c.resolved_at:
            resolve.append(_seconds(c.resolved_at - c.created_at))
    judged = sum(verdicts.values())
    real = [c for c in cases if c.verdict in (Verdict.THROWN, Verdict.FELL)]
    return Stats(
        cases=len(cases),
        by_building=dict(by_building),
        by_floor={b: dict(f) for b, f in by_floor.items()},
        by_hour=by_hour,
        by_verdict=dict(verdicts),
        false_alarm_share=verdicts[Verdict.FALSE_ALARM] / judged if judged else None,
        median_ack_s=statistics.median(ack) if ack else None,
        median_resolve_s=statistics.median(resolve) if resolve else None,
        resolved_share=sum(c.state == CaseState.RESOLVED for c in cases) / len(cases) if cases else None,
        put_right_share=sum(c.state == CaseState.RESOLVED for c in real) / len(real) if real else None,
    )


def _seconds(d: dt.timedelta) -> float:
    return max(0.0, d.total_seconds())
