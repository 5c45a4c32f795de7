"""Alerts and clips reach the community center through a real Mosquitto broker, with nothing lost."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from support.broker import Broker
from support.disk import fill_up, small_disk
from support.servers import free_port, wait_for

from edge.config import MqttConfig, parse_config
from edge.listen import Listener
from edge.node import Node
from edge.publish.evidence import EvidenceFiles, EvidenceStage
from edge.publish.mqtt import Backoff, EventType, MqttPublisher, Reconnect, make_client
from edge.publish.outbox import Outbox

from conftest import REPO, loop_clip, sim_facade

USERS = {"garden-a": "pw-a", "garden-b": "pw-b", "center": "pw-center", "monitor": "pw-monitor"}
_watchers: list[mqtt.Client] = []


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", USERS).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def long_clip(sim_clip, tmp_path_factory):
    """The throw clip played twelve times over (96 s, two throws every 8 s)."""
    folder = sim_clip("throw", 1)
    return loop_clip(folder / "scene.mp4", 12, tmp_path_factory.mktemp("mqtt") / "long.mp4"), sim_facade(folder)


def _schema(name):
    return jsonschema.Draft202012Validator(
        json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())
    )


def _config(tmp_path, broker, user, source=None, facade=None, name="cfg.yaml", **mqtt_extra):
    cfg = {
        "version": 1,
        "node": {"id": user, "status_interval_s": 2, "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / user)},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "username": user,
            "password": "${EDGE_TEST_PW}",
            "tls": {"ca_file": str(broker.ca)},
            **mqtt_extra,
        },
        "cameras": {
            "cam": {
                "source": str(source or "/dev/null"),
                "facade": facade,
                "record": {"pre_s": 2, "post_s": 1, "buffer_s": 10},
            }
        },
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _parse(path, password):
    os.environ["EDGE_TEST_PW"] = password
    try:
        return parse_config(path.read_text())
    finally:
        del os.environ["EDGE_TEST_PW"]


@pytest.fixture
def center(tmp_path, broker):
    listener = Listener(
        _parse(_config(tmp_path, broker, "center", name="center.yaml"), "pw-center"),
        tmp_path / "received",
        client_id="center-test",
        on_line=lambda _: None,
    )
    listener.start()
    assert listener.connected.wait(10)
    yield listener
    listener.stop()


def _watch(broker, topic) -> dict:
    """Latest payload per topic seen by a fresh subscriber; it runs until the next _watch.

    It logs in as `monitor`, not `center`: the broker makes the client id the user name, so a second `center` login
    would take over the center fixture's session. And one `monitor` login at a time, for the same reason."""
    while _watchers:
        old = _watchers.pop()
        old.disconnect()
        old.loop_stop()
    got: dict = {}
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")
    _watchers.append(probe)
    probe.tls_set(ca_certs=str(broker.ca))
    probe.username_pw_set("monitor", "pw-monitor")
    probe.on_message = lambda c, u, m: got.__setitem__(m.topic, m.payload)
    probe.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
    probe.connect("127.0.0.1", broker.port)
    probe.loop_start()
    return got


def _connect(broker, user, password, tls=True, timeout=5.0) -> tuple[str, object]:
    """How one connection attempt ended, so a refusal is never mistaken for a timeout:
    ("accepted", reason) or ("refused", reason) from the broker's CONNACK, ("closed", reason) when the broker
    hung up before any CONNACK, ("error", exception) when connect() itself failed, ("timeout", None)."""
    outcome: dict = {}
    done = threading.Event()

    def on_connect(c, u, flags, rc, props=None):
        outcome.setdefault("end", ("refused" if rc.is_failure else "accepted", rc))
        done.set()

    def on_disconnect(c, u, flags, rc, props=None):
        outcome.setdefault("end", ("closed", rc))
        done.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"probe-{user}-{time.monotonic_ns()}",
        reconnect_on_failure=False,
    )
    if tls:
        client.tls_set(ca_certs=str(broker.ca))
    client.username_pw_set(user, password)
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", broker.port, keepalive=5)
    except (OSError, ValueError) as exc:
        return "error", exc
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome.get("end", ("timeout", None))


def _new_ids(listener):
    return {e["id"] for e in listener.events if e["type"] == "new"}


def _local_new_ids(storage):
    path = storage / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["id"] for r in rows if r["type"] == "new"}


