"""Logins for the pages: argon2id password hashes, server-side sessions, CSRF tokens, a login rate limit,
and the security headers every page is sent with.

The session cookie holds 256 random bits; the database keeps only their SHA-256 (as API tokens are kept), so
a copy of the database logs nobody in, and logging out or removing a user ends the session at once on every
instance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from center.db import User, utcnow
from center.web.tables import WebLogin, WebSession

COOKIE = "ec_session"
LOGIN_CSRF_COOKIE = "ec_login_csrf"  # before login there is no session: a double-submit token guards the form
SESSION_HOURS = 12  # one shift; a dispatcher logs in again at the next
MIN_PASSWORD = 10  # characters; argon2 makes each guess slow, length makes the space large
MAX_PASSWORD = 256  # longer input is refused before hashing (hashing is the expensive part)

_hasher = PasswordHasher()  # argon2id with the library's recommended (RFC 9106 low-memory) parameters
_DUMMY = _hasher.hash("not a password of anyone")  # verified against when the name is unknown: same time taken

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",  # honoured by browsers only over the HTTPS proxy
}


class WeakPassword(ValueError):
    """A password too short or too long to be accepted."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"a password may have at most {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def set_password(s: Session, user: User, password: str) -> None:
    """Give (or change) a user's password for the pages; their open sessions end."""
    row = s.get(WebLogin, user.id) or WebLogin(user_id=user.id)
    row.password_hash, row.changed_at = hash_password(password), utcnow()
    s.add(row)
    s.execute(delete(WebSession).where(WebSession.user_id == user.id))


def check_password(s: Session, name: str, password: str) -> User | None:
    """The user whose name and password these are, or None (taking as long either way)."""
    plausible = len(name) <= 80 and "\x00" not in name  # no such user; and PostgreSQL refuses NUL in a query
    user = s.scalar(select(User).where(User.name == name)) if plausible else None
    login = s.get(WebLogin, user.id) if user else None
    if len(password) > MAX_PASSWORD:
        return None
    try:
        _hasher.verify(login.password_hash if login else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if login is None:
        return None
    if _hasher.check_needs_rehash(login.password_hash):
        login.password_hash = _hasher.hash(password)
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(s: Session, user: User) -> str:
    """A new session for the user; returns the cookie value (kept nowhere else)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    s.execute(delete(WebSession).where(WebSession.expires_at < now))  # expired ones go as new ones come
    s.add(
        WebSession(
            token_sha256=_digest(token),
            user_id=user.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + dt.timedelta(hours=SESSION_HOURS),
        )
    )
    return token


def session_of(s: Session, token: str | None) -> tuple[WebSession, User] | None:
    """The live session of a cookie and its user, or None."""
    if not token or len(token) > 100:
        return None
    row = s.get(WebSession, _digest(token))
    if row is None or row.expires_at < utcnow():
        return None
    user = s.get(User, row.user_id)
    return (row, user) if user else None


def close_session(s: Session, token: str | None) -> None:
    if token and len(token) <= 100:
        s.execute(delete(WebSession).where(WebSession.token_sha256 == _digest(token)))


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token; an absent one never matches."""
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


@dataclass
class LoginLimiter:
    """Failed logins per address and per name in a sliding window: beyond the limit, logins wait.

    Kept in memory per instance: a guesser spread over two instances gets twice the tries, still a handful."""

    max_failures: int = 5  # per name: a person mistyping does not reach it; a guesser is held to a few tries
    max_failures_address: int = 30  # per address: an office behind one NAT still logs in; a sweep of names stops
    window_s: float = 900.0  # 15 minutes
    max_keys: int = 10_000  # names and addresses remembered: a sweep of made-up names cannot fill the memory
    _fails: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _keys(self, address: str, name: str) -> tuple[str, str]:
        return f"ip:{address}", f"name:{name[:80]}"

    def _trim(self, q: deque, now: float) -> None:
        while q and q[0] <= now - self.window_s:
            q.popleft()

    def attempt(self, address: str, name: str) -> tuple[float, float | None]:
        """Check and count a login attempt at once: (seconds to wait, None) when held, else (0, its ticket).

        The attempt counts as a failure from the start, so a burst of parallel guesses (each taking argon2's
        time) cannot all pass the check before any of them has failed; a success takes its ticket back."""
        with self._lock:
            wait = self._wait(address, name, time.monotonic())
            if wait > 0:
                return wait, None
            now = time.monotonic()
            self._record(address, name, now)
            return 0.0, now

    def blocked_for(self, address: str, name: str) -> float:
        """Seconds until a login from this address for this name is tried again (0: now)."""
        with self._lock:
            return self._wait(address, name, time.monotonic())

    def _wait(self, address: str, name: str, now: float) -> float:
        wait = 0.0
        for key, limit in zip(
            self._keys(address, name), (self.max_failures_address, self.max_failures), strict=True
        ):
            q = self._fails.get(key)
            if q is None:
                continue
            self._trim(q, now)
            if len(q) >= limit:
                wait = max(wait, q[0] + self.window_s - now)
        return wait

    def failed(self, address: str, name: str) -> None:
        with self._lock:
            self._record(address, name, time.monotonic())

    def _record(self, address: str, name: str, now: float) -> None:
        if len(self._fails) >= self.max_keys:
            self._forget(now)
        for key in self._keys(address, name):
            self._fails[key].append(now)

    def _forget(self, now: float) -> None:
        """Drop what is out of the window; if still full, the keys whose last failure is oldest."""
        for key in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window_s]:
            del self._fails[key]
        if len(self._fails) >= self.max_keys:
            by_age = sorted(self._fails, key=lambda k: self._fails[k][-1])
            for key in by_age[: len(by_age) - self.max_keys // 2]:
                del self._fails[key]

    def succeeded(self, address: str, name: str, ticket: float | None = None) -> None:
        """A good login: the name's failures are forgotten, and the address's count loses this attempt."""
        with self._lock:
            by_address, by_name = self._keys(address, name)
            self._fails.pop(by_name, None)
            q = self._fails.get(by_address)
            if ticket is not None and q is not None and ticket in q:
                q.remove(ticket)
