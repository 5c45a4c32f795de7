"""Verdicts the community center sends back about this node's alerts (<prefix>/<node>/feedback), kept on disk.

What the grid worker found on site (a thrown object, a fall by itself, a false alarm, nothing found) is the
ground truth of each alert: kept beside the node's events, it is how false alarms are gathered for tuning.
The payload comes from the network: it is validated, bounded and written only for an event this node has.
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

MAX_FEEDBACK_BYTES = 16 * 1024  # a verdict with a note is well under 1 KiB; anything bigger is not one
MAX_NOTE_CHARS = 2000  # the center's note field; a longer one is cut, not refused


class SiteVerdict(StrEnum):
    """What was found on site (the center's verdicts)."""

    THROWN = "thrown"
    FELL = "fell"
    FALSE_ALARM = "false_alarm"
    NOT_FOUND = "not_found"


class Feedback(BaseModel):
    """One feedback message; fields the node does not use are ignored."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1]
    msg_id: str
    id: str
    verdict: SiteVerdict | None = None
    state: str | None = Field(None, max_length=32)
    note: str | None = None
    by: str | None = Field(None, max_length=128)
    at: str | None = Field(None, max_length=64)
    case: int | None = None

    @field_validator("msg_id", "id")
    @classmethod
    def _an_id(cls, value: str) -> str:
        if not _valid_id(value):
            raise ValueError("not an id (letters, digits, . _ -; no ..; at most 128)")
        return value


def _valid_id(value: str) -> bool:
    from edge.publish.mqtt import valid_id  # the topic module imports this one

    return valid_id(value)


def parse_feedback(payload: bytes) -> Feedback:
    """The feedback in `payload`; raises ValueError saying why it is not one."""
    if len(payload) > MAX_FEEDBACK_BYTES:
        raise ValueError(f"{len(payload)} bytes, over {MAX_FEEDBACK_BYTES}")
    try:
        fb = Feedback.model_validate_json(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"{'.'.join(map(str, err['loc'])) or 'payload'}: {err['msg']}") from None
    if fb.note is not None and len(fb.note) > MAX_NOTE_CHARS:
        fb.note = fb.note[:MAX_NOTE_CHARS]
    return fb


class FeedbackStore:
    """storage/feedback/<event id>.jsonl: every verdict received for an event of storage/events, once each."""

    def __init__(self, storage: Path):
        self.events = storage / "events"
        self.folder = storage / "feedback"

    def keep(self, fb: Feedback) -> bool:
        """Append `fb` to its event's file; False when the event is not this node's or it was already kept."""
        if not _valid_id(fb.id) or not (self.events / fb.id).is_dir():
            return False
        self.folder.mkdir(mode=0o700, exist_ok=True)
        path = self.folder / f"{fb.id}.jsonl"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")  # written as UTF-8, whatever the locale
        except FileNotFoundError:
            text = ""
        if fb.msg_id in _kept_msg_ids(text):
            return False  # QoS 1 delivers at least once
        # A line cut short (a power cut, a full disk) must not swallow this one: it starts on a line of its own.
        start = "\n" if text and not text.endswith("\n") else ""
        with path.open("a", encoding="utf-8") as f:
            f.write(start + fb.model_dump_json() + "\n")
        return True


def _kept_msg_ids(text: str) -> set[str]:
    """The msg_id of every whole record in a feedback file; a damaged line is skipped, not fatal (it would make
    every later verdict for its event fail)."""
    ids = set()
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict) and isinstance(row.get("msg_id"), str):
            ids.add(row["msg_id"])
    return ids