def test_an_alert_from_a_throw_reaches_the_center_with_a_verified_clip(tmp_path, broker, center, long_clip):
    node = Node(_parse(_config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1]), "pw-a"))
    node.start()
    try:
        assert wait_for(lambda: any(k[2] == "clip" for k in center.files_ok), 40), center.events
        new = [e for e in center.events if e["type"] == "new"]
        assert new and new[0]["node"] == "garden-a" and new[0]["origin"]["floor"] in (24, 25, 11, 12)
        assert len(json.dumps(new[0]).encode()) < 8192
        ready = wait_for(lambda: [e for e in center.events if e["type"] == "clip_ready"], 10)
        node_id, event_id, _ = next(k for k in center.files_ok if k[2] == "clip")
        clip = tmp_path / "received" / node_id / event_id / "clip.mp4"
        assert clip.stat().st_size == next(e for e in ready if e["id"] == event_id)["clip_bytes"]
        assert wait_for(lambda: center.available.get("garden-a") == "online", 5)
        assert wait_for(lambda: ("garden-a", "cam") in center.status and "garden-a" in center.stats, 10)
        assert center.files_bad == []
        for e in center.events:
            _schema("event").validate(e)
        _schema("status").validate(center.status[("garden-a", "cam")])
        _schema("stats").validate(center.stats["garden-a"])
    finally:
        node.stop()


def test_the_signed_manifest_of_an_alert_s_evidence_is_published_as_written(tmp_path, broker, center, long_clip):
    manifests = _record_all(broker, "edge/garden-a/events/+/manifest")
    node = Node(_parse(_config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1]), "pw-a"))
    node.start()
    try:
        ready = wait_for(lambda: [e for e in center.events if e["type"] == "clip_ready"], 40)
        assert ready
        event_id = ready[0]["id"]
        topic = f"edge/garden-a/events/{event_id}/manifest"
        assert wait_for(lambda: any(t == topic for t, _ in manifests), 10), [t for t, _ in manifests]
        sent = next(p for t, p in manifests if t == topic)
        local = tmp_path / "garden-a" / "events" / event_id / "manifest.json"
        assert sent == local.read_bytes()
        signed = json.loads(sent)
        assert signed["signature"] and len(signed["manifest"]["files"]) >= 2  # the original and what was annotated
    finally:
        node.stop()


def test_the_original_clip_is_sent_on_request(tmp_path, broker, center, long_clip):
    node = Node(_parse(_config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1]), "pw-a"))
    node.start()
    try:
        ready = wait_for(lambda: [e for e in center.events if e["type"] == "clip_ready"], 40)
        assert ready and node.publisher.commands_ready.wait(10)
        event_id = ready[0]["id"]
        center.client.publish(f"edge/garden-a/events/{event_id}/original/get", b"", qos=1)
        assert wait_for(lambda: ("garden-a", event_id, "original") in center.files_ok, 20), center.files_bad
        got = tmp_path / "received" / "garden-a" / event_id / "original.ts"
        local = tmp_path / "garden-a" / "events" / event_id / "original.ts"
        assert got.read_bytes() == local.read_bytes()
    finally:
        node.stop()


def _record_all(broker, topic) -> list:
    """Every (topic, payload) a fresh subscriber sees, in order; it runs until the test ends.

    It logs in as `monitor`: a second `center` login would take over the center fixture's session."""
    got: list = []
    ready = threading.Event()
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")
    probe.tls_set(ca_certs=str(broker.ca))
    probe.username_pw_set("monitor", "pw-monitor")
    probe.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    probe.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
    probe.on_subscribe = lambda c, u, mid, rcs, p=None: ready.set()
    probe.connect("127.0.0.1", broker.port)
    probe.loop_start()
    assert ready.wait(10)
    return got


def test_original_get_serves_only_a_valid_event_id_inside_storage_events(tmp_path, broker, center):
    storage = tmp_path / "garden-a"
    events = storage / "events"
    real = "20260101T000000-cam-0000327-63"
    (events / real).mkdir(parents=True)
    (events / real / "original.ts").write_bytes(b"G" + os.urandom(5000))
    # Decoys that a sloppy id check would serve: files next to the event folders, and a link out of them.
    (events / "original.ts").write_bytes(b"G storage/events itself")
    (storage / "original.ts").write_bytes(b"G storage itself")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "original.ts").write_bytes(b"G outside storage")
    (events / "linked").symlink_to(tmp_path / "outside")
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, storage)
    seen = _record_all(broker, "edge/garden-a/#")
    publisher.start()
    try:
        assert publisher.commands_ready.wait(10)
        hostile = ["", "..", ".", "%2e%2e", "%2E%2E%2Fx", "linked", "missing", " ", "a" * 200]
        for eid in hostile:
            center.client.publish(f"edge/garden-a/events/{eid}/original/get", b"", qos=1).wait_for_publish(5)
        # The control, sent last: a real event's original is still served, and once it is, the rest had their turn.
        center.client.publish(f"edge/garden-a/events/{real}/original/get", b"", qos=1).wait_for_publish(5)
        assert wait_for(lambda: ("garden-a", real, "original") in center.files_ok, 20), center.files_bad
        time.sleep(1.0)
        file_topics = {t for t, _ in seen if t.endswith("/original")}
        assert file_topics == {f"edge/garden-a/events/{real}/original"}, file_topics
        ready = [json.loads(p) for t, p in seen if t == "edge/garden-a/events"]
        assert [e["id"] for e in ready if e["type"] == "original_ready"] == [real]
        got = tmp_path / "received" / "garden-a" / real / "original.ts"
        assert got.read_bytes() == (events / real / "original.ts").read_bytes()
    finally:
        publisher.stop()
        outbox.close()


