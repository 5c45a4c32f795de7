"""Retention under a quota (issue 16): non-evidence goes first, evidence is kept `storage.evidence_days` and
deleted after, held evidence is never deleted, and a warning is raised before evidence is at risk. Holds are
placed through a real Mosquitto broker on `events/<id>/hold`, whose payloads are hostile input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from support.broker import Broker
from support.servers import RtspServer, free_port, wait_for

from edge import retention
from edge.capture.camera import CameraState
from edge.config import StorageConfig, parse_config
from edge.events import read_rows
from edge.holds import Holds
from edge.node import Node
from edge.publish.manifest import iso
from edge.retention import FileClass, Level, Policy, scan, sweep

from conftest import REPO, loop_clip, sim_facade

DAY = 86400.0
KB = 1000
NOBODY = 65534  # the uid the sweep runs as when the tests run as root


def _node(tmp_path: Path, storage: dict, mqtt_cfg: dict | None = None) -> Node:
    config = {
        "version": 1,
        "node": {"id": "garden-a", "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "store"), **storage},
        "mqtt": mqtt_cfg or {"enabled": False},
        "cameras": {"cam": {"source": f"rtsp://127.0.0.1:{free_port()}/none"}},
    }
    return Node(parse_config(yaml.safe_dump(config)))


def _event(store: Path, event_id: str, age_days: float, size: int) -> Path:
    """An event's evidence folder as the pipeline leaves it: event.json, a read-only original, a manifest."""
    folder = store / "events" / event_id
    folder.mkdir(parents=True)
    started = iso(time.time() - age_days * DAY)
    (folder / "event.json").write_text(json.dumps({"id": event_id, "start_utc": started}))
    (folder / "original.ts").write_bytes(os.urandom(size))
    (folder / "original.ts").chmod(0o444)
    (folder / "manifest.json").write_text("{}")
    return folder


def _expendable(store: Path, rel: str, size: int, age_days: float) -> Path:
    path = store / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = time.time() - age_days * DAY
    os.utime(path, (t, t))
    return path


def _storage_rows(store: Path) -> list[dict]:
    path = store / "events.jsonl"
    return [r for r in read_rows(path) if r["type"] == "storage"] if path.exists() else []


def _fill(store: Path) -> dict[str, Path]:
    """46 kB + 46 kB of evidence (inside retention) and 45 kB of other files of different ages."""
    return {
        "ev1": _event(store, "20261101T000000-cam-0000001-1", 3, 46 * KB),
        "ev2": _event(store, "20261101T000000-cam-0000002-2", 1, 46 * KB),
        "log": _expendable(store, "logs/edge.log.1", 30 * KB, 2),
        "stats": _expendable(store, "stats/2026-11-28.jsonl", 10 * KB, 1),
        "tmp": _expendable(store, "status.json.tmp", 5 * KB, 0.5),
    }


def test_over_the_quota_non_evidence_goes_first_evidence_stays_and_a_warning_is_raised(tmp_path):
    node = _node(tmp_path, {"quota_gb": 100 * KB / 1e9})  # 100 kB
    files = _fill(node.storage)
    report = node.retention.run_once()
    # 137 kB: the oldest other files go, oldest first, until it fits; the evidence is all there.
    assert not files["log"].exists() and not files["stats"].exists()
    assert files["tmp"].exists()  # once under the quota, nothing more is deleted
    assert files["ev1"].is_dir() and files["ev2"].is_dir() and (files["ev1"] / "original.ts").stat().st_size
    assert report.used_bytes <= report.budget_bytes == 100 * KB
    # 92 kB of evidence that may not be deleted yet is over 90% (storage.warn_share) of 100 kB.
    assert report.level is Level.WARNING
    rows = _storage_rows(node.storage)
    assert [r["level"] for r in rows] == ["warning"], rows
    assert rows[0]["protected_bytes"] >= 92 * KB and rows[0]["quota_bytes"] == 100 * KB
    assert "evidence" in rows[0]["message"] and "30 days" in rows[0]["message"]
    schema = json.loads((REPO / "docs" / "schemas" / "storage.schema.json").read_text())
    jsonschema.validate(rows[0], schema)
    stats = node.stats()  # the periodic MQTT stats carry it too
    jsonschema.validate(stats, json.loads((REPO / "docs" / "schemas" / "stats.schema.json").read_text()))
    assert stats["storage"]["level"] == "warning" and stats["storage"]["budget_bytes"] == 100 * KB
    # Still there and still over 90%: the warning is not repeated at every sweep.
    node.retention.run_once()
    assert len(_storage_rows(node.storage)) == 1


