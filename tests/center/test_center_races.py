"""Two center instances (or two people) acting on one case at the same moment, on SQLite and PostgreSQL:
one wins, the other is told plainly, and the case's history tells one consistent story."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from fastapi.testclient import TestClient
from parts import alert, context_of, make_parts, send
from sqlalchemy import select

from center.api import create_app
from center.auth import add_user
from center.db import Case, History, Job
from center.models import Action, CaseState, Role

HOOK = {"webhooks": [{"url": "http://127.0.0.1:9/never-sent", "secret": "s"}]}  # notices queued, not sent


@pytest.fixture
def two(tmp_path, db_url):
    """Two instances over one database, each with its own engine (its own connections), loop and API."""
    made = [make_parts(tmp_path / name, db_url, notify=HOOK) for name in ("one", "two")]
    with made[0].sessions.begin() as s:
        tokens = {name: add_user(s, name, Role.DISPATCHER) for name in ("desk-a", "desk-b")}
    yield made, tokens
    for p in made:
        p.engine.dispose()


def _client(p, token: str) -> TestClient:
    ctx = context_of(p)
    return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})


def _race(*calls):
    """Run the calls in threads released at one moment; their results (or exceptions) in order."""
    start = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        start.wait()
        try:
            results[i] = call()
        except Exception as exc:  # a failure is a result here: the test asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _story(p, case_id):
    with p.sessions() as s:
        history = s.scalars(select(History).where(History.case_id == case_id).order_by(History.id)).all()
        notices = s.scalars(select(Job).where(Job.case_id == case_id, Job.channel == "webhook")).all()
        return s.get(Case, case_id), history, [j.payload["kind"] for j in notices]


def test_two_dispatchers_confirming_one_alert_on_two_instances_dispatch_it_once(two):
    (one, other), tokens = two
    send(one, alert(level="suspected"))
    with one.sessions() as s:
        case_id = s.scalars(select(Case.id)).one()
    a, b = _client(one, tokens["desk-a"]), _client(other, tokens["desk-b"])
    answers = _race(
        lambda: a.post(f"/api/cases/{case_id}/confirm", json={}),
        lambda: b.post(f"/api/cases/{case_id}/confirm", json={}),
    )
    assert sorted(r.status_code for r in answers) == [200, 409]
    won, lost = (answers[0], answers[1]) if answers[0].status_code == 200 else (answers[1], answers[0])
    assert lost.json()["detail"] == "cannot confirm a case that is dispatched"  # the loser is told why
    winner = "desk-a" if won is answers[0] else "desk-b"
    case, history, notices = _story(one, case_id)
    assert (case.state, won.json()["state"]) == (CaseState.DISPATCHED, "dispatched")
    assert [(h.action, h.actor) for h in history] == [
        ("created", "center"),
        ("review", "center"),
        ("confirm", winner),
        ("dispatch", winner),
    ]
    assert notices == ["review", "dispatch"]  # the worker is told once


def test_two_instances_escalating_at_once_take_each_step_once(two):
    (one, other), _ = two
    send(one, alert())
    with one.sessions() as s:
        case = s.scalars(select(Case)).one()
    due = case.escalate_at
    for _ in range(2):  # the leader's step, then the office's: each raced by both instances

        def escalate(p, at=due):
            with p.sessions.begin() as s:
                return p.loop.escalate_due(s, at)

        assert sorted(_race(lambda: escalate(one), lambda: escalate(other))) == [0, 1]
        case, history, _ = _story(one, case.id)
        due = case.escalate_at
    case, history, notices = _story(one, case.id)
    steps = [h.detail["to"] for h in history if h.action == "escalate"]
    assert (steps, case.assignee, case.escalation) == (["leader:g1", "office"], "office", 2)
    assert notices == ["dispatch", "escalate", "escalate"]


def test_a_dismissal_racing_the_node_s_confirmation_ends_dispatched_either_way(two):
    (one, other), tokens = two
    first = alert(level="suspected", event_id="ev-race")
    send(one, first)
    with one.sessions() as s:
        case_id = s.scalars(select(Case.id)).one()
    desk = _client(other, tokens["desk-a"])
    confirmed = {**first, "type": "update", "level": "confirmed", "msg_id": "m-race-confirmed"}
    dismissal, _ = _race(
        lambda: desk.post(f"/api/cases/{case_id}/dismiss", json={"note": "a bird?"}),
        lambda: send(one, confirmed),
    )
    case, history, _ = _story(one, case_id)
    actions = [h.action for h in history]
    if dismissal.status_code == 200:  # the dismissal came first; the confirmation opened the case again
        assert actions == ["created", "review", "dismiss", "reopen", "dispatch"]
    else:  # the confirmation came first; the dismissal was refused
        assert dismissal.status_code == 409, dismissal.text
        assert actions == ["created", "review", "dispatch"]
    assert (case.state, case.level, case.verdict) == (CaseState.DISPATCHED, "confirmed", None)


def _until_waiting_for_a_lock(p, thread: threading.Thread) -> None:
    """Return once the thread's transaction waits for a row lock (PostgreSQL), or the thread has ended."""
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with p.engine.connect() as watch:
        for _ in range(600):
            blocked = watch.exec_driver_sql(waiting).scalar()
            watch.rollback()  # pg_stat_activity is a snapshot per transaction: a new one each look
            if blocked or not thread.is_alive():
                return
            threading.Event().wait(0.05)