@contextmanager
def _publisher(tmp_path, broker, storage):
    """garden-a's publisher on the test broker, started, its commands subscribed; stopped and closed after."""
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, storage)
    publisher.start()
    try:
        assert publisher.commands_ready.wait(10)
        yield publisher
    finally:
        publisher.stop()
        outbox.close()


@contextmanager
def _unstarted_publisher(tmp_path, broker, storage, **kw):
    """garden-a's publisher and its outbox, never started: the outbox alone shows what it queues."""
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    try:
        yield MqttPublisher(_parse(_config(tmp_path, broker, "garden-a"), "pw-a"), outbox, storage, **kw), outbox
    finally:
        outbox.close()


def test_an_original_asked_for_while_it_is_being_recorded_is_sent_once_it_is_saved(tmp_path, broker, center):
    storage = tmp_path / "garden-a"
    recording, saved = "20260101T000000-cam-0000327-63", "20260101T000000-cam-0000100-1"
    for eid in (recording, saved):
        (storage / "events" / eid).mkdir(parents=True)
    (storage / "events" / recording / ".original-partial.ts").write_bytes(b"G" + os.urandom(3000))
    (storage / "events" / saved / "original.ts").write_bytes(b"G" + os.urandom(3000))
    with _publisher(tmp_path, broker, storage) as publisher:
        for eid in (recording, saved):
            center.client.publish(f"edge/garden-a/events/{eid}/original/get", b"", qos=1).wait_for_publish(5)
        assert wait_for(lambda: ("garden-a", saved, "original") in center.files_ok, 20)  # control: served now
        assert ("garden-a", recording, "original") not in center.files_ok  # nothing whole to send yet
        folder = storage / "events" / recording
        os.replace(folder / ".original-partial.ts", folder / "original.ts")  # the clip's post-roll is in
        files = EvidenceFiles(folder, EvidenceStage.ORIGINAL, "original.ts", None, None, "manifest.json")
        publisher.on_evidence({"id": recording, "camera": "cam"}, files)
        assert wait_for(lambda: ("garden-a", recording, "original") in center.files_ok, 20), center.files_bad
        got = tmp_path / "received" / "garden-a" / recording / "original.ts"
        assert got.read_bytes() == (folder / "original.ts").read_bytes()


def test_an_original_asked_for_again_while_it_is_still_being_sent_is_not_queued_twice(tmp_path, broker):
    storage = tmp_path / "garden-a"
    eid = "20260101T000000-cam-0000100-1"
    (storage / "events" / eid).mkdir(parents=True)
    (storage / "events" / eid / "original.ts").write_bytes(b"G" + os.urandom(600_000))
    with _unstarted_publisher(tmp_path, broker, storage) as (publisher, outbox):
        assert publisher.send_original(eid)
        queued = outbox.depth()
        assert queued[1] > 600_000  # the whole clip, in chunks
        assert publisher.send_original(eid) and outbox.depth() == queued  # asked again meanwhile: not again
        for message in outbox.next_batch(10_000, set()):
            outbox.ack(message.seq)  # the broker took every chunk
        assert publisher.send_original(eid) and outbox.depth()[1] > 600_000  # control: asked after, sent again


def test_a_hold_answered_after_retention_deleted_its_evidence_leaves_no_answer_behind(tmp_path, broker):
    storage = tmp_path / "garden-a"
    gone, kept = "20260101T000000-cam-0000100-1", "20260101T000000-cam-0000200-2"
    for eid in (gone, kept):
        (storage / "events" / eid).mkdir(parents=True)

    def retention_in_between(event_id: str, on: bool) -> bool:  # the sweep deletes it as the hold comes in
        if event_id == gone:
            shutil.rmtree(storage / "events" / gone)
        return False

    with _unstarted_publisher(tmp_path, broker, storage, on_hold=retention_in_between) as (publisher, outbox):
        for eid in (gone, kept):
            publisher._hold(eid, b"OFF")
        answers = {m.topic.split("/")[-3]: m.payload for m in outbox.next_batch(10, set())}
        assert answers == {gone: b"", kept: b"OFF"}  # control: evidence still here is answered OFF


