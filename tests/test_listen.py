"""`edge listen` takes everything from the network as hostile: hostile nodes, through a real Mosquitto broker."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import time
import tracemalloc
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from support.broker import Broker, center_config
from support.servers import wait_for

from edge.config import parse_config
from edge.listen import Listener
from edge.publish.mqtt import CHUNK_MAGIC, chunk_payloads

# ".." is a broker account whose name is no safe path: the ACL lets it publish under edge/../#.
USERS = {"garden-a": "pw-a", "garden-b": "pw-b", "..": "pw-dots", "center": "pw-center"}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", USERS).start()
    yield b
    b.stop()


def _center_config(tmp_path, broker):
    cfg = center_config(tmp_path, broker, "${EDGE_TEST_PW}")
    os.environ["EDGE_TEST_PW"] = "pw-center"
    try:
        return parse_config(yaml.safe_dump(cfg))
    finally:
        del os.environ["EDGE_TEST_PW"]


@pytest.fixture
def out(tmp_path):
    return tmp_path / "site" / "received"  # tmp_path/site is "outside": nothing may appear there but received/


@pytest.fixture
def center(tmp_path, broker, out):
    lines: list[str] = []
    listener = Listener(_center_config(tmp_path, broker), out, client_id="center-test", on_line=lines.append)
    listener.lines = lines
    listener.start()
    assert listener.connected.wait(10)
    yield listener
    listener.stop()


class Sender:
    """A node (or an attacker with a node's credentials) publishing whatever it likes, in order, QoS 1."""

    def __init__(self, broker, user):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.client.tls_set(ca_certs=str(broker.ca))
        self.client.username_pw_set(user, USERS[user])
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.user = user

    def pub(self, topic: str, payload) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload, ensure_ascii=False)
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def sync(self, center) -> None:
        """A valid alert after the rest: once the center has it, it has handled everything sent before."""
        eid = f"sync-{uuid.uuid4().hex[:8]}"
        self.pub(f"edge/{self.user}/events", _event(eid, node=self.user))
        assert wait_for(lambda: any(e["id"] == eid for e in center.events), 10), "the center never got the sync"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def garden(broker):
    s = Sender(broker, "garden-a")
    yield s
    s.close()


def _event(event_id, node="garden-a", type_="new", **extra):
    body = {
        "v": 1,
        "type": type_,
        "id": event_id,
        "node": node,
        "msg_id": uuid.uuid4().hex,
        "queued_utc": "2026-01-01T00:00:00Z",
        "camera": "cam",
        "level": "suspected",
        "score": 0.9,
        "alert_s": 1.0,
        "origin": {"x": 320.0, "y": 40.0, "floor": 12, "facade_x_m": 8.0},
    }
    return {**body, **extra}


def _files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_topic_levels_and_fields_never_write_outside_out(tmp_path, broker, center, garden, out):
    site = out.parent
    dots = Sender(broker, "..")
    try:
        # The node level of the topic: edge/../events would put files in site/, next to out.
        dots.pub("edge/../events", _event("PWNED", node=".."))
        dots.pub("edge/../events/PWNED/snapshot", b"\xff\xd8\xff" + b"x" * 10)
        for chunk in chunk_payloads(b"evil", {"event": "PWNED", "node": "..", "file": "clip"}, 1024):
            dots.pub("edge/../events/PWNED/clip", chunk)
    finally:
        dots.close()
    # The `type` field: "event-{type}.json" with a type that climbs out of the event's folder.
    (out / "garden-a" / "abc" / "event-x").mkdir(parents=True)  # a folder that happens to exist there
    garden.pub("edge/garden-a/events", _event("abc", type_="x/../../../../PWNED"))
    # Ids in topic levels and in fields: empty, dot-dot, too long, with a separator or a newline.
    garden.pub("edge/garden-a/events", _event(".."))
    garden.pub("edge/garden-a/events", _event("a" * 200))
    garden.pub("edge/garden-a/events", _event("ok-id", msg_id="fresh\nseen-forever"))
    garden.pub("edge/garden-a/events", _event("evil/../../x"))
    garden.pub("edge/garden-a/events//snapshot", b"\xff\xd8\xff" + b"x" * 10)
    garden.pub("edge/garden-a/events/../snapshot", b"\xff\xd8\xff" + b"x" * 10)
    header = {"event": "../../PWNED2", "node": "garden-a", "file": "clip"}
    for chunk in chunk_payloads(b"evil", header, 1024):
        garden.pub("edge/garden-a/events/x/clip", chunk)
    garden.sync(center)

    assert _files_under(site) == ["received"] + [f"received/{p}" for p in _files_under(out)]
    assert not (site / "PWNED").exists() and not (site.parent / "PWNED.json").exists()
    assert _files_under(out / "garden-a" / "abc") == ["event-x"]  # nothing written through it
    # Only the sync alert was taken; every other message was dropped and counted.
    assert [e["id"] for e in center.events if not e["id"].startswith("sync-")] == []
    assert "seen-forever" not in (out / "seen_msg_ids.txt").read_text()
    assert sum(center.dropped.values()) >= 11, center.dropped


