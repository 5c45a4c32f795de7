"""The evidence archive for the police: one ZIP with a case's original clips, annotated clips, stills,
signed manifests, the node's public key, the verification result judged now, and the case's history."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import zipfile
from collections.abc import Callable

from sqlalchemy.orm import Session

from center.api import Context
from center.db import Case, Event, Evidence, Node, utcnow
from center.files import OutsideDataDir
from center.models import Action
from center.trust import judge_for, parse_manifest
from center.web.views import event_views, photos_of
from edge.publish.manifest import Malformed

JOINED = (Action.CREATED, Action.EVIDENCE)  # the history entries of an alert joining a case (center.loop.attach)

README = """Evidence of case {case}, exported {at} by {actor} from the community center.

Each folder <node>/<event id>/ holds the files as the node sent them, named as in its signed manifest.json
where the center has them (the original clip, the annotated clip, the still). verification.json is the
center's check at export time: the manifest's Ed25519 signature against the node's registered public key
(node_ed25519.pub beside it) and the SHA-256 of every file here against the manifest.
To check it again yourself: `edge verify <node>/<event id> --key-file <node>/<event id>/node_ed25519.pub`
(files the center never received, such as event.json and frames.json, are listed as missing; verification.json
says which were received and later deleted by the center's retention).
case.json is the case: who was told, who acknowledged, the on-site verdict, and its whole history.
"""


def archive(ctx: Context, s: Session, case: Case, actor: str) -> bytes:
    """The ZIP's bytes (a case's evidence is tens of MB at most: built in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        checks = []
        for view in event_views(ctx, case):
            folder = f"{view.event.node}/{view.event.event_id}"
            names = {f["sha256"]: name for name, f in view.signed_files.items() if "sha256" in f}
            gone: dict[str, Evidence] = {}  # by SHA-256: received, and no longer on the center's disk
            for item in view.files:
                data = _read(ctx, item.path)
                if data is None:
                    gone[item.sha256] = item
                    continue
                name = (
                    "manifest.json"
                    if item.kind == "manifest"
                    else names.get(item.sha256, item.path.rsplit("/", 1)[-1])
                )
                z.writestr(f"{folder}/{name}", data)
            node = s.get(Node, view.event.node)
            if node is not None and node.public_key:
                z.writestr(f"{folder}/node_ed25519.pub", base64.b64encode(node.public_key).decode() + "\n")
            checks.append(
                _verify(
                    ctx,
                    view,
                    node,
                    z,
                    folder,
                    _absent(gone, _joined_at(case, view.event), {f.received_at for f in view.files}),
                )
            )
        for p in photos_of(s, case):
            data = _read(ctx, p.path)
            if data is not None:
                z.writestr(f"photos/{p.path.rsplit('/', 1)[-1]}", data)
        z.writestr("verification.json", json.dumps(checks, indent=2, ensure_ascii=False))
        z.writestr("case.json", json.dumps(_case_json(case), indent=2, ensure_ascii=False, default=str))
        z.writestr(
            "README.txt", README.format(case=case.id, at=utcnow().isoformat(timespec="seconds"), actor=actor)
        )
    return buf.getvalue()


def _read(ctx: Context, rel: str) -> bytes | None:
    try:
        return ctx.files.path(rel).read_bytes()
    except (OSError, OutsideDataDir):
        return None


def _joined_at(case: Case, event: Event) -> dt.datetime | None:
    """When the event's alert joined the case (its `created` or `evidence` history entry), if recorded."""
    name = f"{event.node}/{event.event_id}"
    at = [h.at for h in case.history if h.action in JOINED and (h.detail or {}).get("event") == name]
    return min(at) if at else None


def _absent(
    gone: dict[str, Evidence], joined: dt.datetime | None, received: set[dt.datetime]
) -> Callable[[str], str]:
    """Why a signed file (by its SHA-256) is not in the archive: a court must not read a file the center deleted
    as one it never had. A file a retention sweep took says which sweep (`Evidence.swept_at`): deleted by it, or
    already missing when it ran (the case's `retention` entries count each), and whether that was before the
    event's alert came (`joined`), while the event had no case. `received`: when the event's files came."""

    def why(sha256: str) -> str:
        item = gone.get(sha256)
        if item is None:
            return "not received by the center"
        if item.swept_at is None:
            return "received, but no longer on the center's disk"
        at = item.swept_at.isoformat(timespec="seconds")
        # Revision 0008 could give a file swept before it only its event's old mark, the newest file then taken,
        # for the sweep's own time was never kept: a mark equal to one of the event's arrivals is such a one.
        sweep = f"a retention sweep after {at}" if item.swept_at in received else f"its retention sweep of {at}"
        said = f"received; gone from the center's disk since {sweep} (deleted by it, or already missing then)"
        if joined is not None and item.swept_at < joined:
            return f"{said}, before the event's alert came"
        return said

    return why


def _verify(
    ctx: Context, view, node: Node | None, z: zipfile.ZipFile, folder: str, absent: Callable[[str], str]
) -> dict:
    out: dict = {"node": view.event.node, "event": view.event.event_id, "checked_at": utcnow().isoformat()}
    data = _read(ctx, view.manifest.path) if view.manifest else None
    if data is None:
        return {**out, "signature": "missing", "why": "no signed manifest was received for this event"}
    try:
        body, sig, public = parse_manifest(ctx.files.data_dir, data)
    except Malformed as exc:
        return {**out, "signature": "malformed", "why": str(exc)}
    registered = node.public_key if node else None
    trust, why = judge_for(body, sig, public, registered, view.event.node, view.event.event_id)
    files = {}
    present = set(z.namelist())
    for name, f in body["files"].items():
        path = f"{folder}/{name}"
        if path not in present:
            files[name] = absent(f["sha256"])
        else:
            files[name] = "ok" if hashlib.sha256(z.read(path)).hexdigest() == f["sha256"] else "CHANGED"
    return {**out, "signature": str(trust), "why": why, "files": files}


def _case_json(case: Case) -> dict:
    fields = {c.name: getattr(case, c.name) for c in Case.__table__.columns}
    fields["events"] = [f"{e.node}/{e.event_id}" for e in case.events]
    fields["history"] = [
        {"action": h.action, "actor": h.actor, "at": h.at, "detail": h.detail} for h in case.history
    ]
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in fields.items()}