def test_the_center_s_verdict_is_kept_beside_the_node_s_event_once_and_hostile_ones_are_not(
    tmp_path, broker, center
):
    storage = tmp_path / "garden-a"
    real = "20260101T000000-cam-0000327-63"
    (storage / "events" / real).mkdir(parents=True)
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, storage)
    publisher.start()

    def send(body) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        center.client.publish("edge/garden-a/feedback", payload, qos=1).wait_for_publish(5)

    verdict = {
        "v": 1,
        "msg_id": "fb-1",
        "id": real,
        "verdict": "false_alarm",
        "state": "checked",
        "note": "a kite",
    }
    try:
        assert publisher.commands_ready.wait(10)
        send(b"{not json")
        send({**verdict, "msg_id": "fb-0", "id": "../../etc"})  # not an id
        send({**verdict, "msg_id": "fb-9", "id": "20260101T000000-cam-0000000-1"})  # not this node's event
        send({**verdict, "msg_id": "fb-8", "verdict": "maybe"})  # not a verdict
        send(b"{" + b" " * 20_000 + b"}")  # too big for one
        send(verdict)
        send(verdict)  # QoS 1 may deliver twice
        send({**verdict, "msg_id": "fb-2", "verdict": "thrown", "note": "n" * 5000})  # the control, last
        kept = storage / "feedback" / f"{real}.jsonl"
        assert wait_for(lambda: kept.exists() and len(kept.read_text().splitlines()) >= 2, 10)
        time.sleep(0.5)
        rows = [json.loads(line) for line in kept.read_text().splitlines()]
        assert [(r["msg_id"], r["verdict"]) for r in rows] == [("fb-1", "false_alarm"), ("fb-2", "thrown")]
        assert rows[0]["note"] == "a kite" and len(rows[1]["note"]) == 2000
        assert sorted(p.name for p in (storage / "feedback").iterdir()) == [f"{real}.jsonl"]
    finally:
        publisher.stop()
        outbox.close()


def test_a_damaged_line_in_an_event_s_feedback_file_does_not_stop_its_later_verdicts(tmp_path, broker, center):
    """A power cut or a full disk cuts the last line of storage/feedback/<id>.jsonl short. Every later verdict
    for that event used to fail with a traceback, and the file stayed as it was."""
    storage = tmp_path / "garden-a"
    real = "20260101T000000-cam-0000327-63"
    (storage / "events" / real).mkdir(parents=True)
    kept = storage / "feedback" / f"{real}.jsonl"
    kept.parent.mkdir()
    first = {"v": 1, "msg_id": "fb-1", "id": real, "verdict": "thrown", "note": "黄色の袋"}
    kept.write_text(
        json.dumps(first, ensure_ascii=False) + "\n" + '{"v": 1, "msg_id": "fb-2", "id": "2026', "utf-8"
    )
    with _publisher(tmp_path, broker, storage):
        for body in (first, {**first, "msg_id": "fb-3", "verdict": "false_alarm"}):  # a resend, then a new one
            center.client.publish("edge/garden-a/feedback", json.dumps(body), qos=1).wait_for_publish(5)
        assert wait_for(lambda: "fb-3" in kept.read_text("utf-8"), 10), kept.read_text("utf-8")
        time.sleep(0.5)
        lines = kept.read_text("utf-8").splitlines()
        assert lines[1].startswith('{"v": 1, "msg_id": "fb-2"') and len(lines) == 3  # the damage is left as found
        assert [json.loads(line)["msg_id"] for line in (lines[0], lines[2])] == ["fb-1", "fb-3"]


def test_wrong_password_is_refused(broker):
    assert _connect(broker, "garden-a", "pw-a")[0] == "accepted"  # control: the right password gets in
    outcome, reason = _connect(broker, "garden-a", "wrong")
    assert outcome == "refused", (outcome, reason)


def test_a_client_without_tls_is_refused(broker):
    assert _connect(broker, "garden-a", "pw-a", tls=True)[0] == "accepted"  # control: the same client with TLS
    outcome, reason = _connect(broker, "garden-a", "pw-a", tls=False)
    # The TLS listener hangs up on a plain-text CONNECT at once: no CONNACK, and not a silent timeout either.
    assert outcome == "closed", (outcome, reason)


