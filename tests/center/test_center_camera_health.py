"""Camera problems and the storage level from nodes: kept once, shown as the camera's state, told to the office
through real notifiers; hostile or foreign messages refused."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from parts import make_parts
from sqlalchemy import select
from test_center_notify import SECRET, Receiver, _runner

from center.db import Camera, CameraProblem, Job, Node

NODE, CAMERA = "garden3-east", "east"  # building b3's east facade in the test roster


def problem(problem="covered", state="raised", active=("covered",), at_s=1000.0, **over) -> dict:
    """A camera problem message as the node sends it (docs/schemas/camera-problem.schema.json)."""
    return {
        "v": 1,
        "type": "camera_problem",
        "msg_id": uuid.uuid4().hex,
        "queued_utc": "2026-11-29T04:00:00.000Z",
        "id": f"{CAMERA}-{problem}-1",
        "node": NODE,
        "camera": CAMERA,
        "problem": problem,
        "state": state,
        "at_s": at_s,
        "since_s": at_s - 30,
        "at_utc": "2026-11-29T04:00:00.000Z",
        "since_utc": "2026-11-29T03:59:30.000Z",
        "score": 2.0,
        "threshold": 6.0,
        "reason": "strongest edge 2.0 luma levels, under 6.0",
        "detail": {},
        "active": list(active),
        **over,
    }


@pytest.fixture
def hook():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def parts(tmp_path, db_url, hook):
    p = make_parts(tmp_path, db_url, notify={"webhooks": [{"url": hook.url, "secret": SECRET}]})
    yield p
    p.engine.dispose()


def _send(parts, body, node=NODE, camera=CAMERA):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    parts.ingest.handle(f"edge/{node}/cameras/{camera}/problem", payload)


def _active(parts):
    with parts.sessions() as s:
        row = s.get(Camera, (NODE, CAMERA))
        return row.problems["active"] if row is not None and row.problems else None


def test_a_covered_camera_is_kept_shown_and_told_to_the_office(parts, hook):
    _send(parts, problem())
    assert _active(parts) == ["covered"]
    assert _runner(parts).run_due() == 1
    sent = json.loads(hook.requests[0][1])
    assert (sent["kind"], sent["problem"], sent["building"], sent["to"]) == (
        "camera_problem",
        "covered",
        "b3",
        "office",
    )
    assert "摄像机被遮挡" in sent["text"] and "3号楼" in sent["text"]


def test_back_to_normal_clears_the_problem_and_says_so(parts, hook):
    _send(parts, problem())
    _send(parts, problem(state="cleared", active=(), at_s=1100.0))
    assert _active(parts) == []
    _runner(parts).run_due()
    texts = [json.loads(body)["text"] for _, body in hook.requests]
    assert any("恢复正常" in t for t in texts) and any("被遮挡" in t for t in texts)


def test_a_repeated_message_is_kept_and_told_once(parts):
    body = problem()
    _send(parts, body)
    _send(parts, body)  # QoS 1 and retained: it comes again
    with parts.sessions() as s:
        assert len(s.scalars(select(CameraProblem)).all()) == 1
        assert len(s.scalars(select(Job)).all()) == 1
    assert parts.drops.counts.get("duplicate") == 1


def test_an_older_message_coming_late_does_not_undo_a_newer_one(parts):
    _send(parts, problem(state="cleared", active=(), at_s=2000.0))
    _send(parts, problem(at_s=1000.0))  # the raise, resent after its clear
    assert _active(parts) == []
    _send(parts, problem(problem="moved", active=("moved",), at_s=3000.0, id="east-moved-1"))  # control
    assert _active(parts) == ["moved"]


def _told(parts):
    with parts.sessions() as s:
        return [(j.payload["problem"], j.payload["state"]) for j in s.scalars(select(Job).order_by(Job.id))]


def test_a_raise_coming_after_its_clear_does_not_send_anyone_to_a_camera_back_to_normal(parts):
    _send(parts, problem(state="cleared", active=(), at_s=2000.0))
    _send(parts, problem(at_s=1000.0))  # the raise, late (another instance took it, or the broker resent it)
    assert _told(parts) == [("covered", "cleared")]


def test_a_late_raise_of_a_problem_still_active_is_told(parts):
    _send(parts, problem(problem="moved", active=("moved", "covered"), at_s=2000.0, id="east-moved-1"))
    _send(parts, problem(at_s=1000.0))  # covered first; the newer message says it still is
    assert _told(parts) == [("moved", "raised"), ("covered", "raised")]


@pytest.mark.parametrize(
    "body",
    [
        problem(problem="stolen"),  # not a problem the node knows
        problem(node="garden5"),  # another node than the topic's (the broker's ACL vouches for the topic)
        problem(camera="south"),  # another camera than the topic's
        problem(active=["covered"] * 9),
        problem(reason="x" * 5000),
        problem(msg_id="../../etc"),
        {k: v for k, v in problem().items() if k != "state"},
    ],
    ids=["problem", "node", "camera", "active", "reason", "msg_id", "state"],
)
def test_a_hostile_or_foreign_problem_message_is_refused_and_counted(parts, body):
    _send(parts, body)
    assert _active(parts) is None
    assert parts.drops.counts.get("bad camera problem") == 1


def test_a_camera_started_afresh_shows_no_problem_until_it_is_raised_again(parts):
    _send(parts, problem())
    assert _active(parts) == ["covered"]
    _send(parts, b"")  # the node emptied the retained message: a restart, or the camera reconnected on a reload
    assert _active(parts) == []
    # Still covered: raised again after its persistence, stamped by a node clock two minutes behind ours.
    _send(parts, problem(at_s=time.time() - 120, id="east-covered-2"))
    assert _active(parts) == ["covered"]


def test_after_a_restart_a_node_whose_clock_went_back_can_raise_a_problem_it_had_cleared(parts):
    _send(parts, problem(at_s=5000.0))
    _send(parts, problem(state="cleared", active=(), at_s=6000.0))
    assert _active(parts) == []
    _send(parts, b"")  # the node restarted; its clock (or a replay's seconds) starts lower than before
    _send(parts, problem(at_s=100.0, id="east-covered-2"))
    assert _active(parts) == ["covered"]


def test_an_emptied_retained_message_is_nothing_at_all(parts):
    _send(parts, b"")  # the node empties its retained message when it starts
    assert _active(parts) is None and not parts.drops.counts
    _send(parts, problem())  # control
    assert _active(parts) == ["covered"]


def test_the_node_s_storage_level_is_kept_and_a_foreign_one_refused(parts):
    level = {
        "v": 1,
        "type": "storage",
        "node": NODE,
        "level": "warning",
        "time_utc": "2026-11-29T04:00:00Z",
        "message": "storage warning: 91% of the budget may not be deleted yet",
        "used_bytes": 910,
        "budget_bytes": 1000,
        "protected_bytes": 910,
        "evidence_days": 30,
    }
    parts.ingest.handle(f"edge/{NODE}/storage", json.dumps({**level, "node": "garden5"}).encode())
    assert parts.drops.counts.get("bad storage") == 1
    parts.ingest.handle(f"edge/{NODE}/storage", json.dumps(level).encode())
    with parts.sessions() as s:
        assert s.get(Node, NODE).storage["level"] == "warning"


def test_the_nodes_page_shows_a_camera_s_problem_until_it_is_cleared(parts):
    from web_fixtures import add_people, logged_in, web_app

    add_people(parts.sessions)
    client = logged_in(web_app(parts), "disp")
    parts.ingest.handle(f"edge/{NODE}/{CAMERA}/status", json.dumps({"camera": CAMERA, "state": "online"}).encode())
    parts.ingest.flush_health()
    assert "摄像机被遮挡" not in client.get("/nodes").text  # control: a camera with no problem
    _send(parts, problem())
    assert "摄像机被遮挡" in client.get("/nodes").text
    _send(parts, problem(state="cleared", active=(), at_s=1100.0))
    assert "摄像机被遮挡" not in client.get("/nodes").text


def test_a_retained_problem_published_before_the_center_started_reaches_it_through_the_broker(tmp_path, broker):
    from centerkit import CenterProcess, node_client, write_center
    from support.servers import wait_for

    from center.db import make_engine, make_sessions

    node = node_client(broker, NODE)
    try:
        topic = f"edge/{NODE}/cameras/{CAMERA}/problem"
        node.publish(topic, json.dumps(problem()), qos=1, retain=True).wait_for_publish(5)
        config = write_center(tmp_path, None, broker)
        center = CenterProcess(config).start()
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'center.db'}")
        sessions = make_sessions(engine)

        def active():
            with sessions() as s:
                row = s.get(Camera, (NODE, CAMERA))
                return row.problems["active"] if row is not None and row.problems else None

        try:
            assert wait_for(active, 20) == ["covered"], center.output()[-2000:]
        finally:
            assert center.stop() == 0, center.output()[-2000:]
            engine.dispose()
    finally:
        node.publish(f"edge/{NODE}/cameras/{CAMERA}/problem", b"", qos=1, retain=True).wait_for_publish(5)
        node.loop_stop()
