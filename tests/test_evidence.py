"""Evidence that holds up: signed manifests, originals never re-encoded, and tampering named exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import read_events, run_edge


@pytest.fixture(scope="module")
def evidence(sim_clip, tmp_path_factory):
    folder = sim_clip("throw", 1)
    out = tmp_path_factory.mktemp("evidence")
    proc = run_edge(
        "replay", str(folder / "scene.mp4"), "--config", str(folder / "config.yaml"), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    return out, read_events(out), folder


def test_untouched_evidence_verifies(evidence):
    out, events, _ = evidence
    proc = run_edge("verify", str(out))
    assert proc.returncode == 0, proc.stdout
    assert f"{len(events)} of {len(events)} event folders verify" in proc.stdout


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
    assert proc.returncode == 1 and "not by the trusted node key" in proc.stdout


def test_the_node_key_is_trusted_from_its_public_key_file(evidence):
    out, events, folder = evidence
    pub = folder / "storage" / "keys" / "node_ed25519.pub"
    fresh = [e for e in events if "original" in e][0]
    proc = run_edge("verify", str(out / fresh["original"]).rsplit("/", 1)[0], "--key-file", str(pub))
    assert proc.returncode == 0 and "not by the trusted node key" not in proc.stdout, proc.stdout


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
