"""What nodes say about their cameras and storage beyond status: camera problems (covered, blinded, defocused,
moved, offline, and back to normal) and the storage level. Kept, shown on the nodes page, and told to the
community office, who sends someone to the camera (a covered camera catches no throw)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from center.db import Camera, CameraProblem, Job, Node, utcnow
from center.loop import OFFICE, Loop
from center.models import JobState
from edge.detect.tamper import ProblemState
from edge.listen import MAX_CAMERAS_PER_NODE
from edge.publish.problem_message import Id, ProblemMessage, Text
from edge.retention import Level as StorageLevel

FLAP_QUIET_S = 15 * 60  # a camera problem raised again within this of the last raise told waits out the rest:
# a camera going up and down every few minutes is one notice a quarter hour, not two every cycle in the chat
OFFICE_CHANNELS = ("webhook", "wecom", "email")  # where Loop.fan_out sends the office's notices


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
    """A notice on every webhook and WeCom group, and email to the office: someone must go to the camera.

    A camera that flaps (a flaky PoE port: offline, back, offline) is told once per FLAP_QUIET_S: a raise
    within that of the last raise told waits until it has passed, and a clear coming meanwhile withdraws it
    and is not told either (the office's last word, back to normal, is still true). One that stays down is
    told, FLAP_QUIET_S at most after the raise before."""
    now = utcnow()
    told = _raises_told(s, msg, now)
    if msg.state == ProblemState.CLEARED:
        waiting = [j for j in told if j.due_at > now and j.attempts == 0 and j.state == JobState.PENDING]
        for job in waiting:
            s.delete(job)
        if waiting:
            return
        due = now
    else:
        last = max((j.due_at for j in told), default=None)
        if last is not None and last > now:
            return  # a raise of this problem is already waiting to be told
        due = last + dt.timedelta(seconds=FLAP_QUIET_S) if last is not None else now
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
    before = set(s.new)
    loop.fan_out(s, None, payload, loop.roster.office.email, now)
    for job in set(s.new) - before:
        if isinstance(job, Job):
            job.due_at = max(due, now)


def _raises_told(s: Session, msg: ProblemMessage, now: dt.datetime) -> list[Job]:
    """The notices of raises of `msg`'s problem on its camera due within FLAP_QUIET_S of now (or later)."""
    jobs = s.scalars(
        select(Job).where(
            Job.case_id.is_(None),
            Job.channel.in_(OFFICE_CHANNELS),
            Job.due_at >= now - dt.timedelta(seconds=FLAP_QUIET_S),
        )
    )
    want = {"kind": "camera_problem", "node": msg.node, "camera": msg.camera, "problem": str(msg.problem)}
    return [
        j
        for j in jobs
        if j.payload.get("state") == ProblemState.RAISED and all(j.payload.get(k) == v for k, v in want.items())
    ]


def keep_storage(node: Node, msg: StorageMessage) -> None:
    """The node's latest storage level, shown on the nodes page."""
    node.storage = msg.model_dump(mode="json")
