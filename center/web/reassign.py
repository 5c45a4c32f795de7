"""Reassigning a dispatched case: the loop (center.loop) dispatches to whoever is on duty and escalates by
itself but has no step for a dispatcher choosing someone else, so it is added here, on the loop's parts."""

from __future__ import annotations

from center.api import Context
from center.db import Case, utcnow
from center.loop import OFFICE_LEVEL, Refused
from center.models import CaseState

REASSIGNABLE = (CaseState.DISPATCHED, CaseState.ACKNOWLEDGED)


def targets(ctx: Context, case: Case) -> list[tuple[str, str]]:
    """(reference, name) of everyone the case may go to: its grid's workers, the grid leader, the office."""
    out: list[tuple[str, str]] = []
    building = ctx.roster.buildings.get(case.building) if case.building else None
    if building is not None:
        grid = ctx.roster.grids[building.grid]
        out += [(f"worker:{wid}", w.name) for wid, w in grid.workers.items()]
        out.append((f"leader:{building.grid}", grid.leader.name))
    out.append(("office", ctx.roster.office.name))
    return out


def reassign(ctx: Context, s, case: Case, to: str, actor: str) -> None:
    """Give a dispatched (or acknowledged) case to `to`, who is told as at a dispatch and must acknowledge."""
    if CaseState(case.state) not in REASSIGNABLE:
        raise Refused(f"cannot reassign a case that is {case.state}")
    if to not in dict(targets(ctx, case)):
        raise Refused(f"{to!r} is not someone of this building's grid", 422)
    now = utcnow()
    step = 0 if to.startswith("worker:") else 1 if to.startswith("leader:") else OFFICE_LEVEL
    case.assignee, case.escalation, case.state = to, step, CaseState.DISPATCHED
    case.acknowledged_by = case.acknowledged_at = None
    case.dispatched_at = now
    case.escalate_at = now + ctx.loop._escalate_after() if step < OFFICE_LEVEL else None
    ctx.loop._history(s, case, "reassign", actor, now, {"to": to})
    ctx.loop.notify(s, case, "dispatch", to, now)
