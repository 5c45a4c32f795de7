"""Evidence manifests: SHA-256 of every file of an event, signed with the node's Ed25519 key.

A manifest proves the files are the ones the node wrote (integrity) and, when its key is compared with
the node's public key registered out of band, which node wrote them (authenticity). `edge verify` checks
both, and says "unverified" when no trusted key was given: the key inside a manifest vouches for nothing.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".tmp"  # write_atomic's file being written: what a kill leaves is never the real one


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical(obj: dict) -> bytes:
    """The bytes a manifest's signature covers: its body as sorted, compact UTF-8 JSON (the center verifies
    the same bytes)."""
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
    """Hash `files` (plain names inside folder), sign them with `info`, write folder/manifest.json."""
    if not all(plain_name(n) for n in files):
        raise ValueError(f"evidence file names must be plain names inside the folder: {files}")
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
    signed = {"manifest": body, "signature": base64.b64encode(key.sign(canonical(body))).decode()}
    path = folder / MANIFEST
    # Never rewritten in place: a kill, a power cut or a full disk mid-write would leave no signed manifest.
    write_atomic(path, (json.dumps(signed, indent=1, ensure_ascii=False) + "\n").encode())
    return path


def write_atomic(path: Path, data: bytes, rename_durable: bool = True) -> None:
    """Replace a file so that a crash, a power cut or a full disk leaves the old one or the new one, whole.

    With `rename_durable` the folder is synced too, so the new one survives a power cut; without, the old one
    may come back, and a later sync of the folder (the manifest's) makes every rename before it durable.
    """
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if rename_durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a file created or renamed in it) survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a handful of files: a few KiB
_PENDING = ".annotate"  # evidence.PENDING: the folder waits for its annotated clip and still (a normal state)
_HEX = frozenset("0123456789abcdef")


class Status(StrEnum):
    """What `edge verify` concludes about one event folder (most serious last)."""

    VERIFIED = "verified"  # intact, and signed by a trusted node key
    UNVERIFIED = "unverified"  # intact and self-consistent, but no trusted key was given: anyone could have signed
    MALFORMED = "malformed"  # the manifest is not one `edge` writes: it cannot vouch for anything
    FAILED = "failed"  # something changed since signing, or the signer is not a trusted node key


@dataclass
class Verdict:
    folder: Path
    status: Status
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    key_id: str | None = None  # of the key that signed, computed from the key itself
    trusted_as: str | None = None  # the trusted key's name (its file), when VERIFIED
    unsigned: list[str] = field(default_factory=list)  # files in the folder the manifest does not cover


class Malformed(ValueError):
    """The manifest is not a well-formed, signed `edge` manifest."""


def parse_public_key(text: str) -> bytes:
    """The raw 32 bytes of an Ed25519 public key given as base64 (node_ed25519.pub) or PEM; ValueError if not."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (expected the content of node_ed25519.pub)") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, an Ed25519 public key has 32")
    return raw