def _chunk(event_id, index, count, data, size, digest=None, file="clip", node="garden-a"):
    head = {"event": event_id, "node": node, "file": file, "index": index, "count": count}
    head |= {"sha256": digest or hashlib.sha256(b"whatever").hexdigest(), "bytes": size}
    return CHUNK_MAGIC + json.dumps(head).encode() + b"\n" + data


def test_memory_of_unfinished_chunk_sets_is_bounded(center, garden):
    center.max_pending_bytes = 1 << 20  # 1 MiB for the test (the shipped bound is MAX_PENDING_BYTES)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        # 300 files of which only the first half ever arrives: 300 x 32 KiB kept before.
        for i in range(300):
            garden.pub(f"edge/garden-a/events/e{i}/clip", _chunk(f"e{i}", 0, 2, b"x" * 32768, 65536))
        # Chunks past any bound: a huge count, a huge size, a bad digest, an index past the count.
        garden.pub("edge/garden-a/events/h/clip", _chunk("h", 5, 10**9, b"x" * 32768, 10**12))
        garden.pub("edge/garden-a/events/h/clip", _chunk("h", 0, 2, b"x" * 32768, 65536, digest="zz" * 32))
        garden.pub("edge/garden-a/events/h/clip", _chunk("h", 2, 2, b"x" * 32768, 65536))
        # Two 9 MiB chunks: more than any chunk a node sends (mqtt.chunk_kib is at most 8 MiB).
        for i in range(2):
            garden.pub(f"edge/garden-a/events/big{i}/clip", _chunk(f"big{i}", 0, 2, b"x" * (9 << 20), 18 << 20))
        garden.sync(center)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 3 << 20, f"{held / 2**20:.1f} MiB held for unfinished files"
    assert center.dropped["pending evicted"] > 0, center.dropped
    assert center.dropped["bad chunk"] == 3 and center.dropped["oversized"] == 2, center.dropped


def test_one_node_s_unfinished_files_cannot_push_out_another_node_s(broker, center, garden, out):
    """The per-node byte bound is no use if the bound on the number of files is shared: 257 tiny unfinished
    files from one node (or whoever has its password) dropped every other node's file in flight."""
    data = os.urandom(3000)
    first, second = chunk_payloads(data, {"event": "theirs", "node": "garden-b", "file": "clip"}, 2000)
    other = Sender(broker, "garden-b")
    try:
        other.pub("edge/garden-b/events/theirs/clip", first)
        for i in range(300):  # well under any byte bound: 300 x 10 bytes
            garden.pub(f"edge/garden-a/events/f{i}/clip", _chunk(f"f{i}", 0, 2, b"x" * 10, 20))
        garden.sync(center)
        other.pub("edge/garden-b/events/theirs/clip", second)
        assert wait_for(lambda: (out / "garden-b" / "theirs" / "clip.mp4").exists(), 10), center.dropped
    finally:
        other.close()
    assert (out / "garden-b" / "theirs" / "clip.mp4").read_bytes() == data
    assert center.dropped["pending evicted"] > 0  # the flooding node's own files went
    assert len(center.pending) <= center.max_pending_sets_per_node


def test_a_chunk_header_nested_too_deep_is_a_counted_drop_not_a_traceback(center, garden, caplog):
    caplog.set_level(logging.WARNING, logger="edge.listen")
    garden.pub("edge/garden-a/events/deep/clip", CHUNK_MAGIC + b"[" * 900 + b"\n" + b"x")  # within 1 KiB
    garden.pub("edge/garden-a/events/deep/clip", CHUNK_MAGIC + b"[" * 200_000 + b"\n" + b"x")  # far past it
    garden.sync(center)
    assert center.dropped["bad chunk"] == 2, center.dropped
    assert not [r for r in caplog.records if r.exc_info], "a traceback for a hostile chunk"


def test_an_unfinished_chunk_set_expires(center, garden, out):
    center.pending_idle_s = 1.0  # the shipped PENDING_IDLE_S is minutes
    data = os.urandom(3000)
    first, second = chunk_payloads(data, {"event": "slow", "node": "garden-a", "file": "clip"}, 2000)
    garden.pub("edge/garden-a/events/slow/clip", first)
    garden.sync(center)
    time.sleep(1.5)
    garden.sync(center)  # any message sweeps the expired sets
    garden.pub("edge/garden-a/events/slow/clip", second)  # too late: its first half is gone
    garden.sync(center)
    assert not (out / "garden-a" / "slow" / "clip.mp4").exists()
    assert center.dropped["pending expired"] == 1, center.dropped
    # A file whose chunks come in time is still put together.
    fresh = chunk_payloads(data, {"event": "quick", "node": "garden-a", "file": "clip"}, 2000)
    for chunk in fresh:
        garden.pub("edge/garden-a/events/quick/clip", chunk)
    assert wait_for(lambda: (out / "garden-a" / "quick" / "clip.mp4").exists(), 10)
    assert (out / "garden-a" / "quick" / "clip.mp4").read_bytes() == data