def test_the_reconnect_backoff_starts_fast_is_capped_and_jittered():
    first, cap = 0.5, 3.0
    b = Backoff(first, cap, random.Random(1))
    schedule = [b.next_delay() for _ in range(12)]
    assert first / 2 <= schedule[0] <= first
    assert all(d <= cap for d in schedule) and all(d >= cap / 2 for d in schedule[4:])  # 0.5, 1, 2, then 3 s
    b.reset()
    assert b.next_delay() <= first  # a success starts the schedule again
    # 100 nodes losing the broker together: at the cap their retries spread over half of it, not in lockstep.
    at_cap = []
    for seed in range(100):
        node = Backoff(first, cap, random.Random(seed))
        at_cap.append([node.next_delay() for _ in range(6)][-1])
    assert max(at_cap) - min(at_cap) > 0.4 * cap
    assert len({round(d, 2) for d in at_cap}) > 50


def test_event_types_are_the_schema_values():
    enum = json.loads((REPO / "docs" / "schemas" / "event.schema.json").read_text())["properties"]["type"]["enum"]
    assert [t.value for t in EventType] == enum


class _PahoStub:
    def __init__(self):
        self.delays: list[tuple[float, float]] = []
        self.on_pre_connect = None

    def reconnect_delay_set(self, min_delay, max_delay):
        self.delays.append((min_delay, max_delay))


def test_paho_is_paced_by_the_jittered_schedule_and_a_success_resets_it():
    client = _PahoStub()
    cfg = MqttConfig()
    r = Reconnect(client, cfg, random.Random(3))
    for _ in range(8):  # eight failed attempts: each sets the wait before the next one
        client.on_pre_connect(client, None)
    waits = [lo for lo, hi in client.delays]
    assert all(lo == hi for lo, hi in client.delays)  # paho's own doubling is out of the way
    assert waits[0] <= cfg.reconnect_min_s and max(waits) <= cfg.reconnect_max_s <= 5
    r.connected()
    assert client.delays[-1][0] <= cfg.reconnect_min_s  # the next outage is retried fast again


def test_a_node_cannot_publish_under_another_nodes_prefix(broker, center):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe-acl")
    client.tls_set(ca_certs=str(broker.ca))
    client.username_pw_set("garden-a", "pw-a")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        forged = {"v": 1, "type": "new", "id": "forged", "msg_id": "forged-1", "node": "garden-b"}
        client.publish("edge/garden-b/events", json.dumps(forged), qos=1).wait_for_publish(5)
        own = {**forged, "id": "genuine", "msg_id": "genuine-1", "node": "garden-a", "level": "suspected"}
        client.publish("edge/garden-a/events", json.dumps(own), qos=1).wait_for_publish(5)
        assert wait_for(lambda: any(e["id"] == "genuine" for e in center.events), 5)
        time.sleep(0.5)
        assert not any(e["id"] == "forged" for e in center.events)
    finally:
        client.loop_stop()
        client.disconnect()


def test_detection_can_be_switched_off_and_the_state_is_retained(tmp_path, broker, center, long_clip):
    node = Node(_parse(_config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1]), "pw-a"))
    node.start()
    try:
        assert node.publisher.commands_ready.wait(10)
        center.client.publish("edge/garden-a/cam/detect/set", b"OFF", qos=1)
        assert wait_for(lambda: node.detect_on.get("cam") is False, 10)
        first = _watch(broker, "edge/garden-a/cam/detect/state")
        assert wait_for(lambda: first.get("edge/garden-a/cam/detect/state") == b"OFF", 10), first
        late = _watch(broker, "edge/garden-a/cam/detect/state")  # subscribes after: gets the retained state
        assert wait_for(lambda: late.get("edge/garden-a/cam/detect/state") == b"OFF", 5), late
    finally:
        node.stop()


def test_three_throws_during_a_60_s_broker_outage_all_arrive_once(tmp_path, broker, center, long_clip):
    node = Node(_parse(_config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1]), "pw-a"))
    node.start()
    storage = tmp_path / "garden-a"
    try:
        assert node.publisher.connected.wait(10)
        broker.stop()
        t0 = time.monotonic()
        assert wait_for(lambda: len(_local_new_ids(storage)) >= 3, 55), "three throws while the broker is away"
        time.sleep(max(0.0, 60 - (time.monotonic() - t0)))
        during = _local_new_ids(storage)
        broker.start()
        assert wait_for(lambda: during <= _new_ids(center), 60), during - _new_ids(center)
        pairs = [(e["id"], e["type"]) for e in center.events if e["type"] in ("new", "end")]
        assert len(pairs) == len(set(pairs))  # none twice at the receiver
    finally:
        node.stop()


