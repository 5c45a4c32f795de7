"""The closed loop on SQLite and PostgreSQL: one case per throw, dispatch, the actions of people, escalation."""

from __future__ import annotations

import copy
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from centerkit import ROSTER
from parts import alert, make_parts, send
from sqlalchemy import func, select

from center.db import Case, Event, History, Job, Message
from center.loop import Refused
from center.models import Action, CaseState, Verdict


@pytest.fixture
def parts(tmp_path, db_url):
    p = make_parts(tmp_path, db_url, escalate_after_min=10)
    yield p
    p.engine.dispose()


def _cases(parts):
    with parts.sessions() as s:
        return s.scalars(select(Case).order_by(Case.id)).all()


def _jobs(parts, case_id, channel=None):
    with parts.sessions() as s:
        q = select(Job).where(Job.case_id == case_id)
        if channel:
            q = q.where(Job.channel == channel)
        return s.scalars(q.order_by(Job.id)).all()


def test_a_confirmed_alert_is_dispatched_at_once_to_the_worker_on_duty(parts):
    send(parts, alert(level="confirmed"))
    (case,) = _cases(parts)
    assert case.state == CaseState.DISPATCHED
    assert (case.building, case.floor, case.assignee) == ("b3", 12, "worker:zhang")
    with parts.sessions() as s:
        actions = [h.action for h in s.scalars(select(History).where(History.case_id == case.id))]
    assert actions == ["created", "dispatch"]


def _history(parts, case_id):
    with parts.sessions() as s:
        return s.scalars(select(History).where(History.case_id == case_id).order_by(History.id)).all()


def _at_local(hour: int) -> dt.datetime:
    """Today at `hour`:00 in the center's time zone (Asia/Shanghai), as aware UTC."""
    today = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    return dt.datetime.combine(today, dt.time(hour), ZoneInfo("Asia/Shanghai")).astimezone(dt.UTC)


def test_a_suspected_alert_waits_for_review_and_confirm_dispatches_it(parts):
    send(parts, alert(level="suspected"))
    (case,) = _cases(parts)
    assert (case.state, case.assignee) == (CaseState.NEW, "office")  # the office's dispatchers review it
    assert [(h.action, h.detail) for h in _history(parts, case.id)][1:] == [("review", {"to": "office"})]
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.CONFIRM, "disp")
    (case,) = _cases(parts)
    assert (case.state, case.level, case.assignee) == (CaseState.DISPATCHED, "confirmed", "worker:zhang")


def test_dismissing_a_suspected_alert_closes_it_as_a_false_alarm_and_tells_the_node(parts):
    send(parts, alert(level="suspected", event_id="ev-dismissed"))
    (case,) = _cases(parts)
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.DISMISS, "disp", note="a pigeon")
    (case,) = _cases(parts)
    assert (case.state, case.verdict, case.resolved_by) == (CaseState.RESOLVED, Verdict.FALSE_ALARM, "disp")
    (fb,) = _jobs(parts, case.id, "feedback")
    assert fb.target == "garden3-east"
    assert (fb.payload["id"], fb.payload["verdict"], fb.payload["note"]) == (
        "ev-dismissed",
        "false_alarm",
        "a pigeon",
    )


def test_a_level_raised_by_an_update_dispatches_the_waiting_case(parts):
    first = alert(level="suspected", event_id="ev-raise")
    send(parts, first)
    assert _cases(parts)[0].state == CaseState.NEW
    send(parts, {**first, "type": "update", "level": "confirmed", "msg_id": "m-update"})
    (case,) = _cases(parts)
    assert (case.state, case.level) == (CaseState.DISPATCHED, "confirmed")


def test_the_whole_loop_records_who_did_what_and_when(parts):
    send(parts, alert())
    (case,) = _cases(parts)
    for action, who, verdict in [
        (Action.ACKNOWLEDGE, "zhang", None),
        (Action.CHECK, "zhang", Verdict.THROWN),
        (Action.RESOLVE, "disp", None),
    ]:
        with parts.sessions.begin() as s:
            parts.loop.act(s, s.get(Case, case.id), action, who, verdict, note="window 12-3")
    (case,) = _cases(parts)
    assert case.state == CaseState.RESOLVED
    assert (case.acknowledged_by, case.checked_by, case.resolved_by) == ("zhang", "zhang", "disp")
    assert case.dispatched_at <= case.acknowledged_at <= case.checked_at <= case.resolved_at
    assert (case.verdict, case.note) == (Verdict.THROWN, "window 12-3")
    assert [j.payload["verdict"] for j in _jobs(parts, case.id, "feedback")] == ["thrown"]


