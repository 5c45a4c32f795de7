"""The center's parts over one database, without MQTT: what ingest, loop and API tests drive directly."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from centerkit import load, write_center
from sqlalchemy.orm import sessionmaker

from center.config import CenterConfig
from center.counters import Drops
from center.db import Job, make_engine, make_sessions
from center.files import EvidenceFiles
from center.ingest import Ingest
from center.loop import Loop
from center.migrate import upgrade
from center.models import JobState
from center.roster import Roster


@dataclass
class Parts:
    cfg: CenterConfig
    roster: Roster
    sessions: sessionmaker
    files: EvidenceFiles
    loop: Loop
    ingest: Ingest
    drops: Drops
    engine: object


def make_parts(tmp_path: Path, db_url: str, **over) -> Parts:
    cfg, roster = load(write_center(tmp_path, db_url, **over))
    upgrade(cfg.database_url())
    engine = make_engine(cfg.database_url())
    sessions = make_sessions(engine)
    files = EvidenceFiles(cfg.data_dir)
    drops = Drops()
    loop = Loop(cfg, roster)
    ingest = Ingest(cfg.mqtt.topic_prefix, sessions, files, loop, cfg.instance, drops)
    return Parts(cfg, roster, sessions, files, loop, ingest, drops, engine)


def context_of(parts: Parts):
    """The API's and pages' Context over these parts (no broker to publish to)."""
    from center.api import Context

    readers = make_sessions(parts.engine, readonly=True)
    return Context(parts.cfg, parts.roster, parts.sessions, readers, parts.loop, parts.files, parts.drops)


def alert(
    node: str = "garden3-east",
    camera: str = "east",
    event_id: str | None = None,
    level: str = "confirmed",
    floor: int | None = 12,
    at: dt.datetime | None = None,
    kind: str = "new",
    **extra,
) -> dict:
    """An event message as a node sends it (docs/schemas/event.schema.json)."""
    at = at or dt.datetime.now(dt.UTC)
    iso = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "v": 1,
        "type": kind,
        "msg_id": uuid.uuid4().hex,
        "id": event_id or f"{camera}-{uuid.uuid4().hex[:8]}",
        "node": node,
        "camera": camera,
        "level": level,
        "score": 0.9,
        "alert_utc": iso,
        "queued_utc": iso,
        "origin": {"x": 100.0, "y": 200.0, "floor": floor, "facade_x_m": 3.0},
        **extra,
    }


def send(parts: Parts, body: dict, node: str | None = None) -> None:
    parts.ingest.handle(f"edge/{node or body['node']}/events", json.dumps(body).encode())


def failed_mail(p, case_id: int) -> None:
    """A notice of the case that could not be sent: its address and the mail server's answer."""
    now = dt.datetime.now(dt.UTC)
    with p.sessions.begin() as s:
        s.add(
            Job(
                case_id=case_id,
                channel="email",
                target="wang.office@example.cn",
                payload={},
                state=JobState.FAILED,
                attempts=3,
                due_at=now,
                created_at=now,
                last_error="SMTPAuthenticationError: 535 login refused",
            )
        )
