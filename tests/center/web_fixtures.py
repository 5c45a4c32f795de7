"""Helpers of the web pages' tests: users with passwords, a logged-in client, the CSRF token of a page."""

from __future__ import annotations

import functools
import re

from fastapi.testclient import TestClient
from parts import context_of

from center.api import create_app
from center.auth import add_user
from center.db import User, utcnow
from center.models import Role
from center.web.security import hash_password
from center.web.tables import WebLogin

# name -> (role, roster worker id); zhang is of grid g1 (building b3), chen of grid g2 (building b5)
PEOPLE = {
    "admin": (Role.ADMIN, None),
    "disp": (Role.DISPATCHER, None),
    "zhang": (Role.GRID_WORKER, "zhang"),
    "chen": (Role.GRID_WORKER, "chen"),
}


def password_of(name: str) -> str:
    return f"pw-{name}-long-enough"


@functools.cache
def _hash_of(name: str) -> str:
    """argon2 is slow on purpose: each test user's hash is made once per test session."""
    return hash_password(password_of(name))


def add_people(sessions) -> None:
    """Every user of PEOPLE, with their password for the pages (as set_password keeps it)."""
    with sessions.begin() as s:
        for name, (role, worker) in PEOPLE.items():
            add_user(s, name, role, worker)
            s.flush()
            user = s.query(User).filter_by(name=name).one()
            s.add(WebLogin(user_id=user.id, password_hash=_hash_of(name), changed_at=utcnow()))


def web_app(parts):
    return create_app(context_of(parts))


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "the page has no form with a CSRF token"
    return m.group(1)


def logged_in(app, name: str) -> TestClient:
    """A client (over https, as behind the proxy: the cookies are Secure) logged in as `name`."""
    client = TestClient(app, base_url="https://testserver")
    r = client.get("/login")
    r = client.post(
        "/login", data={"name": name, "password": password_of(name), "csrf": csrf_of(r.text), "next": "/alerts"}
    )
    assert r.status_code == 200 and r.url.path == "/alerts", r.text[:500]
    return client