def _alert(event_id: str) -> dict:
    origin = {"x": 320.0, "y": 40.0, "floor": 12, "facade_x_m": 8.0}
    return {"id": event_id, "camera": "cam", "level": "suspected", "score": 0.9, "alert_s": 1.0, "origin": origin}


def test_an_alert_queued_during_a_20_s_outage_arrives_within_seconds_of_the_broker_returning(
    tmp_path, broker, center
):
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")  # the shipped reconnect settings
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, tmp_path / "garden-a")
    publisher.start()
    try:
        assert publisher.connected.wait(10)
        broker.stop()
        assert wait_for(lambda: not publisher.connected.is_set(), 5)
        time.sleep(2)
        publisher.on_update("new", _alert("during-outage"))
        time.sleep(18)  # 20 s away in all: the old backoff (1, 2, 4, 8, 16 s) next tried 11 s after it returned
        broker.start()
        back = time.monotonic()
        assert wait_for(lambda: "during-outage" in _new_ids(center), 30, step=0.05), center.events
        delay = time.monotonic() - back
        print(f"alert arrived {delay:.2f} s after the broker was back")
        assert delay <= 5.0, f"alert arrived {delay:.1f} s after the broker was back"
    finally:
        publisher.stop()
        outbox.close()


def test_an_event_message_says_when_it_left_the_node_not_only_when_it_was_queued(tmp_path, broker, center):
    # The center tells a node whose clock is wrong from a message that waited in the outbox by the time the
    # message left (README: MQTT): queued during an outage, it left seconds later than it was queued.
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, tmp_path / "garden-a")
    publisher.start()
    try:
        assert publisher.connected.wait(10)
        publisher.on_update("new", _alert("sent-at-once"))  # positive control: leaves as it is queued
        assert wait_for(lambda: "sent-at-once" in _new_ids(center), 10, step=0.05)
        broker.stop()
        assert wait_for(lambda: not publisher.connected.is_set(), 5)
        publisher.on_update("new", _alert("waited"))
        time.sleep(3)
        broker.start()
        assert wait_for(lambda: "waited" in _new_ids(center), 30, step=0.05)
    finally:
        publisher.stop()
        outbox.close()
    got = {e["id"]: e for e in center.events if e["type"] == "new"}
    validator = _schema("event")
    for body in got.values():
        validator.validate(body)
    waited = {k: _utc(got[k]["sent_utc"]) - _utc(got[k]["queued_utc"]) for k in ("sent-at-once", "waited")}
    # The outage lasted at least the 3 s slept through; the control left before any of it.
    assert waited["sent-at-once"] < waited["waited"] and waited["waited"] >= dt.timedelta(seconds=3), waited


def test_only_event_and_stats_messages_are_stamped_the_storage_message_leaves_as_its_schema_says(tmp_path, broker):
    wire = _record_all(broker, "edge/garden-a/#")
    storage = {"v": 1, "type": "storage", "node": "garden-a", "level": "warning", "time_utc": "2026-12-02T04:00Z"}
    storage |= {"message": "m", "used_bytes": 1, "budget_bytes": 2, "protected_bytes": 1, "evidence_days": 30}
    with _publisher(tmp_path, broker, tmp_path / "garden-a") as publisher:
        publisher.publish_storage(storage)
        publisher.publish_stats({"v": 1, "node": "garden-a", "time_utc": "2026-12-02T04:00:00Z", "cameras": {}})
        assert wait_for(lambda: {"edge/garden-a/storage", "edge/garden-a/stats"} <= {t for t, _ in wire}, 10)
    got = {t: json.loads(p) for t, p in wire if t in ("edge/garden-a/storage", "edge/garden-a/stats")}
    _schema("storage").validate(got["edge/garden-a/storage"])
    assert "sent_utc" not in got["edge/garden-a/storage"] and "sent_utc" in got["edge/garden-a/stats"]
    _schema("stats").validate(got["edge/garden-a/stats"])


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@contextmanager
def _paused(broker):
    """The broker frozen (SIGSTOP) for the block: it reads nothing and acknowledges nothing until it ends."""
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        broker.proc.send_signal(signal.SIGCONT)


