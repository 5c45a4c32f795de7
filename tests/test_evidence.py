"""Evidence that holds up: signed manifests, originals never re-encoded, and tampering named exactly."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import FallConfig
from edge.detect.fall import FallDecision
from edge.detect.types import AlertLevel, FallEvent
from edge.publish.evidence import storey_lines
from edge.publish.manifest import (
    MANIFEST,
    canonical,
    check_folder,
    key_id,
    public_b64,
    sha256_file,
    write_manifest,
)

from conftest import posed_facade, read_events, run_edge


@pytest.fixture(scope="module")
def evidence(sim_clip, tmp_path_factory):
    folder = sim_clip("throw", 1)
    out = tmp_path_factory.mktemp("evidence")
    proc = run_edge(
        "replay", str(folder / "scene.mp4"), "--config", str(folder / "config.yaml"), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    return out, read_events(out), folder


def _pub(folder: Path) -> Path:
    return folder / "storage" / "keys" / "node_ed25519.pub"


def test_untouched_evidence_verifies_against_the_node_key(evidence):
    out, events, folder = evidence
    proc = run_edge("verify", str(out), "--key-file", str(_pub(folder)))
    assert proc.returncode == 0, proc.stdout
    assert f"{len(events)} of {len(events)} event folders verify" in proc.stdout


def test_without_a_trusted_key_intact_evidence_is_unverified_not_ok(evidence):
    out, events, _ = evidence
    proc = run_edge("verify", str(out))
    assert proc.returncode == 3, (proc.returncode, proc.stdout)
    assert proc.stdout.count("UNVERIFIED") == len(events) and "\nOK" not in proc.stdout


def _copy(out, rel: str, tmp_path):
    """A copy of the event folder holding `rel`, to tamper with without spoiling the others' evidence."""
    src = (out / rel).parent
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst / Path(rel).name


def test_one_changed_byte_in_a_clip_is_named(evidence, tmp_path):
    out, events, _ = evidence
    clip = _copy(out, events[0]["clip"], tmp_path)
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0x01
    clip.write_bytes(bytes(data))
    proc = run_edge("verify", str(clip.parent))
    assert proc.returncode == 1
    assert f"{clip}: changed since it was signed" in proc.stdout
    assert proc.stdout.count("FAILED") == 1  # only that file


def test_an_edited_manifest_fails_its_signature(evidence, tmp_path):
    out, events, _ = evidence
    manifest = _copy(out, events[-1]["manifest"], tmp_path)
    signed = json.loads(manifest.read_text())
    signed["manifest"]["camera"] = "elsewhere"
    manifest.write_text(json.dumps(signed))
    proc = run_edge("verify", str(manifest.parent))
    assert proc.returncode == 1 and "signature does not match" in proc.stdout


def test_a_manifest_from_another_key_is_refused_when_a_key_is_trusted(evidence, tmp_path):
    out, events, folder = evidence
    stranger = "A" * 43 + "="
    proc = run_edge("verify", str(out / events[0]["original"]).rsplit("/", 1)[0], "--key", stranger)
    assert proc.returncode == 1 and "not by a trusted node key" in proc.stdout


def test_the_node_key_is_trusted_from_its_public_key_file(evidence):
    out, events, folder = evidence
    fresh = [e for e in events if "original" in e][0]
    proc = run_edge("verify", str(out / fresh["original"]).rsplit("/", 1)[0], "--key-file", str(_pub(folder)))
    assert proc.returncode == 0 and "not by a trusted node key" not in proc.stdout, proc.stdout


def _resign(folder: Path, key, edit=lambda body: None, signed_edit=lambda signed: None) -> None:
    """What a forger does: rewrite the manifest of `folder` (hashes recomputed, `edit` applied) and sign it."""
    manifest = folder / MANIFEST
    body = json.loads(manifest.read_text())["manifest"]
    for name, meta in body["files"].items():
        meta.update(sha256=sha256_file(folder / name), bytes=(folder / name).stat().st_size)
    body.update(key_id=key_id(key.public_key()), public_key=public_b64(key.public_key()))
    edit(body)
    signed = {"manifest": body, "signature": base64.b64encode(key.sign(canonical(body))).decode()}
    signed_edit(signed)
    manifest.write_text(json.dumps(signed))


