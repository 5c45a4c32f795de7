"""The pages' security without a browser: logins, sessions, CSRF, roles, the login rate limit, headers, the
audit log, and clips served with range requests."""

from __future__ import annotations

import datetime as dt
import socket
import threading

import pytest
import uvicorn
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from fastapi.testclient import TestClient
from parts import alert, make_parts, send
from sqlalchemy import select
from support.servers import free_port, wait_for
from web_fixtures import add_people, csrf_of, logged_in, password_of, web_app

from center.db import Audit, Case, Event, Evidence, User, utcnow
from center.models import Trust
from center.web.security import DEVICE_COOKIE, set_password
from center.web.tables import WebLogin


@pytest.fixture
def site(tmp_path):
    parts = make_parts(tmp_path, f"sqlite:///{tmp_path / 'center.db'}")
    add_people(parts.sessions)
    yield parts, web_app(parts)
    parts.engine.dispose()


def _case_of(parts, building: str) -> int:
    with parts.sessions() as s:
        return s.scalar(select(Case.id).where(Case.building == building))


def test_pages_need_a_login_and_send_the_browser_to_it(site):
    _, app = site
    client = TestClient(app, base_url="https://testserver")
    r = client.get("/alerts?state=new", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/alerts%3Fstate%3Dnew"
    assert logged_in(app, "disp").get("/alerts").status_code == 200  # control: with a login it opens


def test_passwords_are_kept_as_argon2id_hashes(site):
    parts, _ = site
    with parts.sessions() as s:
        hashes = [w.password_hash for w in s.scalars(select(WebLogin))]
    assert len(hashes) == 4 and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(password_of(n) in h for n, h in zip(["admin", "disp", "zhang", "chen"], hashes, strict=True))


def test_the_session_cookie_is_secure_httponly_and_samesite(site):
    _, app = site
    client = TestClient(app, base_url="https://testserver")
    r = client.get("/login")
    r = client.post(
        "/login",
        data={"name": "disp", "password": password_of("disp"), "csrf": csrf_of(r.text)},
        follow_redirects=False,
    )
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("ec_session="))
    assert all(flag in cookie.lower() for flag in ("secure", "httponly", "samesite=lax"))


def test_a_wrong_password_is_refused_and_logged(site):
    parts, app = site
    client = TestClient(app, base_url="https://testserver")
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"name": "disp", "password": "wrong-password!", "csrf": token})
    assert r.status_code == 401 and "ec_session" not in client.cookies
    with parts.sessions() as s:
        assert [a.action for a in s.scalars(select(Audit).where(Audit.actor == "disp"))] == ["login_failed"]


def test_logins_after_five_failures_wait_even_with_the_right_password(site):
    _, app = site
    client = TestClient(app, base_url="https://testserver")
    token = csrf_of(client.get("/login").text)
    for _ in range(5):
        assert (
            client.post("/login", data={"name": "zhang", "password": "guess-guess", "csrf": token}).status_code
            == 401
        )
    r = client.post("/login", data={"name": "zhang", "password": password_of("zhang"), "csrf": token})
    assert r.status_code == 429
    assert logged_in(app, "chen").get("/alerts").status_code == 200  # control: another name is let in


def test_a_login_told_to_wait_says_for_how_long_in_retry_after(site):
    _, app = site
    client = TestClient(app, base_url="https://testserver")
    token = csrf_of(client.get("/login").text)
    first = client.post("/login", data={"name": "zhang", "password": "guess-guess", "csrf": token})
    assert first.status_code == 401 and "Retry-After" not in first.headers  # control: a plain failure
    for _ in range(4):
        client.post("/login", data={"name": "zhang", "password": "guess-guess", "csrf": token})
    r = client.post("/login", data={"name": "zhang", "password": password_of("zhang"), "csrf": token})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_a_login_form_without_its_csrf_token_is_refused(site):
    _, app = site
    client = TestClient(app, base_url="https://testserver")
    client.get("/login")
    r = client.post("/login", data={"name": "disp", "password": password_of("disp")})
    assert r.status_code == 403 and "ec_session" not in client.cookies