def test_within_the_quota_nothing_is_deleted_and_no_warning_is_raised(tmp_path):
    node = _node(tmp_path, {"quota_gb": 1000 * KB / 1e9})  # 1 MB: the same files fit
    files = _fill(node.storage)
    report = node.retention.run_once()
    assert all(p.exists() for p in files.values())
    assert report.level is Level.OK and _storage_rows(node.storage) == []


def test_with_only_young_evidence_left_over_the_quota_the_node_reports_full_and_deletes_no_evidence(tmp_path):
    node = _node(tmp_path, {"quota_gb": 60 * KB / 1e9})
    files = _fill(node.storage)
    notes = _expendable(node.storage, "notes-from-the-installer.txt", KB, 100)  # not retention's to judge
    report = node.retention.run_once()
    assert files["ev1"].is_dir() and files["ev2"].is_dir() and notes.exists()
    assert not any(files[k].exists() for k in ("log", "stats", "tmp"))  # every expendable file went first
    assert report.level is Level.FULL and [r["level"] for r in _storage_rows(node.storage)] == ["full"]


def test_evidence_past_evidence_days_is_deleted_and_younger_evidence_kept(tmp_path):
    node = _node(tmp_path, {"evidence_days": 30})
    old = _event(node.storage, "20261001T000000-cam-0000001-1", 31, KB)
    young = _event(node.storage, "20261101T000000-cam-0000001-1", 29, KB)
    report = node.retention.run_once()
    assert not old.exists() and young.is_dir()
    assert report.expired == [old.name]


def test_a_clock_stepped_ahead_while_the_node_runs_deletes_no_evidence_before_its_days(tmp_path, caplog):
    """A node that booted with a stale clock (no RTC, internet down: the cameras still work on the LAN) dates its
    events two months back; NTP then steps the clock. The evidence must still be kept `evidence_days`."""
    node = _node(tmp_path, {"evidence_days": 30})
    real = time.time()
    wall, mono = [real - 60 * DAY], [1000.0]  # the node's clock, two months behind, and the time seen passing
    node.retention.wall = lambda: wall[0]
    node.retention.clock.monotonic = lambda: mono[0]
    during = _event(node.storage, "20261101T000000-cam-0000001-1", 60, KB)  # recorded under the stale clock
    young = _event(node.storage, "20261101T000000-cam-0000002-2", 59, KB)  # a day later
    old = _event(node.storage, "20260801T000000-cam-0000003-3", 100, KB)  # 40 days old by any clock: goes
    assert node.retention.run_once().expired == [old.name]
    wall[0], mono[0] = real + 365 * DAY, mono[0] + 60.0  # the clock stepped ahead (stale, then a bad server)
    assert node.retention.run_once().expired == [] and during.is_dir() and young.is_dir()
    assert "wall clock is" in caplog.text
    mono[0] += 29 * DAY
    assert node.retention.run_once().expired == []
    mono[0] += 1.5 * DAY  # the control: 30 days seen passing, it goes
    assert node.retention.run_once().expired == [during.name] and young.is_dir()


def test_files_written_while_the_clock_was_ahead_still_go_when_over_the_quota(tmp_path):
    """A node whose clock ran a year ahead (a bad time server) until NTP set it back: the logs it wrote meanwhile
    are dated in the future. They must not be taken for files being written now, kept until that date while the
    disk fills."""
    node = _node(tmp_path, {"quota_gb": 20 * KB / 1e9})
    ahead = [_expendable(node.storage, f"logs/edge.log.{i}", 30 * KB, -365 + i) for i in (1, 2)]
    now = _expendable(node.storage, "status.json.tmp", 30 * KB, 0)  # the control: being written, left
    report = node.retention.run_once()
    assert not any(p.exists() for p in ahead) and report.expendable_deleted == 2
    assert now.exists()


def test_a_file_dated_ahead_goes_before_older_ones_as_it_was_written_under_a_clock_since_set_back(tmp_path):
    node = _node(tmp_path, {"quota_gb": 40 * KB / 1e9})
    ahead = _expendable(node.storage, "logs/edge.log.1", 30 * KB, -365)  # written while the clock ran a year on
    older = _expendable(node.storage, "logs/edge.log.2", 30 * KB, 5)  # five days old: the next to go, not needed
    report = node.retention.run_once()
    assert not ahead.exists() and report.expendable_deleted == 1
    assert older.exists()


