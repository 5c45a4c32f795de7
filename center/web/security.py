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
import ipaddress
import secrets
import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from center.auth import MAX_USER_NAME
from center.db import User, utcnow
from center.web.tables import WebLogin, WebSession

COOKIE = "ec_session"
LOGIN_CSRF_COOKIE = "ec_login_csrf"  # before login there is no session: a double-submit token guards the form
DEVICE_COOKIE = "ec_device"  # + "_<user id>": this browser is one its person logged in from (see known_device)
DEVICE_DAYS = 180  # a phone or desk in use every shift stays known; a lost one is forgotten at a password change
SESSION_HOURS = 12  # one shift; a dispatcher logs in again at the next
MIN_PASSWORD = 10  # characters; argon2 makes each guess slow, length makes the space large
MAX_PASSWORD = 256  # longer input is refused before hashing (hashing is the expensive part)

_hasher = PasswordHasher()  # argon2id with the library's recommended (RFC 9106 low-memory) parameters
HASHES_AT_ONCE = 2  # each hash takes 64 MiB and a core's time: more at once hash no faster on the center's two
# cores, and the web's 40 threads hashing together (a burst of logins, a guesser's too) would take 2.5 GiB
_hashing = threading.BoundedSemaphore(HASHES_AT_ONCE)  # the others wait their turn...
HASH_WAIT_S = 5.0  # ...this long at most, then are told to try again: a flood of guesses queued for the hash
# must not hold every one of the web's threads, which every page (the dispatcher's alert list too) shares


class HashingBusy(Exception):
    """Too many logins are being checked at once: asked again in a few seconds, this one may go."""


@contextmanager
def _hash_turn():
    if not _hashing.acquire(timeout=HASH_WAIT_S):
        raise HashingBusy
    try:
        yield
    finally:
        _hashing.release()


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
    with _hashing:
        return _hasher.hash(password)


def set_password(s: Session, user: User, password: str) -> None:
    """Give (or change) a user's password for the pages; their open sessions end."""
    row = s.get(WebLogin, user.id) or WebLogin(user_id=user.id)
    row.password_hash, row.changed_at = hash_password(password), utcnow()
    s.add(row)
    s.execute(delete(WebSession).where(WebSession.user_id == user.id))


def _plausible(name: str) -> bool:
    """Whether a user may have this name at all: longer is no user's, and PostgreSQL refuses NUL in a query."""
    return len(name) <= MAX_USER_NAME and "\x00" not in name


@dataclass(frozen=True)
class Checked:
    """A name and password that matched: the user, and their password's hash as it was when checked."""

    user: User
    password_hash: str


