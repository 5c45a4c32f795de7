"""The web pages' own tables: password logins, browser sessions and the audit log (migration 0003)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from center.db import Base


class WebLogin(Base):
    """A user's password for the pages, as an argon2id hash (the API keeps its bearer tokens)."""

    __tablename__ = "web_logins"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[dt.datetime]


class WebSession(Base):
    """A logged-in browser: the cookie's SHA-256 (the cookie itself is never stored) and its CSRF token."""

    __tablename__ = "web_sessions"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Audit(Base):
    """Who viewed, exported or changed what, and when (logins too, failed ones included)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict | None]
    address: Mapped[str | None] = mapped_column(String(64))