def test_an_escalation_that_finds_the_case_reassigned_meanwhile_leaves_it_with_the_new_person(
    tmp_path, pg_cluster
):
    """PostgreSQL: the escalator read the case as overdue, then waits on the row a dispatcher holds while
    reassigning it (same state, same step, a fresh clock). Once the reassignment commits, the case is not due."""
    p = make_parts(tmp_path, pg_cluster.new_database(), notify=HOOK)
    send(p, alert())
    with p.sessions() as s:
        case_id, due = s.execute(select(Case.id, Case.escalate_at)).one()
    desk = p.sessions()
    desk.begin()
    p.loop.reassign(desk, desk.get(Case, case_id, with_for_update=True), "worker:zhang", "desk-a", now=due)
    desk.flush()  # the row is locked and changed, not yet committed

    def escalate():
        with p.sessions.begin() as s:
            return p.loop.escalate_due(s, due)

    result: list = []
    escalator = threading.Thread(target=lambda: result.append(escalate()))
    escalator.start()
    _until_waiting_for_a_lock(p, escalator)
    desk.commit()
    desk.close()
    escalator.join(60)
    case, history, notices = _story(p, case_id)
    assert result == [0] and (case.assignee, case.escalation) == ("worker:zhang", 0)
    assert [h.action for h in history][-1] == "reassign" and notices == ["dispatch", "dispatch"]
    with p.sessions.begin() as s:  # control: at the new clock's end it escalates as usual
        assert p.loop.escalate_due(s, case.escalate_at) == 1
    assert _story(p, case_id)[0].assignee == "leader:g1"
    p.engine.dispose()


def test_a_second_camera_s_alert_joining_a_case_a_dispatcher_is_confirming_does_not_dispatch_it_again(
    tmp_path, pg_cluster
):
    """PostgreSQL: the dispatcher holds the case's row while confirming it; the node's second camera (same throw,
    confirmed) joins the case meanwhile. Once the confirmation commits, the join finds the case dispatched."""
    p = make_parts(tmp_path, pg_cluster.new_database(), notify=HOOK)
    first = alert(level="suspected", event_id="ev-east")
    send(p, first)
    with p.sessions() as s:
        case_id = s.scalars(select(Case.id)).one()
    desk = p.sessions()
    desk.begin()
    p.loop.act(desk, desk.get(Case, case_id, with_for_update=True), Action.CONFIRM, "desk-a")
    desk.flush()  # confirmed and dispatched, not yet committed
    second = alert(
        camera="north", event_id="ev-north", level="confirmed", at=dt.datetime.fromisoformat(first["alert_utc"])
    )
    joining = threading.Thread(target=lambda: send(p, second))
    joining.start()
    _until_waiting_for_a_lock(p, joining)
    desk.commit()
    desk.close()
    joining.join(60)
    case, history, notices = _story(p, case_id)
    actions = [h.action for h in history]
    assert actions == ["created", "review", "confirm", "dispatch", "evidence"], actions
    assert notices == ["review", "dispatch"] and case.state == CaseState.DISPATCHED
    with p.sessions() as s:  # control: the second camera's alert is in the same case
        assert sorted(e.event_id for e in s.get(Case, case_id).events) == ["ev-east", "ev-north"]
    p.engine.dispose()


def test_two_admins_adding_the_same_name_at_once_get_one_user_and_a_plain_refusal(tmp_path, pg_cluster):
    """PostgreSQL: one admin's new user is inserted, not committed; the other's page finds no such name yet and
    waits on the unique name. Once the first commits, the second is told the name is taken (not a 500)."""
    from web_fixtures import add_people, csrf_of, logged_in, web_app

    from center.auth import add_user as insert_user
    from center.db import User

    p = make_parts(tmp_path, pg_cluster.new_database())
    add_people(p.sessions)
    admin = logged_in(web_app(p), "admin")
    token = csrf_of(admin.get("/users").text)
    first = p.sessions()
    first.begin()
    insert_user(first, "li", Role.DISPATCHER)
    first.flush()
    answers: list = []
    form = {"name": "li", "role": "dispatcher", "password": "pw-li-long-enough", "csrf": token}
    second = threading.Thread(target=lambda: answers.append(admin.post("/users", data=form)))
    second.start()
    _until_waiting_for_a_lock(p, second)
    first.commit()
    first.close()
    second.join(60)
    (r,) = answers
    assert r.status_code == 422 and "用户“li”已存在" in r.text
    with p.sessions() as s:
        assert len(s.scalars(select(User).where(User.name == "li")).all()) == 1
    r = admin.post("/users", data={**form, "name": "wu"})  # control: a free name is added
    assert r.status_code == 200 and 'data-user="wu"' in r.text
    p.engine.dispose()
