"""API users and their tokens.

A token is 256 random bits, shown once and stored as its SHA-256. A slow hash (argon2, bcrypt) protects
passwords people choose, which can be guessed; a 256-bit random token cannot, and a fast hash lets every
request find its user with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from center.db import User, utcnow
from center.models import Role
from edge.publish.mqtt import valid_id

MAX_USER_NAME = 80  # the login form takes no longer name (center/web/login.py)

TOKEN_BYTES = 32  # 256 bits


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(s: Session, name: str, role: Role, worker: str | None = None) -> str:
    """Create a user; returns the token (not kept anywhere but in the caller's hands)."""
    if not valid_id(name) or len(name) > MAX_USER_NAME:  # as the Users page asks, and as long as a login takes
        raise ValueError(f"user name {name!r}: letters, digits, '.', '_' and '-' only, at most 80, no '..'")
    if role == Role.GRID_WORKER and not worker:
        raise ValueError("a grid worker user needs --worker (their id in the roster)")
    token = "ec_" + secrets.token_urlsafe(TOKEN_BYTES)
    s.add(User(name=name, role=role, worker=worker, token_sha256=digest(token), created_at=utcnow()))
    return token


def user_of(s: Session, token: str) -> User | None:
    if not token or len(token) > 200:
        return None
    return s.scalar(select(User).where(User.token_sha256 == digest(token)))