def test_an_action_form_without_the_csrf_token_is_refused_and_changes_nothing(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-csrf", level="suspected"))
    case = _case_of(parts, "b3")
    client = logged_in(app, "disp")
    r = client.post(f"/alerts/{case}/act", data={"action": "confirm"})
    assert r.status_code == 403
    r = client.post(f"/alerts/{case}/act", data={"action": "confirm", "csrf": "forged"})
    assert r.status_code == 403
    with parts.sessions() as s:
        assert s.get(Case, case).state == "new"
    token = csrf_of(client.get(f"/alerts/{case}").text)
    r = client.post(f"/alerts/{case}/act", data={"action": "confirm", "csrf": token})  # control: with it, it works
    assert r.status_code == 200
    with parts.sessions() as s:
        assert s.get(Case, case).state == "dispatched"


def test_a_grid_worker_is_forbidden_another_grids_alert_and_sees_only_their_buildings(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-b3"))
    send(parts, alert("garden5", "south", "ev-b5"))
    b3, b5 = _case_of(parts, "b3"), _case_of(parts, "b5")
    zhang = logged_in(app, "zhang")
    assert zhang.get(f"/alerts/{b5}").status_code == 403
    assert zhang.get(f"/alerts/{b5}/elevation.svg").status_code == 403
    assert zhang.get(f"/alerts/{b3}").status_code == 200
    listed = zhang.get("/alerts").text
    assert f'data-case="{b3}"' in listed and f'data-case="{b5}"' not in listed
    assert zhang.get("/nodes").status_code == 403  # staff pages too
    token = csrf_of(zhang.get(f"/alerts/{b3}").text)
    assert zhang.post(f"/alerts/{b5}/act", data={"action": "acknowledge", "csrf": token}).status_code == 403


def test_every_page_carries_the_security_headers_and_no_inline_script(site):
    _, app = site
    client = logged_in(app, "disp")
    for path in ("/login", "/alerts"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in r.text and " on" + "click=" not in r.text


def test_a_clip_is_served_in_ranges_so_the_player_can_seek(site, tmp_path):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-clip"))
    data = bytes(range(256)) * 40
    with parts.sessions.begin() as s:
        ev = s.scalar(select(Event).where(Event.event_id == "ev-clip"))
        rel = parts.files.write(ev.node, ev.event_id, "clip-abc.mp4", data)
        s.add(
            Evidence(
                event_pk=ev.id,
                kind="clip",
                path=rel,
                sha256="ab" * 32,
                bytes=len(data),
                trust=Trust.UNSIGNED,
                received_at=utcnow(),
            )
        )
    with parts.sessions() as s:
        clip = s.scalar(select(Evidence.id).where(Evidence.kind == "clip"))
    client = logged_in(app, "disp")
    r = client.get(f"/evidence/{clip}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert client.get(f"/evidence/{clip}").content == data
    assert logged_in(app, "chen").get(f"/evidence/{clip}").status_code == 403  # not chen's building


def test_views_and_changes_are_in_the_audit_log(site):
    parts, app = site
    send(parts, alert("garden3-east", "east", "ev-audit"))
    case = _case_of(parts, "b3")
    client = logged_in(app, "zhang")
    token = csrf_of(client.get(f"/alerts/{case}").text)
    client.post(f"/alerts/{case}/act", data={"action": "acknowledge", "csrf": token})
    with parts.sessions() as s:
        got = [(a.actor, a.action, a.target) for a in s.scalars(select(Audit).order_by(Audit.id))]
    assert ("zhang", "view", f"case:{case}") in got and ("zhang", "acknowledge", f"case:{case}") in got
    shown = logged_in(app, "admin").get("/users").text  # the log on the users page, in the viewer's language
    assert '<td data-action="acknowledge">接单</td>' in shown and '<td data-action="view">查看</td>' in shown


def test_the_audit_log_on_the_users_page_gives_times_in_the_office_s_zone(site):
    parts, app = site
    with parts.sessions.begin() as s:
        at = dt.datetime(2026, 5, 10, 2, 30, tzinfo=dt.UTC)
        s.add(Audit(at=at, actor="disp", action="export", target="r:5"))
    shown = logged_in(app, "admin").get("/users").text
    assert "<td>2026-05-10 10:30:00</td><td>disp</td>" in shown  # 02:30 UTC is 10:30 in Shanghai
    assert "<td>2026-05-10 02:30:00</td>" not in shown


def test_the_login_limiter_forgets_old_names_when_a_sweep_fills_it():
    from center.web.security import LoginLimiter

    limiter = LoginLimiter(max_keys=100)
    for i in range(500):  # made-up names from many addresses
        limiter.failed(f"10.1.{i // 250}.{i % 250}", f"nobody{i}")
    assert len(limiter._fails) <= 100
    assert limiter.blocked_for("10.9.9.9", "nobody499") == 0  # one failure: not held
    limiter2 = LoginLimiter(max_keys=100)
    for _ in range(5):
        limiter2.failed("10.0.0.1", "zhang")
    assert limiter2.blocked_for("10.0.0.2", "zhang") > 0  # control: five failures of one name are held


def test_a_burst_of_parallel_guesses_gets_no_more_tries_than_guesses_one_after_another(site):
    _, app = site
    clients = [TestClient(app, base_url="https://testserver") for _ in range(12)]
    tokens = [csrf_of(c.get("/login").text) for c in clients]
    start = threading.Barrier(len(clients))
    answers: list[int] = []

    def guess(client, token):
        start.wait()
        r = client.post("/login", data={"name": "zhang", "password": "guess-guess", "csrf": token})
        answers.append(r.status_code)

    threads = [threading.Thread(target=guess, args=ct) for ct in zip(clients, tokens, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 12 and set(answers) <= {401, 429}
    assert answers.count(401) <= 5  # the limit holds however the guesses are timed
    assert logged_in(app, "chen").get("/alerts").status_code == 200  # control: another name is let in


def test_a_body_larger_than_any_form_is_refused_before_a_route_reads_it(site):
    parts, app = site
    from center.web.app import MAX_BODY

    stranger = TestClient(app, base_url="https://testserver")  # not logged in: forms are parsed before that check
    form = {"content-type": "multipart/form-data; boundary=x"}
    assert stranger.post("/alerts/1/act", content=b"x" * (MAX_BODY + 1), headers=form).status_code == 413
    chunks = (b" " * (1 << 20) for _ in range(MAX_BODY // (1 << 20) + 2))  # no Content-Length: counted as it comes
    r = stranger.post("/api/cases/1/confirm", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    send(parts, alert("garden3-east", "east", "ev-big"))  # control: a worker's phone photo of a few MB goes in
    case = _case_of(parts, "b3")
    zhang = logged_in(app, "zhang")
    token = csrf_of(zhang.get(f"/alerts/{case}").text)
    photo = {"photo": ("p.jpg", b"\xff\xd8\xff\xe0" + b"x" * (4 << 20), "image/jpeg")}
    r = zhang.post(f"/alerts/{case}/act", data={"action": "check", "verdict": "fell", "csrf": token}, files=photo)
    assert r.status_code == 200 and 'class="photo"' in r.text


def test_one_login_opens_only_so_many_live_lists_and_a_closed_one_gives_its_place_back(site):
    _, app = site
    from center.web.app import MAX_STREAMS_PER_USER

    cookies = {name: logged_in(app, name).cookies.get("ec_session") for name in ("disp", "zhang")}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 30)

    def stream(name: str) -> tuple[socket.socket, int]:
        """A live list's event stream over a real connection, and the status it was answered with."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = f"GET /alerts/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ec_session={cookies[name]}\r\n\r\n"
        sock.sendall(head.encode())
        return sock, int(sock.recv(64).split(b" ")[1])

    def status_of_one_more(name: str) -> int:
        sock, status = stream(name)
        sock.close()
        return status

    opened: list[socket.socket] = []
    try:
        for _ in range(MAX_STREAMS_PER_USER):
            sock, status = stream("disp")
            opened.append(sock)
            assert status == 200
        assert status_of_one_more("disp") == 429
        assert status_of_one_more("zhang") == 200  # control: another person's lists are their own
        opened.pop().close()  # the browser tab closed: its place is given back
        assert wait_for(lambda: status_of_one_more("disp") == 200, 30)
    finally:
        for sock in opened:
            sock.close()
        server.should_exit = True
        thread.join(15)


def _try_login(client: TestClient, name: str, password: str):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf": token}, follow_redirects=False)


def test_a_guesser_holding_a_name_does_not_lock_its_person_out_of_the_browser_they_logged_in_from(site):
    _, app = site
    own = logged_in(app, "zhang")  # zhang's phone: logged in there before, then out
    own.post("/logout", data={"csrf": csrf_of(own.get("/alerts").text)})
    guesser = TestClient(app, base_url="https://testserver")
    for _ in range(5):
        assert _try_login(guesser, "zhang", "guess-guess").status_code == 401
    assert _try_login(guesser, "zhang", password_of("zhang")).status_code == 429  # control: the guesser waits
    r = _try_login(own, "zhang", password_of("zhang"))
    assert r.status_code == 303 and r.headers["location"] == "/alerts"


def test_a_known_browser_is_held_after_its_own_failures_and_a_forged_or_stale_one_is_a_stranger(site):
    parts, app = site
    own = logged_in(app, "zhang")
    for _ in range(5):
        assert _try_login(own, "zhang", "guess-guess").status_code == 401
    assert _try_login(own, "zhang", password_of("zhang")).status_code == 429  # its own guesses count
    with parts.sessions() as s:
        zhang = s.scalar(select(User).where(User.name == "zhang"))
    for _ in range(5):  # a stranger's guesses hold the name
        stranger = TestClient(app, base_url="https://testserver")
        assert _try_login(stranger, "zhang", "guess-guess").status_code == 401
    forged = TestClient(app, base_url="https://testserver")
    forged.cookies.set(f"{DEVICE_COOKIE}_{zhang.id}", "made-up.0123456789abcdef")
    assert _try_login(forged, "zhang", password_of("zhang")).status_code == 429  # not known: the name waits
    chen = logged_in(app, "chen")
    with parts.sessions.begin() as s:  # chen's password changes: the browser is known no more
        set_password(s, s.scalar(select(User).where(User.name == "chen")), "a-new-password-for-chen")
    for _ in range(5):
        assert _try_login(TestClient(app, base_url="https://testserver"), "chen", "guess-guess").status_code == 401
    assert _try_login(chen, "chen", "a-new-password-for-chen").status_code == 429


def test_the_limiter_holds_a_known_browser_by_its_own_failures_not_by_its_address_or_name():
    from center.web.security import LoginLimiter

    limiter = LoginLimiter()
    for i in range(30):  # a sweep of names from the office's one address
        limiter.failed("10.0.0.1", f"nobody{i}")
    for _ in range(5):
        limiter.failed("10.0.0.2", "zhang")
    assert limiter.blocked_for("10.0.0.1", "chen") > 0  # control: a stranger there waits
    assert limiter.blocked_for("10.0.0.1", "zhang", device="phone-1") == 0
    for _ in range(5):
        limiter.failed("10.0.0.1", "zhang", device="phone-1")
    assert limiter.blocked_for("10.0.0.3", "zhang", device="phone-1") > 0
    assert limiter.blocked_for("10.0.0.3", "zhang", device="phone-2") == 0


def test_a_login_holds_no_database_connection_while_its_password_is_hashed(site, monkeypatch):
    """argon2 is slow on purpose: a login holding SQLite's write lock (or one of PostgreSQL's few pooled
    connections) while it hashes would hold up every alert being stored meanwhile."""
    from center.web import security

    parts, app = site
    real, held = security._hasher, []

    class Watched:
        """The real hasher, noting how many database connections are in use while it works."""

        def verify(self, stored, password):
            held.append(parts.engine.pool.checkedout())
            return real.verify(stored, password)

        def check_needs_rehash(self, stored):
            return real.check_needs_rehash(stored)

    monkeypatch.setattr(security, "_hasher", Watched())
    assert logged_in(app, "disp").get("/alerts").status_code == 200  # control: the login goes through
    assert _try_login(TestClient(app, base_url="https://testserver"), "disp", "wrong-password!").status_code == 401
    assert (
        _try_login(TestClient(app, base_url="https://testserver"), "nobody", "wrong-password!").status_code == 401
    )
    assert held == [0, 0, 0]


def test_a_password_changed_while_a_login_checks_the_old_one_opens_no_session(site, monkeypatch):
    from center.web import security

    parts, app = site
    real = security._hasher

    class Changing:
        """The real hasher; while it checks the old password, an admin changes it (edge-center user password)."""

        def verify(self, stored, password):
            with parts.sessions.begin() as s:
                set_password(s, s.scalar(select(User).where(User.name == "disp")), "the-new-password-of-disp")
            return real.verify(stored, password)

        def check_needs_rehash(self, stored):
            return real.check_needs_rehash(stored)

        def hash(self, password):
            return real.hash(password)

    monkeypatch.setattr(security, "_hasher", Changing())
    client = TestClient(app, base_url="https://testserver")
    assert _try_login(client, "disp", password_of("disp")).status_code == 401
    assert "ec_session" not in client.cookies
    monkeypatch.setattr(security, "_hasher", real)
    assert _try_login(client, "disp", "the-new-password-of-disp").status_code == 303  # control: the new one works


LOOK_S = 2.0  # how long the test watches for a hash beyond the bound: where there is none, one shows at once


def test_parallel_logins_hash_only_a_few_passwords_at_once(site, monkeypatch):
    """argon2 takes 64 MiB a hash: the web's 40 threads hashing at once would take 2.5 GiB from the center."""
    from argon2.exceptions import VerifyMismatchError

    from center.db import make_sessions
    from center.web import security

    parts, _ = site
    readers = make_sessions(parts.engine, readonly=True)
    inside, most = 0, 0
    watch = threading.Condition()
    release = threading.Event()

    class Held:
        """A hasher whose every verification waits until the test lets it go, counting those under way."""

        def verify(self, _stored, _password):
            nonlocal inside, most
            with watch:
                inside += 1
                most = max(most, inside)
                watch.notify_all()
            release.wait()
            with watch:
                inside -= 1
            raise VerifyMismatchError

    monkeypatch.setattr(security, "_hasher", Held())
    answers: list[object] = []
    bound = security.HASHES_AT_ONCE

    def login(i: int) -> None:
        answers.append(security.check_password(readers, parts.sessions, f"nobody{i}", "guess-guess-guess"))

    threads = [threading.Thread(target=login, args=(i,), daemon=True) for i in range(3 * bound)]
    try:
        for t in threads:
            t.start()
        with watch:
            assert watch.wait_for(lambda: inside >= bound, 60)  # control: as many as allowed run at once
            watch.wait_for(lambda: inside > bound, LOOK_S)
            seen = most
    finally:
        release.set()
    for t in threads:
        t.join(60)
    assert seen == bound
    assert answers == [None] * len(threads)  # the others waited their turn, then were answered


def test_a_login_that_waits_too_long_for_its_hash_is_told_to_try_again_not_held(site, monkeypatch):
    """A flood of guesses queued for the hash must not hold every web thread: past HASH_WAIT_S, 503."""
    from center.web import security

    _, app = site
    monkeypatch.setattr(security, "HASH_WAIT_S", 0.2)
    for _ in range(security.HASHES_AT_ONCE):  # every turn taken, as by guesses being hashed
        assert security._hashing.acquire(timeout=1)
    try:  # more tries than the name's limit of failures: a 503 checked no password, and is no failure
        tries = [_try_login(TestClient(app, base_url="https://testserver"), "disp", "x" * 12) for _ in range(7)]
    finally:
        for _ in range(security.HASHES_AT_ONCE):
            security._hashing.release()
    assert all(r.status_code == 503 and r.headers.get("retry-after") for r in tries)
    assert not any("ec_session" in r.cookies for r in tries)
    ok = _try_login(TestClient(app, base_url="https://testserver"), "disp", password_of("disp"))
    assert ok.status_code == 303  # the control: with a turn free, the same name logs in


def test_login_pages_open_in_two_tabs_both_log_in(site):
    """Every open alert list of a dispatcher (a wall screen, a desk tab) reloads to the login page when the
    session ends: the form of whichever they type into logs them in, before the other's and after it."""
    _, app = site
    client = TestClient(app, base_url="https://testserver")
    tabs = [csrf_of(client.get("/login").text) for _ in range(2)]
    for token in tabs:
        r = client.post(
            "/login", data={"name": "disp", "password": password_of("disp"), "csrf": token}, follow_redirects=False
        )
        assert r.status_code == 303 and r.headers["location"] == "/alerts"
    forged = client.post("/login", data={"name": "disp", "password": password_of("disp"), "csrf": "forged"})
    assert forged.status_code == 403  # control: a form from elsewhere is still refused


def test_the_login_limit_counts_an_ipv6_network_as_one_address():
    """A phone or home line gets a whole IPv6 /64 and may pick any address in it: a sweep of names from fresh
    addresses of one /64 is held like one from one address."""
    from center.web.security import LoginLimiter

    limiter = LoginLimiter()
    for i in range(30):
        limiter.failed(f"2001:db8:1:2::{i + 1:x}", f"nobody{i}")
    assert limiter.blocked_for("2001:db8:1:2:ffff::99", "chen") > 0
    assert limiter.blocked_for("2001:db8:1:3::1", "chen") == 0  # control: the next /64 is someone else
    for i in range(29):
        limiter.failed(f"10.0.0.{i + 1}", f"nobody{i}")
    assert limiter.blocked_for("10.0.0.200", "chen") == 0  # control: IPv4 addresses are each their own
