"""Signed evidence survives a node killed mid-write: no manifest is left half written, and what an older crash
left is signed again at the next start."""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from edge.config import parse_config
from edge.node import Node
from edge.publish.evidence import recover_interrupted
from edge.publish.manifest import MANIFEST, Status, check_folder, load_or_create_key, write_manifest

from conftest import REPO

STAGE_ORIGINAL = ["original.ts", "event.json", "frames.json"]
COMPLETE = [*STAGE_ORIGINAL, "annotated.mp4"]

# write_manifest in a process of its own, as annotate() runs in the node: argv folder, key dir, files, info.
# Python ignores SIGXFSZ (a write past the file size limit fails with EFBIG); the kernel's default kills.
_SIGN = """
import json, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
from edge.publish.manifest import load_or_create_key, write_manifest
folder, keys, files, info = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
write_manifest(folder, files, info, load_or_create_key(keys))
"""


def _saved_event(folder: Path, keys: Path) -> None:
    """An event folder as save_original leaves it: the original, event.json, frames.json, signed."""
    folder.mkdir(parents=True)
    (folder / "original.ts").write_bytes(b"G" * 1000)
    (folder / "event.json").write_text(json.dumps({"id": folder.name, "camera": "cam", "evidence": {}}))
    (folder / "frames.json").write_text(json.dumps({"frames": [[1, 0.04], [2, 0.08]]}))
    (folder / ".annotate").touch()
    write_manifest(folder, STAGE_ORIGINAL, {"node": "n1"}, load_or_create_key(keys))


def _sign_in_a_process(folder: Path, keys: Path, files: list[str], max_file_bytes: int | None = None) -> int:
    """Re-sign `folder` in a child process; with max_file_bytes, the kernel kills it (SIGXFSZ) at the write
    that would make any file larger: a kill in the middle of writing the manifest."""

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    info = {"node": "n1", "note": "a long note " * 100}  # the new manifest is larger than the limit
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _SIGN, str(folder), str(keys), json.dumps(files), json.dumps(info)]
    return subprocess.run(args, env=env, cwd=REPO, preexec_fn=limit, timeout=60).returncode


def test_a_node_killed_while_re_signing_keeps_the_manifest_signed_before(tmp_path):
    keys, folder = tmp_path / "keys", tmp_path / "events" / "e1"
    _saved_event(folder, keys)
    (folder / "annotated.mp4").write_bytes(b"A" * 500)
    limit = (folder / MANIFEST).stat().st_size + 100
    assert _sign_in_a_process(folder, keys, COMPLETE, max_file_bytes=limit) == -signal.SIGXFSZ
    verdict = check_folder(folder)
    assert verdict.status is Status.UNVERIFIED and verdict.problems == []
    assert set(json.loads((folder / MANIFEST).read_text())["manifest"]["files"]) == set(STAGE_ORIGINAL)
    # The control: the same signing, not killed, covers the annotated clip.
    assert _sign_in_a_process(folder, keys, COMPLETE) == 0
    assert set(json.loads((folder / MANIFEST).read_text())["manifest"]["files"]) == set(COMPLETE)
    assert check_folder(folder).problems == []


def test_a_restart_leaves_no_trace_of_a_signing_that_was_killed(tmp_path):
    keys, folder = tmp_path / "keys", tmp_path / "events" / "e1"
    _saved_event(folder, keys)
    (folder / "annotated.mp4").write_bytes(b"A" * 500)
    before = (folder / MANIFEST).read_bytes()
    limit = len(before) + 100
    assert _sign_in_a_process(folder, keys, COMPLETE, max_file_bytes=limit) == -signal.SIGXFSZ
    assert recover_interrupted(tmp_path / "events", load_or_create_key(keys), lambda camera: {}) == []
    assert (folder / MANIFEST).read_bytes() == before  # signed at stage original, as it was
    assert check_folder(folder).unsigned == ["annotated.mp4"]  # the annotation is redone (.annotate is there)


