"""What nodes say about their cameras and storage beyond status: camera problems (covered, blinded, defocused,
moved, offline, and back to normal) and the storage level. Kept, shown on the nodes page, and told to the
community office, who sends someone to the camera (a covered camera catches no throw)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from center.db import Camera, CameraProblem, Node, utcnow
from center.loop import OFFICE, Loop
from edge.detect.tamper import ProblemState
from edge.listen import MAX_CAMERAS_PER_NODE
from edge.publish.problem_message import Id, ProblemMessage, Text
from edge.retention import Level as StorageLevel


class StorageMessage(BaseModel):
    """The node's storage level (docs/schemas/storage.schema.json)."""

    model_config = ConfigDict(extra="ignore")
    v: int = Field(ge=1, le=1)
    node: Id
    level: StorageLevel
    time_utc: Annotated[str, StringConstraints(max_length=40)]
    message: Text
    used_bytes: int = Field(ge=0)
    budget_bytes: int = Field(ge=0)
    protected_bytes: int = Field(ge=0)
    evidence_days: float = Field(ge=0)


def parse_storage(body: dict, node: str) -> StorageMessage | None:
    try:
        msg = StorageMessage.model_validate(body)
    except ValidationError:
        return None
    return msg if msg.node == node else None


def camera_row(s: Session, node: str, camera: str, at: dt.datetime) -> Camera | None:
    """The camera's row, added (updated `at`) when new; None when its node already has the most it may."""
    row = s.get(Camera, (node, camera))
    if row is None:
        cameras = s.scalar(select(func.count()).select_from(Camera).where(Camera.node == node))
        if cameras >= MAX_CAMERAS_PER_NODE:  # one node cannot fill the table
            return None
        row = Camera(node=node, camera=camera, updated_at=at)
        s.add(row)
    return row


def keep_problem(s: Session, loop: Loop, msg: ProblemMessage, at: dt.datetime | None) -> bool:
    """Store one camera problem message (its node's row exists) and tell the office; False when the camera
    is one too many for its node. A QoS 1 repeat fails on the unique msg_id (IntegrityError) before anyone
    is told."""
    row = camera_row(s, msg.node, msg.camera, utcnow())
    if row is None:
        return False
    s.add(
        CameraProblem(
            msg_id=msg.msg_id,
            node=msg.node,
            camera=msg.camera,
            episode=msg.id,
            problem=msg.problem,
            state=msg.state,
            at=at,
            reason=msg.reason,
            body=msg.model_dump(mode="json"),
            received_at=utcnow(),
        )
    )
    s.flush()  # the unique msg_id: a repeat fails here, before the office is told twice
    # Retained messages and resends can come out of order: only a newer message says what is active now.
    last = row.problems.get("at_s") if row.problems else None  # None: never told, or the camera started afresh
    if last is None or msg.at_s >= last:
        row.problems = {"active": [str(p) for p in msg.active], "at_s": msg.at_s}
        _tell_office(s, loop, msg, at)
    elif (str(msg.problem) in row.problems.get("active", [])) == (msg.state == ProblemState.RAISED):
        # An older message told only when the newer one agrees: a raise coming after its clear would send
        # someone to a camera back to normal, and leave the office's last word on it "covered".
        _tell_office(s, loop, msg, at)
    return True


def _tell_office(s: Session, loop: Loop, msg: ProblemMessage, at: dt.datetime | None) -> None:
    """A notice on every webhook and WeCom group, and email to the office: someone must go to the camera."""
    building = loop.roster.building_of(msg.node, msg.camera)
    b = loop.roster.buildings.get(building) if building else None
    payload = {
        "kind": "camera_problem",
        "node": msg.node,
        "camera": msg.camera,
        "problem": str(msg.problem),
        "state": str(msg.state),
        "reason": msg.reason,
        "at": (at or utcnow()).isoformat(),
        "building": building,
        "building_name": b.name if b else None,
        "address": b.address if b else None,
        "to": OFFICE,
    }
    loop.fan_out(s, None, payload, loop.roster.office.email, utcnow())


def keep_storage(node: Node, msg: StorageMessage) -> None:
    """The node's latest storage level, shown on the nodes page."""
    node.storage = msg.model_dump(mode="json")
