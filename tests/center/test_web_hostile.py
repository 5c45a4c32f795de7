"""The pages given what a node or a person may send that is odd or hostile: each page still answers, shows what
it can, and never lets one bad message break it for everyone."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from fastapi.testclient import TestClient
from parts import alert, make_parts, send
from sqlalchemy import select
from web_fixtures import add_people, csrf_of, logged_in, web_app

from center.auth import add_user
from center.db import Case
from center.models import Role

MAY = dt.datetime(2026, 5, 10, 2, 30, tzinfo=dt.UTC)


@pytest.fixture
def site(tmp_path):
    parts = make_parts(tmp_path, f"sqlite:///{tmp_path / 'center.db'}")
    add_people(parts.sessions)
    yield parts, web_app(parts)
    parts.engine.dispose()


def _newest_case(parts) -> int:
    with parts.sessions() as s:
        return s.scalars(select(Case.id).order_by(Case.id)).all()[-1]


def test_an_origin_of_strings_and_absurd_floors_still_draws_a_bounded_elevation(site):
    parts, app = site
    odd = {"x": 1.0, "y": 2.0, "floor": 100_000, "facade_x_m": "left", "height_m": True}
    send(parts, alert("garden5", "north", "ev-odd", origin=odd))  # a camera the roster does not know
    client = logged_in(app, "disp")
    r = client.get(f"/alerts/{_newest_case(parts)}/elevation.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert 0 < r.text.count("<rect") <= 200  # not one storey per floor the message claims
    send(parts, alert("garden3-east", "east", "ev-good", floor=12))  # control: a real origin on a known building
    good = client.get(f"/alerts/{_newest_case(parts)}/elevation.svg").text
    assert good.count("<rect") == 26 and "<circle" in good


def test_an_origin_with_a_number_too_big_for_a_float_does_not_break_the_alert_list(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-good", floor=12))
    huge = {"x": 1.0, "y": 2.0, "floor": 3, "facade_x_m": 10**400, "height_m": -(10**400)}
    send(parts, alert("garden3-east", "west", "ev-huge", origin=huge))
    client = logged_in(app, "disp")
    case = _newest_case(parts)
    for page in ("/alerts", "/alerts/rows"):
        r = client.get(page)
        assert r.status_code == 200 and f'data-case="{case}"' in r.text, page
    assert client.get(f"/alerts/{case}").status_code == 200
    assert "3.0 m" in client.get("/alerts").text  # control: the good origin's place is shown


def test_one_node_s_malformed_status_and_stats_do_not_break_the_nodes_page(site):
    parts, app = site
    bad_status = {
        "v": 1,
        "camera": "south",
        "state": {"x": 1},
        "since": "yesterday",
        "fps": "fast",
        "dropped": [1],
    }
    bad_stats = {"node": "garden5", "cameras": [1, 2], "disk_free_gb": 10**400, "cpu_percent": 1e300}
    good_status = {"v": 1, "camera": "east", "state": "online", "reason": "receiving frames", "since": 1.7e9,
                   "fps": 12.5, "dropped": 3}  # fmt: skip
    parts.ingest.handle("edge/garden5/south/status", json.dumps(bad_status).encode())
    parts.ingest.handle("edge/garden5/stats", json.dumps(bad_stats).encode())
    parts.ingest.handle("edge/garden3-east/east/status", json.dumps({**good_status, "since": 1e30}).encode())
    parts.ingest.handle("edge/garden3-east/west/status", json.dumps(good_status).encode())
    assert parts.ingest.flush_health() == 4
    r = logged_in(app, "disp").get("/nodes")
    assert r.status_code == 200
    assert 'data-camera="garden5/south"' in r.text and 'data-camera="garden3-east/east"' in r.text
    assert "12.5" in r.text and "在线" in r.text  # control: a good status is shown, its state in Chinese


@pytest.mark.parametrize(
    "path",
    [
        "/alerts?since=0001-01-01",
        "/alerts?until=9999-12-31",
        "/alerts/rows?until=9999-12-31&since=0001-01-01",
        "/report?month=9999-12",
        "/report?month=0001-01",
        "/report.csv?month=9999-12",
    ],
)
def test_dates_at_the_calendar_s_ends_are_ignored_not_a_server_error(site, path):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-may", at=MAY))
    client = logged_in(app, "disp")
    assert client.get(path).status_code == 200
    # control: a date filter in range still filters
    assert 'data-case="' in client.get("/alerts?since=2026-05-10&until=2026-05-10").text
    assert 'data-case="' not in client.get("/alerts?since=2026-06-01").text


def test_a_malformed_address_or_form_on_a_page_is_answered_with_a_page(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-form"))
    client = logged_in(app, "disp")
    for r in (
        client.get("/alerts/abc"),
        client.get("/evidence/99999999999999999999999"),
        client.post(f"/alerts/{_newest_case(parts)}/act", data={"action": "acknowledge", "note": "长" * 2001}),
    ):
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), r.text[:200]
        assert "请求无效" in r.text
    with parts.sessions.begin() as s:  # control: the API still answers its callers in JSON
        token = add_user(s, "robot", Role.DISPATCHER)
    api = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    for path in ("/api/cases/abc", "/api/cases/99999999999", "/api/evidence/99999999999"):
        r = api.get(path)  # a number past the id columns is malformed too, not a database overflow
        assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    assert api.get(f"/api/cases/{_newest_case(parts)}").status_code == 200


def test_an_evidence_file_gone_from_the_disk_is_not_found_not_a_server_error(site):
    parts, app = site
    from center.db import Evidence

    send(parts, alert("garden3-east", "east", "ev-gone"))
    parts.ingest.handle("edge/garden3-east/events/ev-gone/snapshot", b"\xff\xd8\xff\xe0" + b"j" * 100)
    with parts.sessions() as s:
        still = s.scalars(select(Evidence).where(Evidence.kind == "snapshot")).one()
    client = logged_in(app, "disp")
    assert client.get(f"/evidence/{still.id}").status_code == 200  # control: there, it is served
    parts.files.path(still.path).unlink()
    assert client.get(f"/evidence/{still.id}").status_code == 404
    with parts.sessions.begin() as s:
        token = add_user(s, "robot", Role.DISPATCHER)
    api = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert api.get(f"/api/evidence/{still.id}").status_code == 404


def test_nul_characters_are_refused_or_dropped_never_a_database_error_on_postgresql(tmp_path, pg_cluster):
    parts = make_parts(tmp_path, pg_cluster.new_database())
    add_people(parts.sessions)
    app = web_app(parts)
    send(parts, alert("garden3-east", "east", "ev-nul"))
    case = _newest_case(parts)
    stranger = TestClient(app, base_url="https://testserver")
    token = csrf_of(stranger.get("/login").text)
    r = stranger.post("/login", data={"name": "zh\x00ang", "password": "guess-guess-guess", "csrf": token})
    assert r.status_code == 401
    disp = logged_in(app, "disp")
    assert disp.get("/alerts?building=%00").status_code == 400
    token = csrf_of(disp.get(f"/alerts/{case}").text)
    r = disp.post(f"/alerts/{case}/act", data={"action": "acknowledge", "note": "花\x00盆", "csrf": token})
    assert r.status_code == 200 and "花盆" in r.text  # kept, without the NUL
    with parts.sessions.begin() as s:
        api_token = add_user(s, "robot", Role.DISPATCHER)
    api = TestClient(app, headers={"Authorization": f"Bearer {api_token}"})
    r = api.post(f"/api/cases/{case}/check", json={"verdict": "fell", "note": "a\u0000b"})
    assert r.status_code == 200 and r.json()["note"] == "ab"
    assert api.get("/api/cases?building=%00").status_code == 400
    assert api.get("/api/cases?building=b3").status_code == 200  # control: a plain filter answers
    parts.engine.dispose()