def test_a_changed_clip_re_signed_with_a_new_key_is_not_accepted(evidence, tmp_path):
    out, events, folder = evidence
    clip = _copy(out, events[0]["clip"], tmp_path)
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0x01
    clip.write_bytes(bytes(data))
    _resign(clip.parent, Ed25519PrivateKey.generate())
    proc = run_edge("verify", str(clip.parent))  # no trusted key: intact, but nobody vouches for the signer
    assert proc.returncode == 3 and "UNVERIFIED" in proc.stdout and "OK" not in proc.stdout, proc.stdout
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(_pub(folder), keys / "garden3-east.pub")
    proc = run_edge("verify", str(clip.parent), "--key-dir", str(keys))
    assert proc.returncode == 1 and "not by a trusted node key" in proc.stdout, proc.stdout


def test_a_directory_of_trusted_node_keys(evidence, tmp_path):
    out, events, folder = evidence
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "other-node.pub").write_text(public_b64(Ed25519PrivateKey.generate().public_key()) + "\n")
    shutil.copy(_pub(folder), keys / "garden3-east.pub")
    (keys / "README.txt").write_text("not a key, and not a *.pub: ignored\n")
    proc = run_edge("verify", str(out), "--key-dir", str(keys))
    assert proc.returncode == 0, proc.stdout
    assert (
        f"{len(events)} of {len(events)} event folders verify" in proc.stdout and "garden3-east.pub" in proc.stdout
    )


def test_a_key_dir_without_keys_or_with_a_bad_key_is_a_usage_error(evidence, tmp_path):
    out, _, _ = evidence
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_edge("verify", str(out), "--key-dir", str(empty))
    assert proc.returncode == 64 and "no *.pub" in proc.stderr and "OK" not in proc.stdout
    (empty / "bad.pub").write_text("not base64 at all!\n")
    proc = run_edge("verify", str(out), "--key-dir", str(empty))
    assert proc.returncode == 64 and "bad.pub" in proc.stderr and "Traceback" not in proc.stderr


def _hostname_entry(body):
    body["files"] = {"/etc/hostname": {"sha256": sha256_file(Path("/etc/hostname")), "bytes": 0}}


def _outside_entry(body):
    body["files"]["../outside.txt"] = {"sha256": hashlib.sha256(b"secret\n").hexdigest(), "bytes": 7}


@pytest.mark.parametrize(
    ("edit", "signed_edit", "words"),
    [
        (lambda b: b.pop("files"), lambda s: None, "files"),
        (lambda b: b.update(files=list(b["files"])), lambda s: None, "files"),
        (lambda b: next(iter(b["files"].values())).pop("sha256"), lambda s: None, "sha256"),
        (
            lambda b: b["files"].update({"/dev/zero": {"sha256": "0" * 64, "bytes": 1}}),
            lambda s: None,
            "/dev/zero",
        ),
        (_hostname_entry, lambda s: None, "/etc/hostname"),
        (_outside_entry, lambda s: None, "../outside.txt"),
        (lambda b: None, lambda s: s.pop("signature"), "signature"),
        (lambda b: None, lambda s: s.update(manifest=[1, 2]), "manifest"),
    ],
    ids=[
        "no-files",
        "files-a-list",
        "no-sha256",
        "dev-zero",
        "etc-hostname",
        "dot-dot",
        "no-signature",
        "body-list",
    ],
)
def test_a_malformed_manifest_is_reported_as_such(evidence, tmp_path, edit, signed_edit, words):
    out, events, _ = evidence
    manifest = _copy(out, events[0]["manifest"], tmp_path / "ev")
    (tmp_path / "ev" / "outside.txt").write_text("secret\n")
    _resign(manifest.parent, Ed25519PrivateKey.generate(), edit, signed_edit)
    proc = run_edge("verify", str(manifest.parent), timeout=30)
    assert proc.returncode == 65, (proc.returncode, proc.stdout, proc.stderr)
    assert "MALFORMED" in proc.stdout and words in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ["not json {", "[1, 2, 3]", "[" * 100000 + "]" * 100000])
def test_a_manifest_that_is_not_a_manifest_is_malformed(evidence, tmp_path, content):
    out, events, _ = evidence
    manifest = _copy(out, events[0]["manifest"], tmp_path)
    manifest.write_text(content)
    proc = run_edge("verify", str(manifest.parent), timeout=30)
    assert proc.returncode == 65 and "MALFORMED" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr


def test_a_manifest_that_is_a_fifo_does_not_hang_verify(evidence, tmp_path):
    out, events, _ = evidence
    manifest = _copy(out, events[0]["manifest"], tmp_path)
    manifest.unlink()
    os.mkfifo(manifest)
    proc = run_edge("verify", str(manifest.parent), timeout=30)
    assert proc.returncode == 65 and "not a regular file" in proc.stdout, proc.stdout


def test_a_signed_file_swapped_for_a_symlink_out_of_the_folder_fails(evidence, tmp_path):
    out, events, _ = evidence
    event = _copy(out, events[0]["manifest"], tmp_path / "ev").parent / "event.json"
    outside = tmp_path / "elsewhere.json"
    event.rename(outside)
    event.symlink_to(outside)  # same bytes, but not a file of the event folder
    proc = run_edge("verify", str(event.parent), timeout=30)
    assert proc.returncode == 1 and f"{event}: " in proc.stdout and "symlink" in proc.stdout, proc.stdout


def test_both_signing_stages_verify_and_unsigned_files_are_named(evidence, tmp_path):
    out, events, folder = evidence
    manifest = _copy(out, events[0]["manifest"], tmp_path)
    body = json.loads(manifest.read_text())["manifest"]
    assert {"original.ts", "event.json", "frames.json", "annotated.mp4", "still.jpg"} <= set(body["files"])
    key = serialization.load_pem_private_key(
        (folder / "storage" / "keys" / "node_ed25519.pem").read_bytes(), password=None
    )
    info = {k: v for k, v in body.items() if k not in {"v", "files", "signed_utc", "key_id", "public_key"}}
    write_manifest(manifest.parent, ["original.ts", "event.json", "frames.json"], info, key)  # stage "original"
    proc = run_edge("verify", str(manifest.parent), "--key-file", str(_pub(folder)))
    assert proc.returncode == 0, proc.stdout
    assert f"{manifest.parent / 'annotated.mp4'}: not covered by the manifest" in proc.stdout