def test_steps_out_of_order_are_refused_and_change_nothing(parts):
    send(parts, alert(level="suspected"))
    (case,) = _cases(parts)
    with parts.sessions.begin() as s, pytest.raises(Refused):
        parts.loop.act(s, s.get(Case, case.id), Action.RESOLVE, "zhang", Verdict.THROWN)
    assert _cases(parts)[0].state == CaseState.NEW
    with parts.sessions.begin() as s:  # the positive control: the right step is taken
        parts.loop.act(s, s.get(Case, case.id), Action.CONFIRM, "disp")
    assert _cases(parts)[0].state == CaseState.DISPATCHED


def test_a_verdict_given_with_an_acknowledgement_is_refused_and_reaches_no_node(parts):
    send(parts, alert())
    (case,) = _cases(parts)
    with parts.sessions.begin() as s, pytest.raises(Refused) as refused:
        parts.loop.act(s, s.get(Case, case.id), Action.ACKNOWLEDGE, "zhang", Verdict.FALSE_ALARM)
    assert (refused.value.status, refused.value.key) == (422, "verdict_step")
    assert (_cases(parts)[0].state, _cases(parts)[0].verdict) == (CaseState.DISPATCHED, None)
    assert _jobs(parts, case.id, "feedback") == []
    with parts.sessions.begin() as s:  # the positive control: acknowledged, then checked with the verdict
        parts.loop.act(s, s.get(Case, case.id), Action.ACKNOWLEDGE, "zhang")
        parts.loop.act(s, s.get(Case, case.id), Action.CHECK, "zhang", Verdict.FALSE_ALARM)
    assert _cases(parts)[0].verdict == Verdict.FALSE_ALARM
    assert [j.payload["verdict"] for j in _jobs(parts, case.id, "feedback")] == ["false_alarm"]


def test_an_unacknowledged_case_escalates_to_the_leader_then_the_office(parts):
    send(parts, alert())
    (case,) = _cases(parts)
    t0 = case.dispatched_at
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=9)) == 0  # not yet
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=10, seconds=1)) == 1
    assert _cases(parts)[0].escalation == 1
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=15)) == 0  # the leader's 10 minutes run
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=21)) == 1
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(hours=5)) == 0  # the office is the last step
    steps = [(h.detail["from"], h.detail["to"]) for h in _history(parts, case.id) if h.action == "escalate"]
    assert steps == [("worker:zhang", "leader:g1"), ("leader:g1", "office")]
    assert (_cases(parts)[0].escalation, _cases(parts)[0].assignee) == (2, "office")


def test_each_escalation_step_makes_the_new_recipient_the_assignee(parts):
    send(parts, alert())
    (case,) = _cases(parts)
    assert case.assignee == "worker:zhang"
    with parts.sessions.begin() as s:
        parts.loop.escalate_due(s, case.dispatched_at + dt.timedelta(minutes=11))
    (case,) = _cases(parts)
    assert (case.assignee, case.escalation, case.state) == ("leader:g1", 1, CaseState.DISPATCHED)
    with parts.sessions.begin() as s:  # whoever acknowledges now, the leader's step is in the history
        parts.loop.act(s, s.get(Case, case.id), Action.ACKNOWLEDGE, "wang")
    assert [h.action for h in _history(parts, case.id)] == ["created", "dispatch", "escalate", "acknowledge"]


def test_a_suspected_alert_nobody_reviews_escalates_to_the_leader_then_the_office(parts):
    send(parts, alert(level="suspected"))
    (case,) = _cases(parts)
    t0 = case.created_at
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=9)) == 0  # the office's review time runs
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=11)) == 1
    (case,) = _cases(parts)
    assert (case.state, case.level, case.assignee, case.escalation) == (CaseState.NEW, "suspected", "leader:g1", 1)
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, t0 + dt.timedelta(minutes=22)) == 1
    assert _cases(parts)[0].assignee == "office"
    with parts.sessions.begin() as s:  # a review ends it: confirmed, the case goes to the worker on duty
        parts.loop.act(s, s.get(Case, case.id), Action.CONFIRM, "disp")
    (case,) = _cases(parts)
    assert (case.state, case.assignee, case.escalation) == (CaseState.DISPATCHED, "worker:zhang", 0)