def test_a_message_leaves_the_outbox_on_its_own_puback_not_on_an_old_one_with_the_same_mid(
    tmp_path, broker, center
):
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, tmp_path / "garden-a")
    publisher.start()
    try:
        assert publisher.commands_ready.wait(10)  # the SUBACK follows the PUBACK of `available: online`, mid 1
        # paho numbers messages 1 to 65535, then starts again: as after a day of stats, status and clip chunks,
        # the next message gets mid 1, the mid of that online message acknowledged long ago.
        publisher.client._last_mid = 65535
        with _paused(broker):
            publisher.on_update("new", _alert("wrapped"))
            time.sleep(1.0)
            assert outbox.depth()[0] == 1, "removed from the outbox before the broker acknowledged it"
        assert wait_for(lambda: "wrapped" in _new_ids(center), 10), center.events
        assert wait_for(lambda: outbox.depth()[0] == 0, 10)  # the control: its own PUBACK removes it
    finally:
        publisher.stop()
        outbox.close()


def test_an_acknowledgement_that_cannot_be_recorded_on_a_full_disk_does_not_stop_publishing(
    tmp_path, broker, center
):
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    with small_disk(tmp_path / "disk") as disk:
        outbox = Outbox(disk / "outbox.sqlite", 10_000_000)
        publisher = MqttPublisher(cfg, outbox, tmp_path / "garden-a")
        publisher.start()
        try:
            assert publisher.commands_ready.wait(10)
            with _paused(broker):  # the PUBACK is held back until the disk is full
                publisher.on_update("new", _alert("before-full"))
                time.sleep(0.5)
                filler = fill_up(disk)
            assert wait_for(lambda: "before-full" in _new_ids(center), 10), center.events
            time.sleep(0.5)
            assert outbox.depth()[0] == 1  # acknowledged, but the full disk refused to remove it
            filler.unlink()  # retention freed some space
            publisher.on_update("new", _alert("after-full"))
            assert wait_for(lambda: "after-full" in _new_ids(center), 10), center.events
            assert wait_for(lambda: outbox.depth()[0] == 0, 10)  # and the first one is removed after all
        finally:
            publisher.stop()
            outbox.close()


def test_a_client_whose_callback_raises_keeps_receiving(tmp_path, broker):
    # paho 2 re-raises a callback's exception in its network thread, which then dies for good (nothing sent,
    # received or reconnected). Every client make_client makes logs it and goes on: the receiver's, listen's.
    sender_cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a").mqtt
    watcher_cfg = _parse(_config(tmp_path, broker, "monitor"), "pw-monitor").mqtt
    got: list[bytes] = []

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        if msg.payload == b"first":
            raise ValueError("a bug in a callback")

    watcher = make_client(watcher_cfg, "monitor")
    watcher.on_message = on_message
    watcher.on_connect = lambda client, *args: client.subscribe("edge/garden-a/probe", qos=1)
    sender = make_client(sender_cfg, "garden-a")
    watcher.connect("127.0.0.1", broker.port)
    sender.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    sender.loop_start()
    try:
        assert wait_for(lambda: watcher.is_connected() and sender.is_connected(), 10)
        time.sleep(0.5)  # the subscription is in place
        for payload in (b"first", b"second"):
            sender.publish("edge/garden-a/probe", payload, qos=1).wait_for_publish(5)
        assert wait_for(lambda: got == [b"first", b"second"], 10), got  # the second came after the raise
    finally:
        for client in (watcher, sender):
            client.loop_stop()
            client.disconnect()


def _run_node(cfg_path, password):
    env = {**os.environ, "EDGE_TEST_PW": password}
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_node_killed_during_an_outage_delivers_everything_after_restart(tmp_path, broker, center, long_clip):
    cfg = _config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1])
    storage = tmp_path / "garden-a"
    proc = _run_node(cfg, "pw-a")
    try:
        assert wait_for(lambda: center.available.get("garden-a") == "online", 20)
        broker.stop()
        assert wait_for(lambda: len(_local_new_ids(storage)) >= 2, 40)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = _local_new_ids(storage)
        proc = _run_node(cfg, "pw-a")  # restarted while the broker is still away
        time.sleep(3)
        broker.start()
        assert wait_for(lambda: before <= _new_ids(center), 60), before - _new_ids(center)
    finally:
        proc.kill()
        proc.wait(10)


