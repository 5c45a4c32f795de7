"""The web pages' own tables: password logins and browser sessions (migration 0003, which also made the audit
log: that is center.db.Audit, as the API writes to it too)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
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