def check_password(readers: sessionmaker, sessions: sessionmaker, name: str, password: str) -> Checked | None:
    """The user whose name and password these are, or None (taking as long either way).

    argon2 runs with no database connection held: it is slow on purpose, and a login must not hold SQLite's
    write lock (every alert being stored waits for it) or one of PostgreSQL's few pooled connections meanwhile."""
    user, stored = None, None
    if _plausible(name):
        with readers() as s:
            user = s.scalar(select(User).where(User.name == name))
            login = s.get(WebLogin, user.id) if user else None
            stored = login.password_hash if login else None
    if len(password) > MAX_PASSWORD:
        return None
    try:
        with _hash_turn():
            _hasher.verify(stored or _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or stored is None:
        return None
    if _hasher.check_needs_rehash(stored):
        try:
            with _hash_turn():
                fresh = _hasher.hash(password)
        except HashingBusy:  # the password was right: rehashed at a later login, not refused for being busy
            return Checked(user, stored)
        with sessions.begin() as s:
            row = s.get(WebLogin, user.id)
            if row is not None and row.password_hash == stored:  # not changed meanwhile
                row.password_hash = stored = fresh
    return Checked(user, stored)


def open_session(s: Session, checked: Checked) -> str | None:
    """A new session for a user whose password was just checked; returns the cookie value (kept nowhere else),
    or None when their password changed (or they were removed) since: a password change ends every session,
    including one a login checked against the old password was about to open."""
    login = s.get(WebLogin, checked.user.id, with_for_update=True)
    if login is None or login.password_hash != checked.password_hash:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    s.execute(delete(WebSession).where(WebSession.expires_at < now))  # expired ones go as new ones come
    s.add(
        WebSession(
            token_sha256=_digest(token),
            user_id=checked.user.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + dt.timedelta(hours=SESSION_HOURS),
        )
    )
    return token


def _device_mac(user: User, login: WebLogin, nonce: str) -> str:
    # Keyed by the password's hash: secret (never sent), shared by every instance through the database, and
    # changed with the password, so a password change forgets every browser the person was known on.
    message = f"{user.id}:{user.name}:{nonce}".encode()
    return hmac.new(login.password_hash.encode(), message, hashlib.sha256).hexdigest()


def device_cookie(s: Session, user: User) -> tuple[str, str]:
    """(name, value) of the cookie that makes this browser known for the user (set at a good login)."""
    nonce = secrets.token_urlsafe(16)
    return f"{DEVICE_COOKIE}_{user.id}", f"{nonce}.{_device_mac(user, s.get(WebLogin, user.id), nonce)}"


def known_device(s: Session, name: str, cookies: dict[str, str]) -> str | None:
    """The browser's own id when the user `name` logged in from it before with their current password, else None.

    The login limit holds a name after a few failures; a guesser who knows a dispatcher's name could hold it
    for good, a few guesses every quarter hour. A browser the person logged in from is counted apart, by its
    own failures, so the person still logs in where they always do (OWASP's "device cookies")."""
    if not _plausible(name):
        return None
    user = s.scalar(select(User).where(User.name == name))
    login = s.get(WebLogin, user.id) if user else None
    value = cookies.get(f"{DEVICE_COOKIE}_{user.id}") if user else None
    if login is None or not value or len(value) > 200:
        return None
    nonce, _, mac = value.partition(".")
    return nonce if hmac.compare_digest(mac.encode(), _device_mac(user, login, nonce).encode()) else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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


IPV6_PREFIX = 64  # a phone or home line gets a whole /64 and may pick any address in it: counted as one


def _network(address: str) -> str:
    """What the login limit counts as one address: an IPv4 address, an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test client): as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)  # ::ffff:10.0.0.1 is 10.0.0.1
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass
class LoginLimiter:
    """Failed logins per address and per name in a sliding window: beyond the limit, logins wait. A browser
    its person logged in from before (`device`, see known_device) is counted by its own failures instead, so
    neither a guesser of the name nor a sweep from the same address keeps the person out.

    Kept in memory per instance: a guesser spread over two instances gets twice the tries, still a handful."""

    max_failures: int = 5  # per name: a person mistyping does not reach it; a guesser is held to a few tries
    max_failures_address: int = 30  # per address: an office behind one NAT still logs in; a sweep of names stops
    window_s: float = 900.0  # 15 minutes
    max_keys: int = 10_000  # names and addresses remembered: a sweep of made-up names cannot fill the memory
    _fails: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _keys(self, address: str, name: str, device: str | None = None) -> list[tuple[str, int]]:
        """The counters an attempt is checked against and counted in, with their limits."""
        if device is not None:
            return [(f"device:{device}", self.max_failures)]
        by_name = f"name:{name[:MAX_USER_NAME]}"
        return [(f"ip:{_network(address)}", self.max_failures_address), (by_name, self.max_failures)]

    def _trim(self, q: deque, now: float) -> None:
        while q and q[0] <= now - self.window_s:
            q.popleft()

    def attempt(self, address: str, name: str, device: str | None = None) -> tuple[float, float | None]:
        """Check and count a login attempt at once: (seconds to wait, None) when held, else (0, its ticket).

        The attempt counts as a failure from the start, so a burst of parallel guesses (each taking argon2's
        time) cannot all pass the check before any of them has failed; a success takes its ticket back."""
        with self._lock:
            wait = self._wait(address, name, device, time.monotonic())
            if wait > 0:
                return wait, None
            now = time.monotonic()
            self._record(address, name, device, now)
            return 0.0, now

    def blocked_for(self, address: str, name: str, device: str | None = None) -> float:
        """Seconds until a login from this address (or known browser) for this name is tried again (0: now)."""
        with self._lock:
            return self._wait(address, name, device, time.monotonic())

    def _wait(self, address: str, name: str, device: str | None, now: float) -> float:
        wait = 0.0
        for key, limit in self._keys(address, name, device):
            q = self._fails.get(key)
            if q is None:
                continue
            self._trim(q, now)
            if len(q) >= limit:
                wait = max(wait, q[0] + self.window_s - now)
        return wait

    def failed(self, address: str, name: str, device: str | None = None) -> None:
        with self._lock:
            self._record(address, name, device, time.monotonic())

    def _record(self, address: str, name: str, device: str | None, now: float) -> None:
        if len(self._fails) >= self.max_keys:
            self._forget(now)
        for key, _ in self._keys(address, name, device):
            self._fails[key].append(now)

    def _forget(self, now: float) -> None:
        """Drop what is out of the window; if still full, the keys whose last failure is oldest."""
        for key in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window_s]:
            del self._fails[key]
        if len(self._fails) >= self.max_keys:
            by_age = sorted(self._fails, key=lambda k: self._fails[k][-1])
            for key in by_age[: len(by_age) - self.max_keys // 2]:
                del self._fails[key]

    def unchecked(self, address: str, name: str, ticket: float | None, device: str | None = None) -> None:
        """An attempt whose password was never checked (the hash was busy): its ticket is taken back from every
        count it was put in, so a person trying again during a flood of guesses is not locked out by it."""
        with self._lock:
            for key, _ in self._keys(address, name, device):
                self._take_back(key, ticket)

    def _take_back(self, key: str, ticket: float | None) -> None:
        q = self._fails.get(key)
        if ticket is not None and q is not None and ticket in q:
            q.remove(ticket)

    def succeeded(self, address: str, name: str, ticket: float | None = None, device: str | None = None) -> None:
        """A good login: the name's (and the browser's) failures are forgotten, and the address's count loses
        this attempt."""
        with self._lock:
            (by_address, _), (by_name, _) = self._keys(address, name)
            self._fails.pop(by_name, None)
            if device is not None:
                self._fails.pop(self._keys(address, name, device)[0][0], None)
            self._take_back(by_address, ticket)
