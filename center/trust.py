"""Trust in evidence: signed manifests checked against the node's registered Ed25519 key.

The manifest format and its parser are edge's (edge.publish.manifest); a file is `verified` when a manifest
that lists its SHA-256 is signed by the key registered for its node (`edge-center node add`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from center.db import Event, Evidence, Node
from center.files import EvidenceFiles
from center.models import Trust
from edge.publish.manifest import Malformed, canonical, read_manifest


def parse_manifest(data_dir: Path, payload: bytes) -> tuple[dict, bytes, bytes]:
    """(body, signature, public key) by edge's own parser (edge.publish.manifest), which reads manifest.json
    from a folder: one made for it under data_dir/tmp. Raises Malformed."""
    work = data_dir / "tmp" / uuid.uuid4().hex
    work.mkdir(parents=True)
    try:
        (work / "manifest.json").write_bytes(payload)
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return read_manifest(fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def reverify(sessions: sessionmaker, files: EvidenceFiles, node: str) -> int:
    """Judge every kept manifest of a node again (its key was just registered or changed) and mark the files
    they list by the best verdict; returns how many manifests were judged."""
    rank = {Trust.VERIFIED: 2, Trust.UNTRUSTED: 1, Trust.UNSIGNED: 0}
    with sessions.begin() as s:
        row = s.get(Node, node)
        key = row.public_key if row else None
        best: dict[int, tuple[Trust, str]] = {}  # evidence id -> verdict
        manifests = s.execute(
            select(Evidence, Event).join(Event, Evidence.event_pk == Event.id).where(Event.node == node)
        ).all()
        for item, ev in manifests:
            ev.node_registered = key is not None
            if item.kind != "manifest":
                continue
            try:
                body, sig, public = parse_manifest(files.data_dir, files.path(item.path).read_bytes())
            except (Malformed, OSError):
                continue
            verdict = judge_for(body, sig, public, key, node, ev.event_id)
            item.trust, item.trust_note = verdict
            listed = {m["sha256"] for m in body["files"].values()}
            covered = [
                o for o, oev in manifests if oev.id == ev.id and o.kind != "manifest" and o.sha256 in listed
            ]
            for other in covered:
                if other.id not in best or rank[verdict[0]] > rank[best[other.id][0]]:
                    best[other.id] = verdict
        for item, _ in manifests:
            if item.id in best:
                item.trust, item.trust_note = best[item.id]
        return sum(item.kind == "manifest" for item, _ in manifests)


def judge(body: dict, sig: bytes, public: bytes, registered: bytes | None) -> tuple[Trust, str]:
    """Trust in a manifest: its signature must verify and its key must be the node's registered one."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, canonical(body))
    except InvalidSignature:
        return Trust.UNTRUSTED, "the signature does not match the manifest (altered)"
    if registered is None:
        return Trust.UNTRUSTED, "the node is not registered (edge-center node add)"
    if public != registered:
        return Trust.UNTRUSTED, f"signed by key {body.get('key_id')}, not the node's registered key"
    return Trust.VERIFIED, f"signed by the node's key {base64.b16encode(public[:4]).decode().lower()}…"


def judge_for(
    body: dict, sig: bytes, public: bytes, registered: bytes | None, node: str, event_id: str
) -> tuple[Trust, str]:
    """`judge`, and the manifest must be signed for the node and event it arrived under: a node's genuine
    manifest of one event, filed under another's name, would otherwise vouch for that event's files."""
    trust, why = judge(body, sig, public, registered)
    if trust != Trust.VERIFIED:
        return trust, why
    for field, expected in (("node", node), ("event", event_id)):
        signed = body.get(field)  # a manifest of a node before the event was signed in names none
        if signed is not None and signed != expected:
            return Trust.UNTRUSTED, f"signed for {field} {str(signed)[:80]}, not the {field} it was sent under"
    return trust, why


def trust_of(s: Session, files: EvidenceFiles, ev: Event, digest: str) -> tuple[Trust, str | None]:
    """Trust of a file arriving now: that of a kept manifest listing its digest, else unsigned."""
    for m in s.scalars(select(Evidence).where(Evidence.event_pk == ev.id, Evidence.kind == "manifest")):
        try:
            body = json.loads(files.path(m.path).read_bytes())["manifest"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if digest in {f.get("sha256") for f in body.get("files", {}).values() if isinstance(f, dict)}:
            return Trust(m.trust), m.trust_note
    return Trust.UNSIGNED, "no signed manifest lists it yet"