def test_an_unreadable_holds_file_stops_every_deletion_of_evidence(tmp_path):
    store = tmp_path / "store"
    old = _event(store, "20261001T000000-cam-0000001-1", 40, KB)
    policy = Policy(quota_bytes=None, free_min_bytes=0, evidence_s=30 * DAY, warn_share=0.9)
    (store / "holds.json").write_text("{not json")
    assert sweep(store, policy, Holds(store)).expired == [] and old.is_dir()
    (store / "holds.json").write_text('{"held": {}}')  # the control: repaired, the old event goes
    assert sweep(store, policy, Holds(store)).expired == [old.name] and not old.exists()


def test_a_holds_file_repaired_while_the_node_runs_lets_retention_resume_and_is_obeyed(tmp_path, caplog):
    store = tmp_path / "store"
    store.mkdir()
    (store / "holds.json").write_text('{"held": {"20261001T000000-cam-00')  # torn by a power cut
    node = _node(tmp_path, {"evidence_days": 30})  # the node starting on it
    held, free = (_event(store, f"20261001T000000-cam-000000{i}-{i}", 40, KB) for i in (1, 2))
    assert node.retention.run_once().expired == [] and held.is_dir() and free.is_dir()
    assert not node.holds.set(held.name, True)  # refused while the file cannot be read
    # The operator repairs it (from a backup, holding the case under investigation): no restart.
    (store / "holds.json").write_text(json.dumps({"held": {held.name: "2026-10-02T00:00:00Z"}}))
    assert node.retention.run_once().expired == [free.name] and held.is_dir() and not free.exists()
    assert node.holds.is_held(held.name) and "readable again" in caplog.text
    assert node.holds.set(held.name, False) and not node.holds.is_held(held.name)  # holds change again
    assert node.retention.run_once().expired == [held.name]
    assert caplog.text.count("cannot read the evidence holds") == 1  # not once a sweep


def _policy() -> Policy:
    return Policy(quota_bytes=None, free_min_bytes=0, evidence_s=30 * DAY, warn_share=0.9)


def test_only_folders_the_node_made_count_as_evidence_whatever_else_lies_in_events(tmp_path):
    # storage.dir pointed at a folder holding other data: an events/ folder of someone else's things.
    store = tmp_path / "store"
    theirs = store / "events" / "2019 holiday"
    theirs.mkdir(parents=True)
    (theirs / "photo.jpg").write_bytes(b"x" * KB)
    no_record = store / "events" / "20261001T000000-cam-0000003-3"  # named like an event, no event.json
    no_record.mkdir()
    for folder in (theirs, no_record):
        t = time.time() - 400 * DAY
        os.utime(folder, (t, t))
    ours = _event(store, "20261001T000000-cam-0000001-1", 40, KB)  # the control: the node's, expired
    report = sweep(store, _policy(), Holds(store))
    assert report.expired == [ours.name] and not ours.exists()
    assert (theirs / "photo.jpg").exists() and no_record.is_dir()
    assert report.protected_bytes >= KB  # counted as the node's own: kept, never deleted


def test_a_hold_placed_while_a_sweep_deletes_keeps_the_evidence_it_names(tmp_path, monkeypatch):
    store = tmp_path / "store"
    events = {_event(store, f"20261001T000000-cam-000000{i}-{i}", 40, KB).name for i in (1, 2)}
    holds = Holds(store)
    placed: list[tuple[str, bool]] = []
    real_delete = retention._delete

    def delete(item):
        if item.event_id in events and not placed:  # the hold (an MQTT callback) comes in mid-sweep
            other = (events - {item.event_id}).pop()
            placed.append((other, holds.set(other, True)))
        return real_delete(item)

    monkeypatch.setattr(retention, "_delete", delete)
    report = sweep(store, _policy(), holds)
    [(other, taken)] = placed
    assert taken and holds.is_held(other) and (store / "events" / other).is_dir()
    assert report.expired == sorted(events - {other})  # the control: the one not held went


def test_a_hold_is_refused_for_evidence_that_is_not_or_no_longer_here(tmp_path):
    store = tmp_path / "store"
    kept = _event(store, "20261101T000000-cam-0000001-1", 1, KB)
    holds = Holds(store)
    assert not holds.set("20261001T000000-cam-0000009-9", True)  # deleted meanwhile, or never here
    assert not holds.is_held("20261001T000000-cam-0000009-9") and not (store / "holds.json").exists()
    assert holds.set(kept.name, True) and holds.is_held(kept.name)  # the control


