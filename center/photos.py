"""On-site photos: stored under the case's folder and recorded in its history, for the API and the pages alike."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from center.db import Case, Evidence, utcnow
from center.files import EvidenceFiles, file_name
from center.loop import Loop
from center.models import Action, Trust

MAX_PHOTO_BYTES = 10 << 20  # a phone photo is a few MB
JPEG_START = b"\xff\xd8\xff"


def is_jpeg(data: bytes) -> bool:
    """Whether the bytes start as a JPEG does (the only photo format taken)."""
    return data.startswith(JPEG_START)


def keep_photo(files: EvidenceFiles, loop: Loop, s: Session, case: Case, data: bytes, who: str) -> Evidence:
    """Write a JPEG already checked by the caller, add it to the case's evidence and history."""
    digest = hashlib.sha256(data).hexdigest()
    rel = files.write_photo(case.id, file_name("photo", digest, data), data)
    now = utcnow()
    item = Evidence(
        case_id=case.id,
        kind="photo",
        path=rel,
        sha256=digest,
        bytes=len(data),
        trust=Trust.UNSIGNED,
        trust_note=f"uploaded by {who}",
        received_at=now,
    )
    s.add(item)
    s.flush()
    loop.record(s, case, Action.PHOTO, who, now, {"evidence": item.id})
    return item