def test_available_turns_offline_when_the_node_dies(tmp_path, broker, center, long_clip):
    proc = _run_node(_config(tmp_path, broker, "garden-a", long_clip[0], long_clip[1]), "pw-a")
    try:
        assert wait_for(lambda: center.available.get("garden-a") == "online", 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_for(lambda: center.available.get("garden-a") == "offline", 10)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_hold_sent_while_the_node_is_away_reaches_it_when_it_is_back(tmp_path, broker, center):
    """The broker keeps the node's commands while it is away (its session is persistent): a hold the center
    sends during the node's restart or outage is applied when it is back, not lost while the center was told
    it was delivered (and the evidence of a crime deleted after storage.evidence_days)."""
    storage = tmp_path / "garden-a"
    online, away = "20260101T000000-cam-0000327-63", "20260101T000000-cam-0000400-64"
    for eid in (online, away):
        (storage / "events" / eid).mkdir(parents=True)
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    holds: list[tuple[str, bool]] = []

    def started() -> MqttPublisher:
        publisher = MqttPublisher(cfg, outbox, storage, on_hold=lambda eid, on: holds.append((eid, on)) or on)
        publisher.start()
        assert publisher.commands_ready.wait(10)
        return publisher

    def hold(eid: str) -> None:
        center.client.publish(f"edge/garden-a/events/{eid}/hold", b"ON", qos=1).wait_for_publish(5)

    publisher = started()
    try:
        hold(online)
        assert wait_for(lambda: (online, True) in holds, 10)  # control: a node on line gets it at once
    finally:
        publisher.stop()
    hold(away)  # the node is away: the broker acknowledges it to the center all the same
    publisher = started()
    try:
        assert wait_for(lambda: (away, True) in holds, 10), holds
        assert holds.count((online, True)) == 1  # what it had is not given again
    finally:
        publisher.stop()
        outbox.close()


def test_a_retained_command_is_not_carried_out_again_at_every_connect(tmp_path, broker, center):
    """A command published with the retain flag (an installer's `mosquitto_pub -r`) is not taken from the
    broker's store at each connect: a detect/set OFF would switch detection off again after every outage and
    restart, whatever the center said since, and an original/get would queue the whole clip again each time."""
    cfg = _parse(_config(tmp_path, broker, "garden-a"), "pw-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    switched: list[tuple[str, bool]] = []
    center.client.publish("edge/garden-a/cam/detect/set", b"OFF", qos=1, retain=True).wait_for_publish(5)
    publisher = MqttPublisher(cfg, outbox, tmp_path, on_detect_set=lambda cam, on: switched.append((cam, on)))
    publisher.start()
    try:
        assert publisher.commands_ready.wait(10)
        center.client.publish("edge/garden-a/cam/detect/set", b"ON", qos=1).wait_for_publish(5)
        assert wait_for(lambda: ("cam", True) in switched, 10)  # control: a command sent now is carried out
        assert switched == [("cam", True)]  # and came after the retained one, which was not
    finally:
        publisher.stop()
        outbox.close()


def _failing_attempts(tmp_path, broker, caplog, password: str, **mqtt) -> MqttPublisher:
    """garden-a's publisher, stopped after four failed attempts to connect (quick retries), its logs caught."""
    cfg = _parse(_config(tmp_path, broker, "garden-a", reconnect_max_s=0.2, reconnect_min_s=0.1, **mqtt), password)
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, tmp_path / "garden-a")
    failures = publisher.client.on_connect_fail
    caplog.set_level(logging.DEBUG, logger="edge.publish.mqtt")
    publisher.start()
    try:
        assert wait_for(lambda: failures.attempts >= 4, 30)
    finally:
        publisher.stop()
        outbox.close()
    return publisher


def test_a_broker_away_is_logged_with_its_address_and_reason_once_not_paho_s_riddle_each_retry(
    tmp_path, broker, caplog
):
    port = free_port()  # nothing listens there
    _failing_attempts(tmp_path, broker, caplog, "pw", port=port)
    ours = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(ours) == 1 and f"127.0.0.1:{port}" in ours[0] and "Connection refused" in ours[0], ours
    assert not [r for r in caplog.records if r.getMessage().startswith("Client is not connected")]


def test_a_refused_login_is_logged_once_with_why_not_at_every_retry(tmp_path, broker, caplog):
    publisher = _failing_attempts(tmp_path, broker, caplog, "not-pw-a")
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and f"127.0.0.1:{broker.port}" in said[0] and "broker refused: Not authorized" in said[0]
    assert publisher.last_error == "broker refused: Not authorized"  # status shows it all along


def test_stopping_as_the_connection_goes_still_stops_cleanly(tmp_path, broker):
    cfg = _parse(_config(tmp_path, broker, "garden-a", port=free_port()), "pw")
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    publisher = MqttPublisher(cfg, outbox, tmp_path / "garden-a")
    publisher.start()
    publisher.connected.set()  # as it is for a moment after the broker went and before paho noticed
    publisher.stop()  # the offline message cannot go: no RuntimeError out of stop(), the rest of it done
    assert not publisher._sender.is_alive()
    outbox.close()