def test_a_hold_that_cannot_be_saved_is_not_reported_as_taken(tmp_path):
    store = tmp_path / "store"
    event = _event(store, "20261101T000000-cam-0000001-1", 1, KB)
    holds = Holds(store)
    (store / "holds.json.tmp").mkdir()  # the replacement file cannot be written (as on a full disk)
    assert not holds.set(event.name, True) and not holds.is_held(event.name)
    assert not (store / "holds.json").exists()
    (store / "holds.json.tmp").rmdir()  # the control: writable again, the hold is taken and saved
    assert holds.set(event.name, True) and event.name in Holds(store).ids()


def test_a_hold_is_synced_to_disk_before_it_is_reported_as_taken(tmp_path, monkeypatch):
    # After a power cut an unsynced holds.json may come back empty: retention stops until it is repaired, and
    # the hold a dispatcher was told of is lost.
    store = tmp_path / "store"
    event = _event(store, "20261101T000000-cam-0000001-1", 1, KB)
    holds, synced, fsync = Holds(store), [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd))[1])
    assert holds.set(event.name, True)
    assert [Path(p).name for p in synced] == ["holds.json.tmp", "store"]  # its data, then its name in the folder
    assert event.name in Holds(store).ids()  # and it reads back


def test_an_event_whose_deletion_was_cut_short_is_still_evidence_and_goes_at_the_next_sweep(tmp_path):
    store = tmp_path / "store"
    old = _event(store, "20261001T000000-cam-0000001-1", 40, KB)
    stuck = old / "stills"
    stuck.mkdir()
    # A mount point cannot be removed: the deletion stops there, whatever order the folder lists its files in.
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(stuck)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        assert sweep(store, _policy(), Holds(store)).expired == []
    finally:
        subprocess.run(["umount", "-l", str(stuck)], check=True)
    assert (old / "event.json").is_file()  # still the node's evidence, not an unknown folder kept for ever
    assert sweep(store, _policy(), Holds(store)).expired == [old.name] and not old.exists()


@pytest.fixture
def unprivileged_store():
    """A storage.dir swept as an unprivileged user, as the unit runs the node (root reads every folder): under
    root the sweep runs with the effective uid of `nobody`, owner of storage.dir."""
    base = Path(tempfile.mkdtemp(prefix="edge-retention-"))
    base.chmod(0o711)
    store = base / "store"
    (store / "events").mkdir(parents=True)
    yield store
    for root, dirs, _files in os.walk(base):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
    shutil.rmtree(base)


@contextmanager
def _as_node_user(store: Path):
    if os.geteuid() != 0:
        yield
        return
    for root, dirs, files in os.walk(store):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            if Path(name).name != "locked":
                os.chown(name, NOBODY, NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_folder_in_events_the_node_may_not_read_stops_no_sweep(unprivileged_store):
    """An installer copies a folder into events/ as root: the node may not look inside. Retention must go on
    freeing space and expiring evidence; that folder is not the node's to judge, and stays."""
    store = unprivileged_store
    locked = store / "events" / "locked"
    locked.mkdir()
    (locked / "event.json").write_text("{}")
    locked.chmod(0o700 if os.geteuid() == 0 else 0)  # root's own (under root), or nobody's to read
    old = _event(store, "20261001T000000-cam-0000001-1", 40, KB)  # the control: expired, goes
    log = _expendable(store, "logs/edge.log.1", 30 * KB, 2)
    policy = Policy(quota_bytes=20 * KB, free_min_bytes=0, evidence_s=30 * DAY, warn_share=0.9)
    with _as_node_user(store):
        report = sweep(store, policy, Holds(store))
    assert report.expired == [old.name] and not old.exists()
    assert not log.exists() and report.expendable_deleted == 1
    assert locked.is_dir() and (locked / "event.json").is_file()


# -- holds over MQTT -----------------------------------------------------------------------------------------
USERS = {"garden-a": "pw-a", "center": "pw-center", "monitor": "pw-monitor"}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", USERS).start()
    yield b
    b.stop()


def _mqtt_of(broker: Broker) -> dict:
    """garden-a's mqtt section for the test broker."""
    return {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": "garden-a",
        "password": "pw-a",
        "tls": {"ca_file": str(broker.ca)},
    }


def _client(broker: Broker, user: str, password: str, topic: str | None = None) -> tuple[mqtt.Client, list]:
    got: list = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.monotonic_ns()}")
    c.tls_set(ca_certs=str(broker.ca))
    c.username_pw_set(user, password)
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    if topic:
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p=None: ready.set()
    else:
        c.on_connect = lambda cl, u, f, rc, p=None: ready.set()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert ready.wait(10)
    return c, got