def test_a_reviewed_suspected_alert_does_not_escalate(parts):
    send(parts, alert(level="suspected"))
    (case,) = _cases(parts)
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.DISMISS, "disp")
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, case.created_at + dt.timedelta(hours=1)) == 0
    assert [h.action for h in _history(parts, case.id)] == ["created", "review", "dismiss"]


def test_a_dismissed_alert_that_its_node_confirms_later_is_reopened_and_dispatched(parts):
    first = alert(level="suspected", event_id="ev-late-confirm")
    send(parts, first)
    (case,) = _cases(parts)
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.DISMISS, "disp", note="looked like a bird")
    assert (_cases(parts)[0].state, _cases(parts)[0].verdict) == (CaseState.RESOLVED, Verdict.FALSE_ALARM)
    send(parts, {**first, "type": "update", "level": "confirmed", "msg_id": "m-confirmed-later"})
    (case,) = _cases(parts)  # the same case, not a second one
    assert (case.state, case.level, case.assignee) == (CaseState.DISPATCHED, "confirmed", "worker:zhang")
    assert (case.verdict, case.resolved_by, case.resolved_at) == (None, None, None)
    history = _history(parts, case.id)
    assert [h.action for h in history][-3:] == ["dismiss", "reopen", "dispatch"]
    assert history[-2].detail == {"level": "confirmed", "dismissed_by": "disp"}
    told = [j.payload for j in _jobs(parts, case.id, "feedback")]
    assert [(f["verdict"], f["state"]) for f in told] == [("false_alarm", "resolved"), (None, "dispatched")]


@pytest.mark.parametrize("closed_by", ["dismiss", "resolve"])
def test_a_new_throw_never_joins_a_closed_case(parts, closed_by):
    t = dt.datetime.now(dt.UTC)
    level = "suspected" if closed_by == "dismiss" else "confirmed"
    send(parts, alert("garden3-east", "east", "ev-first", level=level, floor=12, at=t))
    (case,) = _cases(parts)
    steps = {
        "dismiss": [(Action.DISMISS, None)],
        "resolve": [(Action.CHECK, Verdict.THROWN), (Action.RESOLVE, None)],
    }
    for action, verdict in steps[closed_by]:
        with parts.sessions.begin() as s:
            parts.loop.act(s, s.get(Case, case.id), action, "disp", verdict)
    # Another camera, within the dedup window and a floor: were the case open, it would join it (see
    # test_two_cameras_seeing_one_throw_make_one_case_with_two_pieces_of_evidence).
    send(parts, alert("garden3-west", "west", "ev-second", floor=13, at=t + dt.timedelta(milliseconds=300)))
    first, second = _cases(parts)
    assert first.state == CaseState.RESOLVED
    assert (second.state, second.assignee) == (CaseState.DISPATCHED, "worker:zhang")
    with parts.sessions() as s:
        assert s.scalar(select(Event.case_id).where(Event.event_id == "ev-second")) == second.id


def _duty_roster(**workers):
    roster = copy.deepcopy(ROSTER)
    roster["grids"]["g1"]["workers"] = {
        wid: {"name": wid, "phone": "13800000011", "duty": duty} for wid, duty in workers.items()
    }
    return roster


@pytest.mark.parametrize("hour, to", [(10, "worker:zhang"), (23, "worker:li"), (3, "worker:li")])
def test_dispatch_goes_to_the_worker_whose_duty_hours_it_is(tmp_path, db_url, hour, to):
    p = make_parts(tmp_path, db_url, roster=_duty_roster(zhang=["08:00-20:00"], li=["20:00-08:00"]))
    try:
        send(p, alert(level="suspected"))
        with p.sessions.begin() as s:
            case = s.scalars(select(Case)).one()
            p.loop.act(s, case, Action.CONFIRM, "disp", now=_at_local(hour))
        (case,) = _cases(p)
        assert (case.assignee, case.escalation) == (to, 0)
    finally:
        p.engine.dispose()


def test_with_no_worker_on_duty_the_grid_leader_gets_the_case_then_the_office(tmp_path, db_url):
    p = make_parts(tmp_path, db_url, roster=_duty_roster(zhang=["08:00-20:00"]))
    try:
        for event_id, hour in (("ev-day", 10), ("ev-night", 23)):
            send(p, alert(level="suspected", event_id=event_id, at=_at_local(hour)))
            with p.sessions.begin() as s:
                case = s.scalars(select(Case).join(Event).where(Event.event_id == event_id)).one()
                p.loop.act(s, case, Action.CONFIRM, "disp", now=_at_local(hour))
        day, night = _cases(p)
        assert (day.assignee, day.escalation) == ("worker:zhang", 0)  # the control: on duty at 10:00
        assert (night.assignee, night.escalation) == ("leader:g1", 1)
        with p.sessions.begin() as s:
            p.loop.escalate_due(s, _at_local(23) + dt.timedelta(minutes=11))
        night = _cases(p)[1]
        assert (night.assignee, night.escalation) == ("office", 2)
    finally:
        p.engine.dispose()