def test_names_in_the_evidence_cannot_hide_lines_or_crash_verify(evidence, tmp_path):
    out, events, folder = evidence
    event = _copy(out, events[0]["manifest"], tmp_path).parent
    # Whoever hands over the folder chooses its names: "conceal" hides every later line on a terminal
    # (the real verdicts, the summary), and a name that is no UTF-8 cannot be printed as it is.
    (event / "\x1b[8m").write_bytes(b"")
    os.close(os.open(os.fsencode(event) + b"/\xff.bin", os.O_CREAT | os.O_WRONLY, 0o644))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # a strict UTF-8 terminal, as on most desktops
    proc = run_edge("verify", str(event), "--key-file", str(_pub(folder)), env=env, timeout=30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stdout and "1 of 1 event folders verify" in proc.stdout
    assert f"{event}/\\x1b[8m: not covered by the manifest" in proc.stdout
    assert f"{event}/\\udcff.bin: not covered by the manifest" in proc.stdout


def test_event_folders_that_verify_cannot_check_are_failures_not_skipped(evidence, tmp_path):
    out, events, folder = evidence
    src = (out / events[0]["manifest"]).parent
    root = tmp_path / "events"
    intact, unsigned, linked = (root / name / src.name for name in ("intact", "unsigned", "linked"))
    for copy in (intact, unsigned, linked):
        shutil.copytree(src, copy)
    (unsigned / MANIFEST).unlink()  # the clip swapped, and the manifest that would say so removed
    linked.rename(tmp_path / "elsewhere")  # a folder swapped for a link to another one
    linked.symlink_to(tmp_path / "elsewhere")
    proc = run_edge("verify", str(root), "--key-file", str(_pub(folder)), timeout=30)
    assert proc.returncode == 1, proc.stdout
    assert f"FAILED {unsigned}: no manifest.json" in proc.stdout and "event.json" in proc.stdout
    assert f"FAILED {linked}: a link" in proc.stdout
    assert f"OK         {intact}" in proc.stdout
    assert "1 of 3 event folders verify; 2 failed" in proc.stdout
    # One event folder without its manifest is no longer "nothing to check" either.
    proc = run_edge("verify", str(unsigned), "--key-file", str(_pub(folder)), timeout=30)
    assert proc.returncode == 1 and "no manifest.json" in proc.stdout, (proc.stdout, proc.stderr)


def test_an_event_folder_renamed_to_another_event_s_id_fails(evidence, tmp_path):
    out, events, folder = evidence
    src = (out / events[0]["manifest"]).parent
    other_id = events[-1]["id"] if len(events) > 1 else "20260501T103000Z-sim-0"
    assert other_id != src.name
    shutil.copytree(src, tmp_path / src.name)  # the control: the same files under their own event's id
    shutil.copytree(src, tmp_path / other_id)  # folders swapped or renamed: this evidence would be taken for
    proc = run_edge("verify", str(tmp_path), "--key-file", str(_pub(folder)), timeout=30)
    assert proc.returncode == 1, proc.stdout
    assert f'FAILED {tmp_path / other_id}: holds the signed evidence of event "{src.name}"' in proc.stdout
    assert f"OK         {tmp_path / src.name}" in proc.stdout
    assert "1 of 2 event folders verify; 1 failed" in proc.stdout


def test_each_manifest_is_signed_for_its_own_event_and_one_signed_for_another_fails(
    evidence, tmp_path, monkeypatch
):
    out, events, folder = evidence
    for event in events:  # what the center checks a manifest against: it never receives event.json
        assert json.loads((out / event["manifest"]).read_text())["manifest"]["event"] == event["id"]
    plain = tmp_path / "20260501T103000Z-sim-7"  # no event.json: only the manifest says whose it is
    plain.mkdir()
    (plain / "original.ts").write_bytes(b"G" * 188)
    key = Ed25519PrivateKey.generate()
    write_manifest(plain, ["original.ts"], {"event": "20260501T103000Z-sim-1"}, key)
    assert any("signed for event" in p for p in check_folder(plain).problems)
    write_manifest(plain, ["original.ts"], {"event": plain.name}, key)  # the control: signed for this one
    assert check_folder(plain).problems == []
    monkeypatch.chdir(plain)  # `edge verify .` from inside the folder: its name is still its own
    assert check_folder(Path(".")).problems == []


def test_a_folder_without_any_event_is_nothing_to_check(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "node_ed25519.pub").write_text("x\n")
    (tmp_path / "events.jsonl").write_text("")
    proc = run_edge("verify", str(tmp_path), timeout=30)
    assert proc.returncode == 66 and "no manifest.json found" in proc.stderr, (proc.stdout, proc.stderr)


def test_a_key_file_that_does_not_exist_is_an_error_not_a_pass(evidence, tmp_path):
    out, events, _ = evidence
    proc = run_edge("verify", str((out / events[0]["manifest"]).parent), "--key-file", str(tmp_path / "nope.pub"))
    assert proc.returncode == 66 and "nope.pub" in proc.stderr and "OK" not in proc.stdout


def test_the_manifest_records_who_and_what(evidence):
    out, events, _ = evidence
    body = json.loads((out / events[0]["manifest"]).read_text())["manifest"]
    assert body["node"] == "sim" and body["camera"] == "sim" and body["software"].startswith("edge ")
    assert len(body["config_sha256"]) == 64 and body["first_seen_t"] >= body["clip_from_t"]
    assert set(body["files"]) >= {"original.ts", "annotated.mp4", "still.jpg", "event.json"}


def _thrown_in_front_of_the_wall():
    """A facade seen by a camera below it, and the event of a throw released half a metre out at 62.6 m."""
    cam, facade = posed_facade()
    t = np.arange(0, 1.2, 1 / 25)
    px, _ = cam.project(np.column_stack([20 + 0.3 * t, 62.6 - 4.905 * t * t, np.full(len(t), 0.5)]))
    track = [(i, float(u), float(v)) for i, (u, v) in enumerate(px)]
    verdict = FallDecision(FallConfig(), 25.0, 1080, facade).judge(track)
    level, origin = AlertLevel.CONFIRMED, verdict.origin
    event = FallEvent("e", "c", level, 0.9, 0, 20, 29, track, origin, None, None, None, 25.0)
    return facade, event


def test_the_storey_lines_on_the_still_frame_the_origin_in_the_floor_it_is_labelled_with():
    facade, event = _thrown_in_front_of_the_wall()
    assert event.origin.floor == 21
    lines = {k: (a[1] + b[1]) / 2 for k, a, b in storey_lines(facade, event)}
    assert lines[1] < event.origin.y < lines[0]  # image y grows downward: its storey's top line, then floor
    on_the_wall = {k: (a[1] + b[1]) / 2 for k, a, b in storey_lines(replace(facade, camera=None), event)}
    assert event.origin.y < on_the_wall[1]  # control: lines on the wall put the box in the storey above