def test_held_evidence_outlives_its_retention_and_hostile_hold_commands_change_nothing(tmp_path, broker):
    os.environ["EDGE_TEST_PW"] = "pw-a"
    mqtt_cfg = {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": "garden-a",
        "password": "${EDGE_TEST_PW}",
        "tls": {"ca_file": str(broker.ca)},
    }
    try:
        node = _node(tmp_path, {"evidence_days": 30}, mqtt_cfg)
    finally:
        del os.environ["EDGE_TEST_PW"]
    held = _event(node.storage, "20261001T000000-cam-0000001-1", 40, KB)
    other = _event(node.storage, "20261001T000000-cam-0000002-2", 40, KB)
    _, states = _client(broker, "monitor", "pw-monitor", "edge/garden-a/events/+/hold/state")
    center, _ = _client(broker, "center", "pw-center")
    node.publisher.start()
    try:
        assert node.publisher.commands_ready.wait(10)
        base = "edge/garden-a/events"
        hostile = [
            (f"{base}/{other.name}/hold", b"MAYBE"),
            (f"{base}/{other.name}/hold", b"ON" + b" " * 100),  # too long to be a command
            (f"{base}/{other.name}/hold", b"\xff\xfeON"),
            (f"{base}/20261001T000000-cam-9999999-9/hold", b"ON"),  # no such event here
            (f"{base}/../hold", b"ON"),
            (f"{base}/%2e%2e/hold", b"ON"),
        ]
        for topic, payload in hostile:
            center.publish(topic, payload, qos=1).wait_for_publish(5)
        # The control, sent last: a real event held, answered on its retained hold/state.
        center.publish(f"{base}/{held.name}/hold", b" on\n", qos=1).wait_for_publish(5)
        assert wait_for(lambda: (f"{base}/{held.name}/hold/state", b"ON") in states, 10), states
        assert node.holds.ids() == {held.name}
        assert json.loads((node.storage / "holds.json").read_text())["held"].keys() == {held.name}
        assert [t for t, _ in states] == [f"{base}/{held.name}/hold/state"]

        report = node.retention.run_once()
        assert held.is_dir() and not other.exists() and report.expired == [other.name]
        assert report.held_bytes > 0

        # Released, it is old enough to go at the next sweep.
        center.publish(f"{base}/{held.name}/hold", b"OFF", qos=1).wait_for_publish(5)
        assert wait_for(lambda: not node.holds.ids(), 10)
        assert node.retention.run_once().expired == [held.name] and not held.exists()
    finally:
        node.publisher.stop()
        center.disconnect()


def test_an_event_whose_evidence_retention_deleted_leaves_no_retained_hold_state(tmp_path, broker):
    node = _node(tmp_path, {"evidence_days": 30}, _mqtt_of(broker))
    released = _event(node.storage, "20261001T000000-cam-0000001-1", 40, KB)
    still_held = _event(node.storage, "20261001T000000-cam-0000002-2", 40, KB)
    _, states = _client(broker, "monitor", "pw-monitor", "edge/garden-a/events/+/hold/state")
    center, _ = _client(broker, "center", "pw-center")
    base = "edge/garden-a/events"
    node.publisher.start()
    try:
        assert node.publisher.commands_ready.wait(10)
        for event in (released, still_held):
            center.publish(f"{base}/{event.name}/hold", b"ON", qos=1).wait_for_publish(5)
        center.publish(f"{base}/{released.name}/hold", b"OFF", qos=1).wait_for_publish(5)
        assert wait_for(lambda: (f"{base}/{released.name}/hold/state", b"OFF") in states, 10), states
        assert node.retention.run_once().expired == [released.name]
        assert wait_for(lambda: node.publisher.outbox.depth()[0] == 0, 10)  # the broker has what it was sent
        _, fresh = _client(broker, "monitor", "pw-monitor", "edge/garden-a/events/#")
        # A command sent after subscribing comes after every retained message: once it is in, all of them are.
        marker = f"{base}/20261001T000000-cam-9999999-9/hold"  # no such event: the node ignores it
        center.publish(marker, b"OFF", qos=1).wait_for_publish(5)
        assert wait_for(lambda: (marker, b"OFF") in fresh, 10), fresh
        # Control: the fresh subscriber was handed the held event's retained answer...
        assert (f"{base}/{still_held.name}/hold/state", b"ON") in fresh, fresh
        # ...and nothing of the event whose evidence is gone.
        assert [t for t, _ in fresh if released.name in t] == []
    finally:
        node.publisher.stop()
        center.disconnect()


