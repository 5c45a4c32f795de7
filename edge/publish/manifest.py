"""Evidence manifests: SHA-256 of every file of an event, signed with the node's Ed25519 key.

A manifest proves the files are the ones the node wrote (integrity) and, when its key id is compared with
the node's registered public key, which node wrote them (authenticity). `edge verify` checks both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_b64(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_or_create_key(key_dir: Path) -> Ed25519PrivateKey:
    """The node's signing key from key_dir/node_ed25519.pem, created (mode 0600) on first use."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_dir.chmod(0o700)
    path = key_dir / "node_ed25519.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    (key_dir / "node_ed25519.pub").write_text(public_b64(key.public_key()) + "\n")
    return key


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_manifest(folder: Path, files: list[str], info: dict, key: Ed25519PrivateKey) -> Path:
    """Hash `files` (names inside folder), sign them with `info`, write folder/manifest.json."""
    body = {
        "v": 1,
        **info,
        "files": {
            name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size} for name in files
        },
        "signed_utc": iso(datetime.now(UTC).timestamp()),
        "key_id": key_id(key.public_key()),
        "public_key": public_b64(key.public_key()),
    }
    signed = {"manifest": body, "signature": base64.b64encode(key.sign(_canonical(body))).decode()}
    path = folder / MANIFEST
    path.write_text(json.dumps(signed, indent=1, ensure_ascii=False) + "\n")
    return path


def verify_folder(folder: Path, trusted_key: str | None = None) -> list[str]:
    """Problems found with an event folder's manifest and files; an empty list means it verifies."""
    path = folder / MANIFEST
    if not path.exists():
        return [f"{path}: no manifest"]
    try:
        signed = json.loads(path.read_text())
        body, sig = signed["manifest"], base64.b64decode(signed["signature"])
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["public_key"]))
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path}: unreadable manifest ({exc})"]
    problems = []
    try:
        public.verify(sig, _canonical(body))
    except InvalidSignature:
        problems.append(f"{path}: signature does not match its contents (manifest was altered)")
    if trusted_key and trusted_key.strip() != body["public_key"]:
        problems.append(f"{path}: signed by key {body['key_id']}, not by the trusted node key")
    for name, meta in body["files"].items():
        f = folder / name
        if not f.exists():
            problems.append(f"{f}: missing")
        elif sha256_file(f) != meta["sha256"]:
            problems.append(f"{f}: changed since it was signed (SHA-256 differs)")
    return problems
