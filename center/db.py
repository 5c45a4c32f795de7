"""The database: SQLAlchemy 2 models, the engine (SQLite in WAL mode by default, PostgreSQL by URL).

The schema is created and changed only by Alembic migrations (center/alembic, `edge-center db upgrade`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

READONLY = "center_readonly"  # execution option of reading sessions


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database")
            value = value.astimezone(dt.UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UtcDateTime, dict: JSON}


class Node(Base):
    """A camera node: its registered key (None: known only from its messages) and its health."""

    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    key_id: Mapped[str | None] = mapped_column(String(16))
    registered_at: Mapped[dt.datetime | None]
    available: Mapped[str | None] = mapped_column(String(16))
    last_seen: Mapped[dt.datetime | None]
    stats: Mapped[dict | None]
    stats_at: Mapped[dt.datetime | None]
    storage: Mapped[dict | None]  # the node's latest storage level message (docs/schemas/storage.schema.json)
    # The center's clock minus the node's, in seconds, as its stats messages (sent, not retained) showed it: the
    # least of them since clock_offset_at (center.clock.keep_clock_sample); what a wrong clock is corrected by.
    clock_offset_s: Mapped[float | None] = mapped_column(Float)
    clock_offset_at: Mapped[dt.datetime | None]


class Camera(Base):
    __tablename__ = "cameras"
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    camera: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[dict | None]
    updated_at: Mapped[dt.datetime]
    # The camera's problems still raised ({"active": [...], "at_s": node time of that message, None once the
    # camera started afresh}), from the latest camera problem message; None until one came.
    problems: Mapped[dict | None]


class CameraProblem(Base):
    """One camera problem message (raised or cleared): the history an operator reads, one row per msg_id."""

    __tablename__ = "camera_problems"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(128), unique=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    camera: Mapped[str] = mapped_column(String(128))
    episode: Mapped[str] = mapped_column(String(128))  # the raised message and its cleared one share it
    problem: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime | None]  # the node's clock
    reason: Mapped[str] = mapped_column(String(500))
    body: Mapped[dict]
    received_at: Mapped[dt.datetime] = mapped_column(index=True)


class Case(Base):
    """One throw: the unit that is dispatched and closed. Alerts of several cameras may share one."""

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    level: Mapped[str] = mapped_column(String(16))
    building: Mapped[str | None] = mapped_column(String(64), index=True)
    floor: Mapped[int | None]
    alert_at: Mapped[dt.datetime] = mapped_column(index=True)  # node's clock: when the fall was decided
    created_at: Mapped[dt.datetime]
    assignee: Mapped[str | None] = mapped_column(String(80))  # 'worker:<id>', 'leader:<grid>', 'office'
    dispatched_at: Mapped[dt.datetime | None]
    escalation: Mapped[int] = mapped_column(Integer, default=0)  # 0 worker, 1 leader, 2 office
    escalate_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))
    acknowledged_at: Mapped[dt.datetime | None]
    checked_by: Mapped[str | None] = mapped_column(String(80))
    checked_at: Mapped[dt.datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolved_at: Mapped[dt.datetime | None]
    verdict: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    events: Mapped[list[Event]] = relationship(back_populates="case", order_by="Event.id")
    history: Mapped[list[History]] = relationship(order_by="History.id")


class Event(Base):
    """One node's alert (its event id), with the latest of its messages folded in."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("node", "event_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(128))
    camera: Mapped[str | None] = mapped_column(String(128))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    level: Mapped[str | None] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)
    floor: Mapped[int | None]
    alert_at: Mapped[dt.datetime | None]
    ended: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[dict]  # the 'new' message (or the first one seen), as received
    # What the node last said of its evidence hold (events/<id>/hold/state): True held, False not, None never
    # asked or not answered yet; and when the center heard it.
    node_hold: Mapped[bool | None]
    node_hold_at: Mapped[dt.datetime | None]
    first_queued_at: Mapped[dt.datetime | None]  # node's queued_utc of the first message: for latency
    received_at: Mapped[dt.datetime]
    node_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    case: Mapped[Case | None] = relationship(back_populates="events")
    evidence: Mapped[list[Evidence]] = relationship(order_by="Evidence.id")


class Message(Base):
    """Every distinct event message by msg_id: the unique key is what drops QoS 1 duplicates."""

    __tablename__ = "messages"
    msg_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    node: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict]
    received_at: Mapped[dt.datetime]
    instance: Mapped[str] = mapped_column(String(64))


class Evidence(Base):
    """A file of an event (still, clip, original, manifest, on-site photo), kept under data_dir."""

    __tablename__ = "evidence"
    __table_args__ = (UniqueConstraint("event_pk", "kind", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_pk: Mapped[int | None] = mapped_column(ForeignKey("events.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)  # photos
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))  # relative to data_dir
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    trust: Mapped[str] = mapped_column(String(16))
    trust_note: Mapped[str | None] = mapped_column(String(300))
    received_at: Mapped[dt.datetime]
    # When center.retention deleted the file (or found it already gone); None: on disk, or due to be swept. A mark
    # of its own, not a time compared with received_at: a row stamped before a sweep but committed after it is
    # still None, and goes at the next round. The same file received again is None again (center.ingest).
    swept_at: Mapped[dt.datetime | None]


class Chunk(Base):
    """A received piece of a file, held until the file is complete: chunks of one file may reach different
    instances of the shared subscription, so they meet in the database, not in memory."""

    __tablename__ = "chunks"
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    file: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int]
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[dt.datetime] = mapped_column(index=True)


class History(Base):
    """Who did what to a case, and when."""

    __tablename__ = "history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(80))
    at: Mapped[dt.datetime]
    detail: Mapped[dict | None]


class Job(Base):
    """A notice to send (webhook, WeCom, email) or a verdict to publish to a node: a durable queue."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "state", "due_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # webhook | wecom | email | feedback | hold | release
    target: Mapped[str] = mapped_column(String(300))  # which webhook / address / node
    payload: Mapped[dict]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime]
    lease_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime]
    done_at: Mapped[dt.datetime | None]


class User(Base):
    """An API user; the token is stored as its SHA-256 (see center/auth.py for why not a slow hash)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(64))  # roster worker id of a grid worker
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]


class Audit(Base):
    """Who viewed, exported or changed what, and when (logins too, failed ones included)."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_action_target", "action", "target"),)  # was this case exported?
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict | None]
    address: Mapped[str | None] = mapped_column(String(64))


def write_audit(
    s: Session, actor: str, action: str, target: str, detail: dict | None = None, address: str | None = None
) -> None:
    """One line of the audit log, in the caller's transaction (a change and its record commit together)."""
    s.add(Audit(at=utcnow(), actor=actor, action=action, target=target[:200], detail=detail, address=address))


def make_engine(url: str, sqlite_busy_s: float = 30.0) -> Engine:
    """An engine for the URL; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": sqlite_busy_s, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # SQLAlchemy issues BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # Writers take the write lock up front (no failed lock upgrades between two writers); readers
            # (make_sessions(readonly=True)) read a WAL snapshot and never wait.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READONLY) else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def make_sessions(engine: Engine, readonly: bool = False) -> sessionmaker:
    """Sessions for writing (the default) or for reading only (the API's queries: they never lock SQLite)."""
    return sessionmaker(
        engine.execution_options(**{READONLY: True}) if readonly else engine, expire_on_commit=False
    )