def test_an_acknowledged_case_does_not_escalate(parts):
    send(parts, alert())
    (case,) = _cases(parts)
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.ACKNOWLEDGE, "zhang")
    with parts.sessions.begin() as s:
        assert parts.loop.escalate_due(s, case.dispatched_at + dt.timedelta(hours=1)) == 0
    assert _cases(parts)[0].escalation == 0


def test_two_cameras_seeing_one_throw_make_one_case_with_two_pieces_of_evidence(parts):
    t = dt.datetime.now(dt.UTC)
    send(parts, alert("garden3-east", "east", "ev-a", floor=12, at=t))
    send(parts, alert("garden3-west", "west", "ev-b", floor=13, at=t + dt.timedelta(milliseconds=400)))
    (case,) = _cases(parts)
    with parts.sessions() as s:
        assert s.scalars(select(Event.event_id).where(Event.case_id == case.id).order_by(Event.id)).all() == [
            "ev-a",
            "ev-b",
        ]
        actions = s.scalars(select(History.action).where(History.case_id == case.id).order_by(History.id)).all()
    assert actions == ["created", "dispatch", "evidence"]  # dispatched once, the second camera joined it


def test_a_late_alert_joining_a_checked_case_is_told_the_verdict_too(parts):
    # The second camera's alert reaches the center only after the check (its node's outbox was late): it is
    # part of the case, so its node must get the on-site verdict like the first, or it never learns its
    # alert was a false alarm (nor any verdict, when the case is then resolved without a new one).
    t = dt.datetime.now(dt.UTC)
    send(parts, alert("garden3-east", "east", "ev-first", floor=12, at=t))
    (case,) = _cases(parts)
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.CHECK, "zhang", Verdict.FALSE_ALARM, note="a pigeon")
    send(parts, alert("garden3-west", "west", "ev-late", floor=13, at=t + dt.timedelta(milliseconds=400)))
    assert len(_cases(parts)) == 1  # it joined the checked case
    with parts.sessions.begin() as s:
        parts.loop.act(s, s.get(Case, case.id), Action.RESOLVE, "disp")  # keeps the check's verdict
    told = {(j.target, j.payload["id"], j.payload["verdict"]) for j in _jobs(parts, case.id, "feedback")}
    assert told == {("garden3-east", "ev-first", "false_alarm"), ("garden3-west", "ev-late", "false_alarm")}
    late = next(j.payload for j in _jobs(parts, case.id, "feedback") if j.payload["id"] == "ev-late")
    assert (late["by"], late["note"], late["state"]) == ("zhang", "a pigeon", "checked")
    first = next(j.payload for j in _jobs(parts, case.id, "feedback") if j.payload["id"] == "ev-first")
    assert late["at"] == first["at"]  # when the verdict was given, not when the late alert came


def test_alerts_apart_in_time_floor_or_building_are_separate_cases(parts):
    t = dt.datetime.now(dt.UTC)
    send(parts, alert("garden3-east", "east", "ev-1", floor=12, at=t))
    send(parts, alert("garden3-west", "west", "ev-2", floor=12, at=t + dt.timedelta(seconds=3)))  # later
    send(parts, alert("garden3-west", "west", "ev-3", floor=20, at=t))  # another floor
    send(parts, alert("garden5", "south", "ev-4", floor=12, at=t))  # another building
    assert len(_cases(parts)) == 4


def test_a_repeated_message_is_stored_once(parts):
    body = alert(event_id="ev-dup")
    for _ in range(3):
        send(parts, body)
    with parts.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 1
    assert len(_cases(parts)) == 1
    assert parts.drops.snapshot()["duplicate"] == 2


def test_a_camera_outside_the_roster_goes_to_the_office(parts):
    send(parts, alert("garden5", "roof", "ev-stray"))
    (case,) = _cases(parts)
    assert (case.building, case.assignee, case.state) == (None, "office", CaseState.DISPATCHED)
