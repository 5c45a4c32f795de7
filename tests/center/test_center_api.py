"""The JSON API: tokens and roles, a grid worker's view of their own buildings, the loop's actions, evidence,
statistics, and the OpenAPI schema the pages will be built on."""

from __future__ import annotations

import datetime as dt

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from fastapi.testclient import TestClient
from parts import alert, context_of, failed_mail, make_parts, send
from sqlalchemy import select

from center.api import create_app
from center.auth import add_user
from center.db import Audit, Case, write_audit
from center.models import Role

JPEG = b"\xff\xd8\xff\xe0" + b"photo" * 100


@pytest.fixture
def api(tmp_path, db_url):
    p = make_parts(tmp_path, db_url)
    with p.sessions.begin() as s:
        tokens = {
            "admin": add_user(s, "admin", Role.ADMIN),
            "disp": add_user(s, "disp", Role.DISPATCHER),
            "zhang": add_user(s, "zhang", Role.GRID_WORKER, "zhang"),  # grid g1: building b3
            "chen": add_user(s, "chen", Role.GRID_WORKER, "chen"),  # grid g2: building b5
        }
    ctx = context_of(p)
    app = create_app(ctx)

    def as_(user):
        """A client of its own for each user (headers are per client)."""
        return TestClient(app, headers={"Authorization": f"Bearer {tokens[user]}"})

    yield p, as_
    p.engine.dispose()


def test_every_call_needs_a_valid_token(api):
    p, as_ = api
    client = as_("admin")
    assert client.get("/api/cases").status_code == 200
    client.headers["Authorization"] = "Bearer ec_not-a-token"
    assert client.get("/api/cases").status_code == 401
    del client.headers["Authorization"]
    assert client.get("/api/cases").status_code == 401


def test_a_grid_worker_sees_and_acts_on_their_own_buildings_only(api):
    p, as_ = api
    t = dt.datetime.now(dt.UTC)
    send(p, alert("garden3-east", "east", "ev-b3", at=t))
    send(p, alert("garden5", "south", "ev-b5", at=t))
    assert [c["building"] for c in as_("zhang").get("/api/cases").json()] == ["b3"]
    assert [c["building"] for c in as_("chen").get("/api/cases").json()] == ["b5"]
    assert sorted(c["building"] for c in as_("disp").get("/api/cases").json()) == ["b3", "b5"]
    b5 = as_("chen").get("/api/cases").json()[0]["id"]
    assert as_("zhang").get(f"/api/cases/{b5}").status_code == 403
    assert as_("zhang").post(f"/api/cases/{b5}/acknowledge", json={}).status_code == 403
    assert as_("zhang").get("/api/cases/999999").status_code == 404  # no such case at all
    assert as_("chen").post(f"/api/cases/{b5}/acknowledge", json={}).status_code == 200
    assert as_("zhang").get("/api/me").json()["buildings"] == ["b3"]


def test_the_roster_with_everyone_s_phone_is_for_staff_only(api):
    p, as_ = api
    assert as_("zhang").get("/api/roster").status_code == 403
    r = as_("disp").get("/api/roster")
    assert r.status_code == 200 and r.json()["buildings"]


def test_only_dispatchers_review_suspected_alerts(api):
    p, as_ = api
    send(p, alert(level="suspected"))
    (case,) = as_("disp").get("/api/cases?state=new").json()
    assert as_("zhang").post(f"/api/cases/{case['id']}/confirm", json={}).status_code == 403
    r = as_("disp").post(f"/api/cases/{case['id']}/confirm", json={})
    assert r.status_code == 200 and r.json()["state"] == "dispatched"