def test_printed_lines_name_the_node_and_carry_no_control_characters(center, garden, caplog):
    caplog.set_level(logging.WARNING, logger="edge.listen")
    garden.pub("edge/garden-a/events", _event("ev-1", camera="cam\x1b[2J\r\nALERT CONFIRMED fake: floor 99"))
    no_origin = _event("ev-2")
    del no_origin["origin"]  # the schema allows an event without origin
    garden.pub("edge/garden-a/events", no_origin)
    garden.pub("edge/garden-a/events", _event("ev-3", level=7, score="high"))  # wrong types degrade as well
    garden.pub("edge/garden-a/available", b"online\n\x1b]0;owned\x07NODE garden-b offline")
    garden.pub("edge/garden-a/events", b"[" * 60000)  # no JSON a parser can take: dropped, no traceback
    garden.pub("edge/garden-a/stats", b"\xff\xfe not utf-8")
    garden.sync(center)
    lines = [line for line in center.lines if "sync-" not in line]
    assert len(lines) == 3, lines
    for line in lines:
        assert line.startswith("ALERT ") and "garden-a" in line, line
        assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    assert "ev-2" in lines[1] and "ev-3" in lines[2]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert center.available.get("garden-a") is None  # not online, not anything: the payload was no state


def test_connected_is_cleared_when_the_connection_drops(broker, center):
    broker.stop()
    assert wait_for(lambda: not center.connected.is_set(), 10)
    broker.start()
    assert center.connected.wait(15)


def test_the_schemas_state_the_receivers_checks():
    from edge.listen import MAX_CHUNKS, MAX_FILE_BYTES
    from edge.publish.mqtt import valid_id

    schemas = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    chunk = json.loads((schemas / "chunk-header.schema.json").read_text())["properties"]
    event = json.loads((schemas / "event.schema.json").read_text())["properties"]
    assert chunk["count"]["maximum"] == MAX_CHUNKS and chunk["bytes"]["maximum"] == MAX_FILE_BYTES
    fields = [chunk["event"], chunk["node"], event["id"], event["msg_id"], event["node"]]
    (pattern,) = {f["pattern"] for f in fields}
    samples = ["20261129T023205-east-0000327-63", "garden-a", "a.b", "", ".", "..", "a..b", ".a", "a/b", "a b"]
    samples += ["%2e%2e", "a" * 128, "a" * 129, "é"]
    for s in samples:
        assert valid_id(s) == bool(re.search(pattern, s)), s


def _problem(state: str, node: str = "garden-a", **extra) -> dict:
    body = {
        "v": 1,
        "msg_id": uuid.uuid4().hex,
        "id": "r1-cam-covered-1",
        "node": node,
        "camera": "cam",
        "problem": "covered",
        "state": state,
        "at_s": 1767225600.0,
        "reason": "the view is uniform: 96% of it without texture",
        "active": ["covered"] if state == "raised" else [],
    }
    return {**body, **extra}


def test_a_camera_problem_raised_and_cleared_is_printed_written_and_kept(center, garden, out):
    topic = "edge/garden-a/cameras/cam/problem"
    garden.pub(topic, _problem("raised"))
    assert wait_for(lambda: center.problems.get(("garden-a", "cam"), {}).get("state") == "raised", 10)
    garden.pub(topic, _problem("cleared"))
    assert wait_for(lambda: center.problems[("garden-a", "cam")]["state"] == "cleared", 10)
    # The latest is kept before its line is printed: wait for the line of each of the two messages.
    assert wait_for(lambda: len([line for line in center.lines if line.startswith("CAMERA")]) >= 2, 10)
    lines = [line for line in center.lines if line.startswith("CAMERA")]
    assert [line.split()[2] for line in lines] == ["raised", "cleared"] and "garden-a/cam" in lines[0]
    folder = out / "garden-a" / "r1-cam-covered-1"
    assert {"problem-raised.json", "problem-cleared.json"} <= set(os.listdir(folder))
    garden.pub(topic, b"")  # the node started afresh: nothing raised now
    assert wait_for(lambda: ("garden-a", "cam") not in center.problems, 10)


def test_a_camera_problem_that_is_malformed_or_names_another_node_is_dropped(center, garden):
    topic = "edge/garden-a/cameras/cam/problem"
    garden.pub(topic, _problem("raised", node="garden-b"))  # the topic (so the ACL) vouches for garden-a only
    garden.pub(topic, _problem("raised", problem="on fire"))
    garden.pub("edge/garden-a/cameras/c..d/problem", _problem("raised"))
    garden.sync(center)
    assert center.dropped["bad camera problem"] >= 2 and center.dropped["bad topic"] >= 1
    assert not center.problems and not [line for line in center.lines if line.startswith("CAMERA")]
    garden.pub(topic, _problem("raised"))  # control: the same message, well formed, is taken
    assert wait_for(lambda: ("garden-a", "cam") in center.problems, 10)