def plain_name(name: object) -> bool:
    """A file name inside the event folder itself: no directory part, no `..`, no absolute path."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", MANIFEST)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and len(name.encode()) <= 255
    )


def _open_regular(name: str, dir_fd: int) -> int:
    """A file descriptor for `name` in the directory, refusing symlinks and anything but a regular file.

    O_NOFOLLOW: a symlink is not followed out of the folder; O_NONBLOCK: opening a FIFO does not hang.
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def read_manifest(dir_fd: int) -> tuple[dict, bytes, bytes]:
    """(body, signature, raw public key) of the manifest.json in the open folder `dir_fd`, its form checked but
    not its signature; Malformed says what is wrong with it. Public: the center parses manifests with it too."""
    try:
        fd = _open_regular(MANIFEST, dir_fd)
    except OSError as exc:
        why = "not a regular file" if exc.errno in (errno.ELOOP, errno.EINVAL) else exc.strerror
        raise Malformed(why) from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise Malformed(f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        signed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(signed, dict) or not isinstance(signed.get("manifest"), dict):
        raise Malformed("no manifest object")
    body = signed["manifest"]
    try:
        sig = base64.b64decode(signed.get("signature"), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise Malformed("no base64 signature") from None
    if len(sig) != 64:
        raise Malformed("the signature is not 64 bytes")
    if body.get("v") != 1:
        raise Malformed(f"unknown manifest version {_short(body.get('v'))}")
    try:
        public = parse_public_key(body.get("public_key") if isinstance(body.get("public_key"), str) else "")
    except ValueError as exc:
        raise Malformed(f"public_key: {exc}") from None
    if body.get("key_id") != hashlib.sha256(public).hexdigest()[:16]:
        raise Malformed("key_id is not the id of public_key")
    files = body.get("files")
    if not isinstance(files, dict) or not files:
        raise Malformed("files must map each file name to its sha256 and bytes")
    for name, meta in files.items():
        if not plain_name(name):
            raise Malformed(f"file name {_short(name)} is not a plain name inside the event folder")
        if not isinstance(meta, dict):
            raise Malformed(f"files[{name!r}] is not an object")
        digest, size = meta.get("sha256"), meta.get("bytes")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise Malformed(f"files[{name!r}].sha256 is not a SHA-256 in hex")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise Malformed(f"files[{name!r}].bytes is not a size")
    return body, sig, public


def manifest_readable(folder: Path) -> bool:
    """True when the folder holds a well-formed manifest (its signature and files are not checked here)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        read_manifest(dir_fd)
    except Malformed:
        return False
    finally:
        os.close(dir_fd)
    return True


def _short(value: object) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_file(folder: Path, name: str, meta: dict, dir_fd: int) -> str | None:
    """What is wrong with one signed file, or None; reads only a regular file inside the folder."""
    path = folder / name
    try:
        fd = _open_regular(name, dir_fd)
    except FileNotFoundError:
        return f"{path}: missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: a symlink, not the file that was signed"
        if exc.errno == errno.EINVAL:
            return f"{path}: not a regular file"
        return f"{path}: cannot read ({exc.strerror})"
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != meta["bytes"]:
            return f"{path}: changed since it was signed ({size} bytes, signed {meta['bytes']})"
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != meta["sha256"]:
        return f"{path}: changed since it was signed (SHA-256 differs)"
    return None


def check_folder(folder: Path, trusted: dict[bytes, str] | None = None) -> Verdict:
    """Verify one event folder: the manifest's form, its signature, who signed it, and every file it lists.

    `trusted` maps raw public keys to a name (their file); None or empty means no key is trusted, and an intact
    folder is then only UNVERIFIED: the manifest carries its own public key, so a forger who changes a file and
    signs again with a key of their own produces a manifest that is perfectly consistent.
    """
    path = folder / MANIFEST
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return Verdict(folder, Status.MALFORMED, [f"{folder}: cannot open the folder ({exc.strerror})"])
    try:
        try:
            body, sig, public = read_manifest(dir_fd)
        except Malformed as exc:
            return Verdict(folder, Status.MALFORMED, [f"{path}: malformed manifest: {exc}"])
        verdict = Verdict(folder, Status.FAILED, key_id=body["key_id"])
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(sig, canonical(body))
        except InvalidSignature:
            verdict.problems.append(f"{path}: signature does not match its contents (manifest was altered)")
        if trusted:
            verdict.trusted_as = trusted.get(public)
            if verdict.trusted_as is None:
                verdict.problems.append(f"{path}: signed by key {body['key_id']}, not by a trusted node key")
        for name, meta in body["files"].items():
            problem = _check_file(folder, name, meta, dir_fd)
            if problem:
                verdict.problems.append(problem)
        if not verdict.problems and _EVENT_JSON in body["files"]:
            problem = _named_for_another_event(folder, dir_fd)
            if problem:
                verdict.problems.append(problem)
        signed_for = body.get("event")  # absent from manifests of nodes before it was signed in
        if signed_for is not None and signed_for != _name_of(folder):
            verdict.problems.append(f"{path}: signed for event {_short(signed_for)}, not the one it is named for")
        listed = set(body["files"]) | {MANIFEST, _PENDING}
        verdict.unsigned = sorted(n for n in os.listdir(dir_fd) if n not in listed)
    finally:
        os.close(dir_fd)
    if not verdict.problems:
        verdict.status = Status.VERIFIED if trusted else Status.UNVERIFIED
    return verdict


def _named_for_another_event(folder: Path, dir_fd: int) -> str | None:
    """The folder's name is its event's id: a signed event.json with another id means folders were renamed or
    swapped, and the evidence would be taken for another event's (another time, floor, building)."""
    fd = _open_regular(_EVENT_JSON, dir_fd)  # its hash was just checked: the same file, as signed
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    try:
        event_id = json.loads(data).get("id")
    except (ValueError, RecursionError, AttributeError):
        return None  # signed as it is: a form the node never wrote is not a question of names
    if isinstance(event_id, str) and event_id != _name_of(folder):
        return f"{folder}: holds the signed evidence of event {_short(event_id)}, not of the event it is named for"
    return None


def _name_of(folder: Path) -> str:
    """The folder's own name, also when it is given as `.` or `..` (`edge verify .` from inside it)."""
    return folder.resolve().name


_EVENT_JSON = "event.json"  # evidence.EVENT (imported from there would be a cycle)
# What the node writes into an event folder before and beside its manifest (evidence.py, original.py): a folder
# holding any of these is an event's, and without a manifest nothing vouches for it.
_EVENT_FILES = frozenset({_EVENT_JSON, "frames.json", "annotated.mp4", "still.jpg", _PENDING})
_EVENT_PREFIXES = ("original.", ".original-partial")


def _event_files(names: list[str]) -> list[str]:
    return sorted(n for n in names if n in _EVENT_FILES or n.startswith(_EVENT_PREFIXES))


def find_event_folders(root: Path) -> tuple[list[Path], list[Verdict]]:
    """The folders under `root` (itself included) that hold a manifest, to check; and a FAILED verdict for each
    place that holds an event's files no manifest covers, so that none passes unseen:

    - a folder with an event's files and no manifest.json (it was removed, or the event is not signed yet);
    - a link to a folder of an event (not followed, as no link is: what it points to is not checked);
    - a folder that cannot be read (MALFORMED, as check_folder says of one).
    """
    folders: list[Path] = []
    others: list[Verdict] = []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        others.append(Verdict(where, Status.MALFORMED, [f"{where}: cannot read the folder ({exc.strerror})"]))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):  # links are not followed
        here = Path(dirpath)
        if MANIFEST in filenames or MANIFEST in dirnames:
            folders.append(here)
        elif files := _event_files(filenames):
            why = f"{here}: no {MANIFEST}: nothing vouches for {', '.join(files)} (removed, or not signed yet)"
            others.append(Verdict(here, Status.FAILED, [why]))
        for name in dirnames:
            link = here / name
            if not link.is_symlink():
                continue
            try:
                inside = os.listdir(link)
            except OSError:
                continue
            if MANIFEST in inside or _event_files(inside):
                target = os.readlink(link)
                why = f"{link}: a link to an event folder elsewhere ({target}), not followed: not checked"
                others.append(Verdict(link, Status.FAILED, [why]))
    return sorted(folders), others


def verify_folder(folder: Path, trusted_key: str | None = None) -> list[str]:
    """Problems found with an event folder's manifest and files; an empty list means it is intact.

    Without `trusted_key` (base64) this checks integrity only: who signed is not checked (see check_folder).
    """
    if not (folder / MANIFEST).exists():
        return [f"{folder / MANIFEST}: no manifest"]
    trusted = {parse_public_key(trusted_key): "the trusted key"} if trusted_key else None
    return check_folder(folder, trusted).problems