def test_at_start_a_manifest_that_cannot_be_read_is_signed_again_and_an_intact_one_is_left(tmp_path):
    keys, events = tmp_path / "keys", tmp_path / "events"
    broken, intact = events / "e1", events / "e2"
    _saved_event(broken, keys)
    _saved_event(intact, keys)
    (broken / MANIFEST).write_bytes(b"")  # an older node, killed while it rewrote the manifest in place
    intact_manifest = (intact / MANIFEST).read_bytes()
    frames = (broken / "frames.json").read_bytes()
    recovered = recover_interrupted(events, load_or_create_key(keys), lambda camera: {"node": "n1"})
    assert [files.folder for _, files in recovered] == [broken]
    verdict = check_folder(broken)
    assert verdict.status is Status.UNVERIFIED and verdict.problems == [], verdict.problems
    assert set(json.loads((broken / MANIFEST).read_text())["manifest"]["files"]) == set(STAGE_ORIGINAL)
    assert (broken / "frames.json").read_bytes() == frames  # the frame index is kept, not emptied
    assert (intact / MANIFEST).read_bytes() == intact_manifest


def test_a_finished_folder_whose_manifest_was_damaged_is_never_signed_over(tmp_path):
    # Only a folder still being signed (.annotate there) can hold a half-written manifest: anything else
    # unreadable is damage or tampering, which `edge verify` must keep reporting.
    keys, events = tmp_path / "keys", tmp_path / "events"
    finished, signing = events / "e1", events / "e2"
    _saved_event(finished, keys)
    _saved_event(signing, keys)
    (finished / ".annotate").unlink()
    for folder in (finished, signing):
        (folder / MANIFEST).write_bytes(b"{not json")
    recovered = recover_interrupted(events, load_or_create_key(keys), lambda camera: {"node": "n1"})
    assert [files.folder for _, files in recovered] == [signing]  # the control: one being signed is
    assert (finished / MANIFEST).read_bytes() == b"{not json"
    assert check_folder(finished).status is Status.MALFORMED


def _node(storage: Path) -> Node:
    """A node over `storage` whose one camera is unreachable (it keeps retrying), without MQTT."""
    config = {
        "version": 1,
        "node": {"id": "n1", "metrics": {"listen": None}},
        "storage": {"dir": str(storage)},
        "mqtt": {"enabled": False},
        "cameras": {"cam": {"source": "rtsp://127.0.0.1:1/none"}},
    }
    return Node(parse_config(yaml.safe_dump(config)))


def _crashed_while_recording(folder: Path, event: bytes) -> None:
    folder.mkdir(parents=True)
    (folder / "original.ts").write_bytes(b"G" * 1000)
    (folder / "event.json").write_bytes(event)


def test_a_node_starts_past_event_files_a_power_cut_emptied_and_leaves_them_in_place(tmp_path, caplog):
    storage = tmp_path / "st"
    events = storage / "events"
    emptied = [events / "20250101T000000-cam-0000100-1", events / "20250101T000000-cam-0000200-2"]
    _crashed_while_recording(emptied[0], b"")  # no manifest yet: signed at start
    _saved_event(emptied[1], storage / "keys")  # signed, its annotation pending: made at start
    (emptied[1] / "event.json").write_bytes(b"")
    intact = events / "20250101T000000-cam-0000300-3"  # the control: recovered at the same start
    _crashed_while_recording(intact, json.dumps({"id": intact.name, "camera": "cam"}).encode())
    node = _node(storage)
    with caplog.at_level(logging.ERROR, logger="edge"):
        node.start()
    try:
        assert [w.alive for w in node.cameras.values()] == [True]
        assert check_folder(intact).problems == [] and (intact / MANIFEST).exists()
        for folder in emptied:
            assert (folder / "event.json").read_bytes() == b"" and (folder / "original.ts").exists()
            assert any(folder.name in r.getMessage() and "left" in r.getMessage() for r in caplog.records), folder
    finally:
        node.stop()
