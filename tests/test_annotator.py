"""Annotated copies are made off the frame path: in a niced child process, resumable, never losing evidence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.servers import wait_for

from edge.publish.annotator import Annotator, pending
from edge.publish.evidence import PENDING, EvidenceChanged, EvidenceStage, annotate
from edge.publish.manifest import load_or_create_key, verify_folder, write_manifest

from conftest import read_events, run_edge


@pytest.fixture(scope="module")
def saved(sim_clip, tmp_path_factory):
    """An event folder as the worker leaves it: original and manifest signed, the annotated copy to make."""
    folder = sim_clip("throw", 1)
    out = tmp_path_factory.mktemp("annotator")
    proc = run_edge(
        "replay", str(folder / "scene.mp4"), "--config", str(folder / "config.yaml"), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    return out, read_events(out), load_or_create_key(folder / "storage" / "keys")


def _unannotated(out, event, tmp_path, key):
    """A copy of an event folder with its annotated clip and still removed and its marker back."""
    import shutil

    src = (out / event["original"]).parent
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for name in ("annotated.mp4", "still.jpg"):
        (dst / name).unlink()
    body = json.loads((dst / "manifest.json").read_text())["manifest"]
    info = {k: v for k, v in body.items() if k not in ("v", "files", "signed_utc", "key_id", "public_key")}
    names = [n for n in body["files"] if n not in ("annotated.mp4", "still.jpg")]
    write_manifest(dst, names, info, key)  # as signed at stage original
    (dst / PENDING).touch()
    return dst


class Done:
    def __init__(self):
        self.files, self.event = [], threading.Event()

    def __call__(self, record, files):
        self.files.append((record, files))
        self.event.set()


def _nice(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])


def test_annotation_runs_in_a_lower_priority_process_and_signs_again(saved, tmp_path):
    out, events, key = saved
    folder = _unannotated(out, events[0], tmp_path, key)
    done = Done()
    annotator = Annotator(key, done)
    annotator.start()
    try:
        assert wait_for(lambda: _nice(annotator._child.pid) > _nice(os.getpid()), 15)  # below detection
        annotator.submit(folder, "test/cam confirmed", None)
        assert annotator.drain(60)
    finally:
        annotator.stop(abort=False)
    record, files = done.files[0]
    assert files.stage == EvidenceStage.COMPLETE and files.annotated == "annotated.mp4" and files.still
    assert record["id"] == events[0]["id"] and not (folder / PENDING).exists()
    assert verify_folder(folder) == []
    assert {"annotated.mp4", "still.jpg"} <= set(
        json.loads((folder / "manifest.json").read_text())["manifest"]["files"]
    )


def test_an_original_changed_since_it_was_signed_is_not_signed_again(saved, tmp_path):
    out, events, key = saved
    folder = _unannotated(out, events[0], tmp_path, key)
    original = folder / Path(events[0]["original"]).name
    signed, data = (folder / "manifest.json").read_bytes(), original.read_bytes()
    original.write_bytes(data[:500] + bytes([data[500] ^ 1]) + data[501:])  # one bit flipped
    with pytest.raises(EvidenceChanged, match=original.name):
        annotate(folder, "test/cam confirmed", None, key)
    assert (folder / "manifest.json").read_bytes() == signed and verify_folder(folder) != []  # still shows it
    original.write_bytes(data)  # the control: as signed, it is annotated and signed again
    annotate(folder, "test/cam confirmed", None, key)
    assert verify_folder(folder) == [] and (folder / "manifest.json").read_bytes() != signed


def test_the_annotated_clip_and_still_are_on_disk_before_the_manifest_signing_them(saved, tmp_path, monkeypatch):
    # After a power cut, a signed file come back empty fails verification, and the manifest signed before it
    # has been replaced by then.
    out, events, key = saved
    folder = _unannotated(out, events[0], tmp_path, key)
    synced, fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd))[1])
    annotate(folder, "test/cam confirmed", None, key)
    names = [Path(p).name for p in synced]
    signed = names.index("manifest.json.tmp")
    assert ".annotated-partial.mp4" in names[:signed] and "still.jpg.tmp" in names[:signed], names
    assert names[signed + 1 :] == [folder.name]  # and the folder after it: every rename in it is durable


def test_a_killed_annotating_process_is_replaced_and_the_work_done(saved, tmp_path):
    out, events, key = saved
    folder = _unannotated(out, events[0], tmp_path, key)
    done = Done()
    annotator = Annotator(key, done)
    annotator.start()
    try:
        first = annotator._child.pid
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        assert wait_for(lambda: annotator._child.pid != first and annotator._child.is_alive(), 10)
        annotator.submit(folder, "test/cam confirmed", None)
        assert annotator.drain(60)
    finally:
        annotator.stop(abort=False)
    assert done.files and done.files[0][1].annotated == "annotated.mp4" and verify_folder(folder) == []


@pytest.mark.parametrize("delay_s", [0.0, 0.25, 0.5, 0.55, 0.75])
def test_a_stop_while_a_dead_annotating_process_is_being_replaced_leaves_none_running(saved, delay_s):
    out, events, key = saved
    annotator = Annotator(key, Done())
    annotator.start()
    first = annotator._child.pid
    os.kill(first, signal.SIGKILL)
    time.sleep(delay_s)  # the parent polls every 0.5 s: before, during and after its replacing the child
    annotator.stop(abort=True, timeout=0.1)  # the shortest budget the node gives it
    assert wait_for(lambda: not annotator._forwarder.is_alive(), 5)  # it polls; no replacement after stop
    assert wait_for(lambda: not annotator._child.is_alive(), 5)
    assert wait_for(lambda: not _alive(first), 5)  # control: the process killed is gone too


def test_an_aborted_annotation_stays_marked_for_the_next_start(saved, tmp_path):
    out, events, key = saved
    folder = _unannotated(out, events[0], tmp_path, key)
    annotator = Annotator(key, Done())
    annotator.start()
    annotator.stop(abort=True)  # the node stopping before the child got to it
    annotator.submit(folder, "test/cam confirmed", None)  # nobody left to take it
    assert pending(tmp_path) == [folder] and verify_folder(folder) == []  # the original evidence stands
    done = Done()
    again = Annotator(key, done)  # the next start
    again.start()
    try:
        for f in pending(tmp_path):
            again.submit(f, "test/cam confirmed", None)
        assert again.drain(60)
    finally:
        again.stop(abort=False)
    assert pending(tmp_path) == [] and done.files[0][1].still == "still.jpg"


def test_a_node_with_a_long_queue_of_annotations_exits_at_once_when_stopped(tmp_path):
    script = """
import sys, time
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edge.geometry import CameraGeometry
from edge.publish.annotator import Annotator
annotator = Annotator(Ed25519PrivateKey.generate(), lambda r, f: None)
annotator.start()
for k in range(3000):  # more than a pipe holds: a burst of events on four cameras
    annotator.submit(Path(sys.argv[1]) / f"event-{k:05d}-{'x' * 200}", "node/cam suspected", None)
annotator.stop(abort=True)
print("stopped", flush=True)
"""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "stopped" in proc.stdout, proc.stderr[-2000:]
    assert time.monotonic() - start < 15  # it used to wait forever at exit, flushing the queue to a dead child


_ORPHAN_PARENT = """
import sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edge.publish.annotator import Annotator
annotator = Annotator(Ed25519PrivateKey.generate(), lambda *a: None)
annotator.start()
print(annotator._child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_the_annotating_process_dies_with_a_node_killed_outright():
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)
        assert _alive(child)  # control: it runs while the node does
        parent.kill()  # SIGKILL: no stop(), no atexit
        parent.wait(10)
        assert wait_for(lambda: not _alive(child), 10)
    finally:
        parent.kill()
        parent.stdout.close()