def test_after_a_restart_the_retained_storage_level_says_where_storage_stands_now(tmp_path, broker):
    # The last run left "warning" retained on the broker; space was freed while the node was down.
    center, _ = _client(broker, "garden-a", "pw-a")
    stale = {"v": 1, "type": "storage", "node": "garden-a", "level": "warning"}
    center.publish("edge/garden-a/storage", json.dumps(stale), qos=1, retain=True).wait_for_publish(5)
    center.disconnect()
    mqtt_cfg = _mqtt_of(broker)
    node = _node(tmp_path, {"quota_gb": 1000 * KB / 1e9}, mqtt_cfg)
    _fill(node.storage)  # fits within the quota: ok
    node.publisher.start()
    try:
        assert node.retention.run_once().level is Level.OK
        node.retention.run_once()
        _, seen = _client(broker, "monitor", "pw-monitor", "edge/garden-a/storage")
        assert wait_for(lambda: seen and json.loads(seen[-1][1])["level"] == "ok", 10), seen
        assert _storage_rows(node.storage) == []  # not a change of level: nothing logged, no row
    finally:
        node.publisher.stop()


def test_the_center_hears_of_a_storage_warning_even_when_events_jsonl_cannot_be_written(tmp_path, broker):
    mqtt_cfg = _mqtt_of(broker)
    node = _node(tmp_path, {}, mqtt_cfg)
    _fill(node.storage)
    kept = sum(it.size for it in scan(node.storage) if it.cls is not FileClass.EXPENDABLE)
    node.retention.configure(StorageConfig(dir=node.storage, quota_gb=kept / 0.95 / 1e9))  # 95% full: warning
    (node.storage / "events.jsonl").mkdir()  # cannot be appended to, as on a disk full to the last byte
    _, seen = _client(broker, "monitor", "pw-monitor", "edge/garden-a/storage")
    node.publisher.start()
    try:
        assert node.retention.run_once().level is Level.WARNING
        assert wait_for(lambda: seen and json.loads(seen[-1][1])["level"] == "warning", 10), seen
        (node.storage / "events.jsonl").rmdir()  # the control: writable again, the next change gets its row
        shutil.rmtree(node.storage / "events" / "20261101T000000-cam-0000002-2")
        assert node.retention.run_once().level is Level.OK
        assert [r["level"] for r in _storage_rows(node.storage)] == ["ok"]
    finally:
        node.publisher.stop()


# -- a full disk ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB filesystem of its own (tmpfs), so that it can really fill up."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def _fill_up(folder: Path) -> None:
    """Write into `folder` until the disk refuses."""
    with (folder / "original.ts").open("wb") as f:
        try:
            while True:
                f.write(os.urandom(64 * 1024))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_a_full_disk_stops_neither_capture_nor_alerts(small_disk, sim_clip, tmp_path, caplog):
    folder = sim_clip("throw", 1)
    srv = RtspServer(loop_clip(folder / "scene.mp4", 4, tmp_path / "loop.mp4")).start()
    config = {
        "version": 1,
        "node": {"id": "full", "metrics": {"listen": None}},
        "storage": {"dir": str(small_disk / "store")},
        "mqtt": {"enabled": False},
        "cameras": {"cam": {"source": srv.url, "facade": sim_facade(folder)}},
    }
    node = Node(parse_config(yaml.safe_dump(config)))
    young = _event(node.storage, "20261101T000000-cam-0000001-1", 1, 0)  # evidence that must be kept
    _fill_up(young)
    node.start()
    try:
        assert wait_for(lambda: node.retention.last is not None, 10)
        assert node.retention.level is Level.FULL and young.is_dir()
        events = ("edge_events_total", {"camera": "cam", "level": "confirmed"})
        assert wait_for(lambda: node.metrics.registry.get_sample_value(*events), 40, 0.5)  # the alert is raised
        assert any(r.getMessage().startswith("ALERT") for r in caplog.records)
        frames = node.cameras["cam"].frames
        assert wait_for(lambda: node.cameras["cam"].frames > frames + 50, 20)  # and capture goes on after it
        assert node.status("cam").state == CameraState.ONLINE and node.stuck_workers() == {}
        assert any("cannot record" in r.getMessage() or "No space" in r.getMessage() for r in caplog.records)
    finally:
        node.stop()
        srv.kill()