def test_the_loop_through_the_api_with_a_photo_and_its_history(api):
    p, as_ = api
    send(p, alert(event_id="ev-api"))
    p.ingest.handle("edge/garden3-east/events/ev-api/snapshot", b"\xff\xd8\xff" + b"s" * 50)
    zhang = as_("zhang")
    (case,) = zhang.get("/api/cases").json()
    cid = case["id"]
    assert zhang.post(f"/api/cases/{cid}/resolve", json={"verdict": "thrown"}).status_code == 409  # not yet
    assert zhang.post(f"/api/cases/{cid}/acknowledge", json={}).status_code == 200
    assert zhang.post(f"/api/cases/{cid}/check", json={}).status_code == 422  # a check needs a verdict
    r = zhang.post(f"/api/cases/{cid}/check", json={"verdict": "thrown", "note": "bottle, room 1203"})
    assert r.status_code == 200
    photo = zhang.post(f"/api/cases/{cid}/photos", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert photo.status_code == 201
    assert zhang.post(f"/api/cases/{cid}/photos", content=b"GIF89a").status_code == 415
    assert zhang.post(f"/api/cases/{cid}/resolve", json={}).status_code == 200
    detail = zhang.get(f"/api/cases/{cid}").json()
    assert (detail["state"], detail["verdict"], detail["resolved_by"]) == ("resolved", "thrown", "zhang")
    assert [h["action"] for h in detail["history"]] == [
        "created",
        "dispatch",
        "acknowledge",
        "check",
        "hold",  # a thrown object: the node keeps its evidence past retention
        "photo",
        "resolve",
    ]
    (still,) = detail["events"][0]["evidence"]
    assert (still["kind"], still["trust"]) == ("snapshot", "unsigned")
    assert zhang.get(still["url"]).content.startswith(b"\xff\xd8\xff")
    assert zhang.get(detail["photos"][0]["url"]).content == JPEG
    assert as_("chen").get(still["url"]).status_code == 403  # another grid's evidence
    assert sorted(n["channel"] for n in detail["notices"]) == ["feedback", "hold"]


def test_staff_release_a_held_case_s_evidence_with_a_reason_and_hold_it_again(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-hold"))
    (case,) = as_("disp").get("/api/cases").json()
    url = f"/api/cases/{case['id']}/hold"
    assert as_("disp").get(f"/api/cases/{case['id']}").json()["held"] is False
    assert as_("zhang").post(url, json={"hold": True}).status_code == 403  # staff only
    assert as_("disp").post(url, json={"hold": True, "note": "the police asked"}).status_code == 200
    assert as_("disp").post(url, json={"hold": True}).status_code == 409  # held already
    assert as_("disp").get(f"/api/cases/{case['id']}").json()["held"] is True
    assert as_("disp").post(url, json={"hold": False}).status_code == 422  # a release says why
    assert as_("disp").post(url, json={"hold": False, "note": "case closed by the court"}).status_code == 200
    detail = as_("disp").get(f"/api/cases/{case['id']}").json()
    assert detail["held"] is False and [h["action"] for h in detail["history"]][-2:] == ["hold", "release"]
    assert detail["history"][-1]["detail"] == {"note": "case closed by the court"}
    assert as_("disp").post(url, json={"hold": True, "note": "the appeal"}).status_code == 200  # held again
    assert as_("disp").get(f"/api/cases/{case['id']}").json()["held"] is True


def _checked_as_thrown(p, as_, event_id: str) -> dict:
    """A case its grid worker (zhang) acknowledged and checked on site as thrown."""
    send(p, alert("garden3-east", "east", event_id))
    zhang = as_("zhang")
    (case,) = zhang.get("/api/cases").json()
    assert zhang.post(f"/api/cases/{case['id']}/acknowledge", json={}).status_code == 200
    assert zhang.post(f"/api/cases/{case['id']}/check", json={"verdict": "thrown"}).status_code == 200
    return case


def test_only_an_admin_releases_the_evidence_of_a_thrown_object(api):
    p, as_ = api
    case = _checked_as_thrown(p, as_, "ev-thrown")
    url, why = f"/api/cases/{case['id']}/hold", {"hold": False, "note": "the court closed the case"}
    assert as_("disp").post(url, json=why).status_code == 403  # a crime's evidence: not a dispatcher's alone
    assert as_("disp").get(f"/api/cases/{case['id']}").json()["held"] is True
    assert as_("admin").post(url, json=why).status_code == 200  # control: an admin may
    detail = as_("admin").get(f"/api/cases/{case['id']}").json()
    assert detail["held"] is False and detail["history"][-1]["actor"] == "admin"


def test_a_thrown_verdict_resolved_as_another_still_needs_an_admin_to_release_its_evidence(api):
    p, as_ = api
    case = _checked_as_thrown(p, as_, "ev-overridden")
    assert as_("zhang").post(f"/api/cases/{case['id']}/resolve", json={"verdict": "fell"}).status_code == 200
    assert as_("disp").get(f"/api/cases/{case['id']}").json()["verdict"] == "fell"  # the case is corrected
    url, why = f"/api/cases/{case['id']}/hold", {"hold": False, "note": "it only fell"}
    assert as_("disp").post(url, json=why).status_code == 403  # but the crime's evidence is not let go so
    assert as_("admin").post(url, json=why).status_code == 200  # control: an admin may


def test_only_an_admin_releases_the_evidence_of_a_case_exported_for_the_police(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-exported"))
    (case,) = as_("disp").get("/api/cases").json()
    url, why = f"/api/cases/{case['id']}/hold", {"hold": False, "note": "no longer needed"}
    assert as_("disp").post(url, json={"hold": True, "note": "a neighbour complained"}).status_code == 200
    assert as_("disp").post(url, json=why).status_code == 200  # control: held by hand, a dispatcher releases
    with p.sessions.begin() as s:  # the archive downloaded on the case's page: its audit line and its hold
        write_audit(s, "disp", "export", f"case:{case['id']}", {"bytes": 1})
        p.loop.hold(s, s.get(Case, case["id"]), "disp", dt.datetime.now(dt.UTC), "exported")
    refused = as_("disp").post(url, json=why)
    assert refused.status_code == 403 and "exported" in refused.json()["detail"]
    assert as_("disp").get(f"/api/cases/{case['id']}").json()["held"] is True
    assert as_("admin").post(url, json=why).status_code == 200


def test_a_dispatcher_reassigns_a_case_to_the_grid_leader_who_is_told(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-re"))  # building b3, grid g1: dispatched to zhang
    (case,) = as_("disp").get("/api/cases").json()
    url = f"/api/cases/{case['id']}/reassign"
    assert as_("zhang").post(url, json={"to": "leader:g1"}).status_code == 403  # dispatchers only
    assert as_("disp").post(url, json={"to": "worker:chen"}).status_code == 422  # not of b3's grid
    r = as_("disp").post(url, json={"to": "leader:g1"})
    assert r.status_code == 200 and (r.json()["assignee"], r.json()["state"]) == ("leader:g1", "dispatched")
    detail = as_("disp").get(f"/api/cases/{case['id']}").json()
    (moved,) = [h for h in detail["history"] if h["action"] == "reassign"]
    assert (moved["actor"], moved["detail"]) == ("disp", {"from": "worker:zhang", "to": "leader:g1"})
    as_("disp").post(f"/api/cases/{case['id']}/acknowledge", json={})
    assert as_("disp").post(url, json={"to": "office"}).json()["state"] == "dispatched"  # still before a check


def test_dispatchers_list_the_suspected_alerts_waiting_for_their_review(api):
    p, as_ = api
    t = dt.datetime.now(dt.UTC)
    send(p, alert("garden3-east", "east", "ev-sus", level="suspected", at=t))
    send(p, alert("garden5", "south", "ev-conf", level="confirmed", at=t))
    disp = as_("disp")
    (waiting,) = disp.get("/api/cases", params={"assignee": "office", "state": "new"}).json()
    assert (waiting["level"], waiting["building"]) == ("suspected", "b3")
    assert waiting["escalate_at"] is not None and waiting["dispatched_at"] is None  # when it goes to the leader
    (mine,) = disp.get("/api/cases", params={"assignee": "worker:chen"}).json()  # the control
    assert (mine["state"], mine["building"]) == ("dispatched", "b5") and mine["dispatched_at"] is not None
    assert disp.get("/api/cases", params={"level": "maybe"}).status_code == 422


def test_only_a_grid_worker_of_the_case_s_building_adds_photos(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-photo"))  # building b3, grid g1: zhang's
    (case,) = as_("disp").get("/api/cases").json()
    url = f"/api/cases/{case['id']}/photos"
    jpeg = {"Content-Type": "image/jpeg"}
    assert as_("chen").post(url, content=JPEG, headers=jpeg).status_code == 403  # grid g2's worker
    assert as_("chen").post("/api/cases/999999/photos", content=JPEG, headers=jpeg).status_code == 404
    assert as_("zhang").post(url, content=JPEG, headers=jpeg).status_code == 201  # their own building
    detail = as_("disp").get(f"/api/cases/{case['id']}").json()
    assert [h["actor"] for h in detail["history"] if h["action"] == "photo"] == ["zhang"]
    assert len(detail["photos"]) == 1


def test_only_a_grid_worker_of_the_case_s_building_gives_its_on_site_verdict(api):
    p, as_ = api
    send(p, alert("garden5", "south", "ev-verdict"))  # building b5, grid g2: chen's
    (case,) = as_("disp").get("/api/cases").json()
    check = f"/api/cases/{case['id']}/check"
    assert as_("zhang").post(check, json={"verdict": "thrown"}).status_code == 403  # grid g1's worker
    r = as_("chen").post(check, json={"verdict": "thrown", "note": "a bottle"})
    assert r.status_code == 200 and (r.json()["state"], r.json()["checked_by"]) == ("checked", "chen")


def test_a_grid_worker_sees_the_verdicts_of_their_own_buildings_only(api):
    p, as_ = api
    t = dt.datetime.now(dt.UTC)
    send(p, alert("garden3-east", "east", "ev-fb-b3", at=t))
    send(p, alert("garden5", "south", "ev-fb-b5", at=t))
    for case in as_("disp").get("/api/cases").json():
        as_("disp").post(f"/api/cases/{case['id']}/check", json={"verdict": "false_alarm"})
    assert as_("chen").get("/api/feedback", params={"building": "b3"}).status_code == 403  # zhang's building
    own = as_("chen").get("/api/feedback", params={"building": "b5"})
    assert own.status_code == 200 and [f["event_id"] for f in own.json()] == ["ev-fb-b5"]
    assert [f["event_id"] for f in as_("chen").get("/api/feedback").json()] == ["ev-fb-b5"]
    assert sorted(f["event_id"] for f in as_("disp").get("/api/feedback").json()) == ["ev-fb-b3", "ev-fb-b5"]


def test_statistics_count_cases_by_building_floor_and_hour_and_time_to_act(api):
    p, as_ = api
    t = dt.datetime(2026, 5, 1, 2, 30, tzinfo=dt.UTC)  # 10:30 in Shanghai
    send(p, alert("garden3-east", "east", "ev-1", floor=12, at=t))
    send(p, alert("garden3-east", "east", "ev-2", floor=12, at=t + dt.timedelta(hours=1)))
    send(p, alert("garden5", "south", "ev-3", floor=4, at=t))
    disp = as_("disp")
    first = [c["id"] for c in disp.get("/api/cases?building=b3").json()]
    disp.post(f"/api/cases/{first[0]}/check", json={"verdict": "false_alarm"})
    disp.post(f"/api/cases/{first[1]}/acknowledge", json={})
    disp.post(f"/api/cases/{first[1]}/check", json={"verdict": "thrown"})
    disp.post(f"/api/cases/{first[1]}/resolve", json={})
    stats = disp.get("/api/stats").json()
    assert stats["cases"] == 3
    assert stats["by_building"] == {"b3": 2, "b5": 1}
    assert stats["by_floor"] == {"b3": {"12": 2}, "b5": {"4": 1}}
    assert stats["by_hour"][10] == 2 and stats["by_hour"][11] == 1
    assert stats["by_verdict"] == {"false_alarm": 1, "thrown": 1}
    assert stats["false_alarm_share"] == 0.5
    assert stats["resolved_share"] == pytest.approx(1 / 3)
    assert stats["median_ack_s"] is not None and stats["median_resolve_s"] is not None
    assert as_("chen").get("/api/stats").json()["by_building"] == {"b5": 1}
    false = disp.get("/api/feedback", params={"verdict": "false_alarm"}).json()
    assert isinstance(false, list), false
    assert [(f["node"], f["verdict"]) for f in false] == [("garden3-east", "false_alarm")]


def test_an_offset_past_what_the_database_counts_is_refused_as_malformed_not_a_server_error(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-offset"))
    disp = as_("disp")
    disp = TestClient(disp.app, headers=disp.headers, raise_server_exceptions=False)
    for offset in (10**30, 2**63, 2**31):  # SQLite and PostgreSQL take 64 bits at most; ids 32
        r = disp.get(f"/api/cases?offset={offset}")
        assert r.status_code == 422 and isinstance(r.json()["detail"], list), (offset, r.text[:200])
    assert len(disp.get("/api/cases?offset=0").json()) == 1  # control: an offset in range pages
    assert disp.get(f"/api/cases?offset={2**31 - 1}").json() == []


@pytest.mark.parametrize("path", ["/api/cases", "/api/stats"])
def test_a_time_at_the_calendar_s_ends_is_refused_as_malformed_not_a_server_error(api, path):
    # Year 1 at +14:00 is before the first UTC instant Python has, 9999-12-31 at -14:00 after the last: the
    # database's UTC conversion overflows.
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-ends", at=dt.datetime(2026, 5, 1, 2, 30, tzinfo=dt.UTC)))
    disp = as_("disp")
    disp = TestClient(disp.app, headers=disp.headers, raise_server_exceptions=False)
    for query in ({"since": "0001-01-01T00:00:00+14:00"}, {"until": "9999-12-31T23:59:59-14:00"}):
        r = disp.get(path, params=query)
        assert r.status_code == 422, (query, r.text[:200])
    wide = disp.get(path, params={"since": "0001-01-02T00:00:00+14:00", "until": "9999-12-31T00:00:00Z"})
    assert wide.status_code == 200  # control: the widest times that are instants filter as usual
    assert (len(wide.json()) if path == "/api/cases" else wide.json()["cases"]) == 1


def test_node_health_and_failed_notices_are_for_staff(api):
    p, as_ = api
    p.ingest.handle("edge/garden5/available", b"offline")
    nodes = as_("disp").get("/api/nodes").json()
    assert [(n["name"], n["available"], n["registered"]) for n in nodes] == [("garden5", "offline", False)]
    assert as_("chen").get("/api/nodes").status_code == 403
    assert as_("disp").get("/api/notices?state=failed").json() == []
    assert as_("admin").get("/api/ingest").json()["instance"] == "center-1"
    assert as_("disp").get("/api/ingest").status_code == 403


def test_the_api_is_described_by_its_openapi_schema(api):
    p, as_ = api
    schema = as_("admin").get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/cases", "/api/cases/{case_id}", "/api/cases/{case_id}/{action}", "/api/stats"} <= paths
    assert {"/api/roster", "/api/nodes", "/api/feedback", "/api/notices"} <= paths
    assert "CaseDetail" in schema["components"]["schemas"]


def _audit(p) -> list[tuple[str, str, str]]:
    with p.sessions() as s:
        return [(a.actor, a.action, a.target) for a in s.scalars(select(Audit).order_by(Audit.id))]


def test_changes_made_through_the_api_are_in_the_audit_log_and_refused_ones_are_not(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-audit-api"))
    (case,) = as_("disp").get("/api/cases").json()
    target, base = f"case:{case['id']}", f"/api/cases/{case['id']}"
    assert as_("disp").post(f"{base}/hold", json={"hold": False}).status_code == 422  # refused: says no why
    assert as_("zhang").post(f"{base}/reassign", json={"to": "office"}).status_code == 403  # refused: a worker
    assert _audit(p) == []  # what was refused changed nothing, and is no change in the log
    assert as_("disp").post(f"{base}/hold", json={"hold": True, "note": "the police asked"}).status_code == 200
    assert as_("zhang").post(f"{base}/acknowledge", json={}).status_code == 200
    photo = as_("zhang").post(f"{base}/photos", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert photo.status_code == 201
    assert as_("disp").post(f"{base}/reassign", json={"to": "leader:g1"}).status_code == 200
    assert as_("disp").post(f"{base}/hold", json={"hold": False, "note": "closed"}).status_code == 200
    assert _audit(p) == [
        ("disp", "hold", target),
        ("zhang", "acknowledge", target),
        ("zhang", "photo", target),
        ("disp", "reassign", target),
        ("disp", "release", target),
    ]
    with p.sessions() as s:
        release = s.scalars(select(Audit).where(Audit.action == "release")).one()
    assert release.detail == {"note": "closed"} and release.address  # why, and from where


def test_a_grid_worker_sees_a_notice_s_state_but_not_where_it_went_or_why_it_failed(api):
    p, as_ = api
    send(p, alert("garden3-east", "east", "ev-mail"))
    (case,) = as_("zhang").get("/api/cases").json()
    failed_mail(p, case["id"])
    (mine,) = [
        n for n in as_("zhang").get(f"/api/cases/{case['id']}").json()["notices"] if n["channel"] == "email"
    ]
    assert (mine["state"], mine["target"], mine["last_error"]) == ("failed", None, None)
    # The control: the office sees both, to mend the address or the mail server.
    (office,) = [
        n for n in as_("disp").get(f"/api/cases/{case['id']}").json()["notices"] if n["channel"] == "email"
    ]
    assert (office["target"], office["last_error"]) == (
        "wang.office@example.cn",
        "SMTPAuthenticationError: 535 login refused",
    )
