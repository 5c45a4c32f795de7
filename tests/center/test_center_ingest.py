"""What ingest keeps and refuses, on SQLite and PostgreSQL: files, chunks, manifests, hostile input."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parts import alert, make_parts, send
from sqlalchemy import func, select

from center.db import Camera, Chunk, Event, Evidence, Message, Node
from center.files import media_type
from center.models import Trust
from center.trust import reverify
from edge.publish.manifest import key_id, write_manifest
from edge.publish.mqtt import chunk_payloads

HOUR = dt.timedelta(hours=1)
JPEG = b"\xff\xd8\xff\xe0" + b"still" * 200
CLIP = os.urandom(70_000)


@pytest.fixture
def parts(tmp_path, db_url):
    p = make_parts(tmp_path, db_url)
    yield p
    p.engine.dispose()


def _evidence(parts, kind=None):
    with parts.sessions() as s:
        q = select(Evidence).order_by(Evidence.id)
        if kind:
            q = q.where(Evidence.kind == kind)
        return s.scalars(q).all()


def _send_clip(parts, node, event_id, data, chunk=16 * 1024, order=None, digest=None):
    header = {"event": event_id, "node": node, "file": "clip"}
    chunks = chunk_payloads(data, header, chunk, digest)
    for i in order or range(len(chunks)):
        parts.ingest.handle(f"edge/{node}/events/{event_id}/clip", chunks[i])
    return chunks


def _register(parts, node, key):
    raw = bytes.fromhex(key.public_key().public_bytes_raw().hex())
    with parts.sessions.begin() as s:
        s.merge(Node(name=node, public_key=raw, key_id=key_id(key.public_key())))


def _manifest(tmp_path, key, files: dict[str, bytes], event: str | None = None) -> bytes:
    """A manifest as a node signs it; with `event`, naming the event it was signed for (as nodes now do)."""
    folder = tmp_path / "node-evidence"
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    info = {"node": "garden3-east", **({"event": event} if event else {})}
    return write_manifest(folder, list(files), info, key).read_bytes()


def test_a_clip_sent_in_chunks_out_of_order_is_joined_checked_and_kept(parts):
    send(parts, alert(event_id="ev-clip"))
    _send_clip(parts, "garden3-east", "ev-clip", CLIP, order=[4, 0, 2, 2, 1, 3])  # 5 chunks, one twice
    (clip,) = _evidence(parts, "clip")
    assert clip.sha256 == hashlib.sha256(CLIP).hexdigest()
    assert parts.files.path(clip.path).read_bytes() == CLIP
    assert parts.files.path(clip.path).is_relative_to(parts.cfg.data_dir)
    with parts.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Chunk)) == 0  # nothing held once the file is whole


@pytest.mark.parametrize(
    ("head", "suffix", "media"),
    [
        (b"G@\x00\x10", ".ts", "video/mp2t"),  # an RTSP camera's H.264 packets, byte for byte
        (b"\x1a\x45\xdf\xa3", ".mkv", "video/x-matroska"),  # a USB camera's MJPEG
        (b"\x00\x00\x00\x20ftypisom", ".mp4", "video/mp4"),  # re-encoded, as the annotated copy is
    ],
)
def test_an_original_is_kept_and_served_as_the_container_it_is(parts, head, suffix, media):
    data = head + os.urandom(40_000)
    header = {"event": "ev-o", "node": "garden3-east", "file": "original"}
    for payload in chunk_payloads(data, header, 16 * 1024):
        parts.ingest.handle("edge/garden3-east/events/ev-o/original", payload)
    (original,) = _evidence(parts, "original")
    path = parts.files.path(original.path)
    assert path.suffix == suffix and path.read_bytes() == data
    assert media_type("original", path) == media


def test_a_clip_whose_bytes_do_not_match_its_sha256_is_discarded_and_counted(parts):
    _send_clip(parts, "garden3-east", "ev-bad", CLIP, digest=hashlib.sha256(b"other").hexdigest())
    assert _evidence(parts, "clip") == []
    assert parts.drops.snapshot()["sha256 mismatch"] == 1
    _send_clip(parts, "garden3-east", "ev-good", CLIP)  # positive control
    assert len(_evidence(parts, "clip")) == 1


def test_a_still_is_kept_and_what_is_no_jpeg_is_refused(parts):
    parts.ingest.handle("edge/garden3-east/events/ev-s/snapshot", b"GIF89a" + b"x" * 100)
    assert _evidence(parts) == []
    assert parts.drops.snapshot()["bad snapshot"] == 1
    parts.ingest.handle("edge/garden3-east/events/ev-s/snapshot", JPEG)
    (still,) = _evidence(parts, "snapshot")
    assert parts.files.path(still.path).read_bytes() == JPEG
    assert still.trust == Trust.UNSIGNED


def test_evidence_signed_by_the_registered_key_is_verified(parts, tmp_path):
    key = Ed25519PrivateKey.generate()
    _register(parts, "garden3-east", key)
    send(parts, alert(event_id="ev-m"))
    parts.ingest.handle("edge/garden3-east/events/ev-m/snapshot", JPEG)
    manifest = _manifest(tmp_path, key, {"clip.mp4": CLIP, "still.jpg": JPEG})
    parts.ingest.handle("edge/garden3-east/events/ev-m/manifest", manifest)
    _send_clip(parts, "garden3-east", "ev-m", CLIP)  # after the manifest: verified on arrival
    trust = {e.kind: e.trust for e in _evidence(parts)}
    assert trust == {"snapshot": Trust.VERIFIED, "manifest": Trust.VERIFIED, "clip": Trust.VERIFIED}


@pytest.mark.parametrize("case", ["unregistered node", "another key", "altered manifest"])
def test_evidence_not_vouched_for_is_kept_but_marked_untrusted(parts, tmp_path, case):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    if case == "another key":
        _register(parts, "garden3-east", other)
    elif case == "altered manifest":
        _register(parts, "garden3-east", key)
    manifest = _manifest(tmp_path, key, {"clip.mp4": CLIP})
    if case == "altered manifest":
        signed = json.loads(manifest)
        signed["manifest"]["node"] = "garden9"
        manifest = json.dumps(signed).encode()
    _send_clip(parts, "garden3-east", "ev-u", CLIP)
    parts.ingest.handle("edge/garden3-east/events/ev-u/manifest", manifest)
    clip = _evidence(parts, "clip")[0]
    assert clip.trust == Trust.UNTRUSTED
    assert parts.files.path(clip.path).read_bytes() == CLIP  # kept all the same
    assert {"unregistered node": "not registered", "another key": "not the node's registered key"}.get(
        case, "altered"
    ) in clip.trust_note


def test_a_genuine_manifest_of_one_event_sent_under_another_vouches_for_nothing(parts, tmp_path):
    # Whoever can publish on the node's topics (its MQTT password, not its key) could file event A's signed
    # manifest and original under event B: B's "evidence" would show as verified.
    key = Ed25519PrivateKey.generate()
    _register(parts, "garden3-east", key)
    manifest = _manifest(tmp_path, key, {"clip.mp4": CLIP}, event="ev-a")
    for event in ("ev-b", "ev-a"):  # the second is the control: under its own event it is verified
        send(parts, alert(event_id=event, at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=len(event))))
        _send_clip(parts, "garden3-east", event, CLIP)
        parts.ingest.handle(f"edge/garden3-east/events/{event}/manifest", manifest)
    with parts.sessions() as s:
        trust = dict(
            s.execute(select(Event.event_id, Evidence.trust).join(Event).where(Evidence.kind == "clip")).all()
        )
        note = s.scalar(select(Evidence.trust_note).join(Event).where(Event.event_id == "ev-b"))
    assert trust == {"ev-b": Trust.UNTRUSTED, "ev-a": Trust.VERIFIED}
    assert "signed for event ev-a" in note


def test_an_event_from_an_unregistered_node_is_stored_and_says_so(parts):
    send(parts, alert(event_id="ev-unreg"))
    key = Ed25519PrivateKey.generate()
    _register(parts, "garden3-west", key)
    send(parts, alert("garden3-west", "west", "ev-reg", at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)))
    with parts.sessions() as s:
        flags = dict(s.execute(select(Event.event_id, Event.node_registered)).all())
    assert flags == {"ev-unreg": False, "ev-reg": True}


@pytest.mark.parametrize(
    "topic, payload, reason",
    [
        ("edge/../events", None, "bad topic"),
        ("edge/garden3-east/events/..%2F..%2Fetc/snapshot", JPEG, "bad topic"),
        ("edge/garden3-east/events", b"\xff not json", "bad event"),
        ("edge/garden3-east/events", b"[1, 2]", "bad event"),
        ("edge/garden3-east/events", b"{" * 100_000, "bad event"),
        ("edge/garden3-east/events", "node of another", "bad event"),
        ("edge/garden3-east/events", "id with a slash", "bad event"),
        ("edge/garden3-east/events", "unknown level", "bad event"),
        ("edge/garden3-east/events", "type is a list", "bad event"),
        ("edge/garden3-east/events", "oversized", "bad event"),
        ("edge/garden3-east/events", "NaN score", "bad event"),
        ("edge/garden3-east/events", "infinite score", "bad event"),
        ("edge/garden3-east/events/ev/clip", b"EDGECHUNK1\n{}\nxx", "bad chunk"),
        ("edge/garden3-east/events/ev/clip", "chunk for another event", "bad chunk"),
        ("edge/garden3-east/events/ev/clip", b"EDGECHUNK1\n" + b"[" * 100_000 + b"\nxx", "bad chunk"),
        ("edge/garden3-east/east/status", b"not json", "bad status"),
        ("edge/garden3-east/stats", b'{"node": "garden5"}', "bad stats"),
        ("edge/garden3-east/available", b"maybe", "bad available"),
        ("edge/garden3-east/whatever/else/here", b"x", "unknown topic"),
        ("edge/garden3-east/events/ev-ok/hold/state", b"MAYBE", "bad hold state"),
        ("edge/garden3-east/events/ev-unknown/hold/state", b"ON", "hold state of an unknown event"),
        ("other/garden3-east/events", b"{}", "bad topic"),
    ],
)
def test_hostile_input_is_refused_counted_and_writes_nothing(parts, topic, payload, reason):
    good = alert(event_id="ev-ok")
    bodies = {
        "node of another": {**good, "node": "garden5"},
        "id with a slash": {**good, "id": "../../etc"},
        "unknown level": {**good, "level": "catastrophic"},
        "type is a list": {**good, "type": []},
        "oversized": {**good, "trajectory": [[i, 1.0, 2.0] for i in range(20_000)]},
    }
    if isinstance(payload, str) and payload in bodies:
        payload = json.dumps(bodies[payload]).encode()
    elif payload == "NaN score":
        payload = json.dumps({**good, "score": float("nan")}).encode()  # Python writes NaN; JSON has no NaN
    elif payload == "infinite score":
        payload = json.dumps(good).replace('"score": 0.9', '"score": 1e999').encode()
    elif payload == "chunk for another event":
        payload = chunk_payloads(b"abc", {"event": "ev-other", "node": "garden3-east", "file": "clip"}, 16384)[0]
    elif payload is None:
        payload = json.dumps(good).encode()
    parts.ingest.handle(topic, payload)
    assert parts.drops.snapshot() == {reason: 1}
    with parts.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0
        assert s.scalar(select(func.count()).select_from(Chunk)) == 0
    assert not any(p.is_file() for p in parts.files.root.rglob("*"))
    send(parts, good)  # positive control: the same center takes a good message
    with parts.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("alert_utc", "9999-12-31T23:59:59Z"),  # a window around it overflows the calendar
        ("alert_utc", "0001-01-01T00:00:00+01:00"),  # before the calendar begins, in UTC
        ("score", 10**400),  # an integer past any float
        ("score", 7.5),  # scores are 0..1
        ("floor", 10**20),  # past any database integer
    ],
)
def test_an_alert_with_one_field_out_of_this_world_is_kept_without_it(parts, field, value):
    good = alert(event_id="ev-odd", floor=12)
    body = {**good, "origin": {**good["origin"], "floor": value}} if field == "floor" else {**good, field: value}
    parts.ingest.handle("edge/garden3-east/events", json.dumps(body).encode())
    assert parts.drops.snapshot() == {}
    with parts.sessions() as s:
        ev = s.scalar(select(Event).where(Event.event_id == "ev-odd"))
        assert ev is not None and ev.case_id is not None  # the alert made its case
        kept = {"alert_utc": ev.alert_at, "score": ev.score, "floor": ev.floor}
    want = {"alert_utc": dt.datetime.fromisoformat(good["queued_utc"]), "score": None, "floor": None}[field]
    assert kept[field] == want  # the alert's time falls back to when it was queued; a number is left out
    others = {k: v for k, v in kept.items() if k != field}
    assert None not in others.values()  # positive control: the same message's sound fields are kept


def test_a_node_s_answer_to_a_hold_is_kept_on_its_event_and_the_latest_one_stands(parts):
    send(parts, alert(event_id="ev-held"))
    topic = "edge/garden3-east/events/ev-held/hold/state"

    def said():
        with parts.sessions() as s:
            ev = s.scalar(select(Event).where(Event.event_id == "ev-held"))
            return ev.node_hold, ev.node_hold_at is not None

    assert said() == (None, False)  # control: not answered yet
    parts.ingest.handle(topic, b"ON")
    assert said() == (True, True)
    parts.ingest.handle(topic, b"OFF")
    assert said() == (False, True)
    with parts.sessions() as s:
        answered = s.scalar(select(Event.node_hold_at).where(Event.event_id == "ev-held"))
    parts.ingest.handle(topic, b"OFF")  # the retained answer, again after a reconnect
    with parts.sessions() as s:
        assert s.scalar(select(Event.node_hold_at).where(Event.event_id == "ev-held")) == answered
    parts.ingest.handle("edge/garden5/events/ev-held/hold/state", b"ON")  # another node: not this event's
    assert said() == (False, True) and parts.drops.snapshot() == {"hold state of an unknown event": 1}


def test_a_node_emptying_its_hold_answer_once_the_evidence_is_gone_is_no_bad_message(parts):
    send(parts, alert(event_id="ev-gone"))
    topic = "edge/garden3-east/events/ev-gone/hold/state"
    parts.ingest.handle(topic, b"OFF")
    parts.ingest.handle(topic, b"")  # the node's retention deleted the evidence and emptied the retained answer
    with parts.sessions() as s:
        assert s.scalar(select(Event.node_hold).where(Event.event_id == "ev-gone")) is False  # what it last said
    assert parts.drops.snapshot() == {}
    parts.ingest.handle(topic, b"MAYBE")  # control: a payload that is neither is still refused
    assert parts.drops.snapshot() == {"bad hold state": 1}


def test_a_flood_of_tiny_unfinished_files_is_bounded_by_their_number(parts):
    parts.ingest.max_pending_sets_per_node = 5
    for n in range(12):  # one-byte first halves: far under any byte bound
        first = chunk_payloads(b"xy", {"event": f"ev-{n}", "node": "garden3-east", "file": "clip"}, 1)[0]
        parts.ingest.handle(f"edge/garden3-east/events/ev-{n}/clip", first)
    with parts.sessions() as s:
        held = s.execute(select(Chunk.event_id).distinct()).scalars().all()
    assert len(held) == 5 and "ev-11" in held  # the newest kept, the oldest evicted
    assert parts.drops.snapshot()["pending evicted"] == 7
    _send_clip(parts, "garden3-east", "ev-ok", CLIP)  # the control: a whole clip still gets through
    (clip,) = _evidence(parts, "clip")
    assert parts.files.path(clip.path).read_bytes() == CLIP


def test_unfinished_clips_expire_and_a_flood_of_them_is_bounded(parts):
    parts.ingest.max_pending_bytes_per_node = 100_000
    chunks = chunk_payloads(CLIP, {"event": "ev-a", "node": "garden3-east", "file": "clip"}, 16 * 1024)
    parts.ingest.handle("edge/garden3-east/events/ev-a/clip", chunks[0])
    for n in range(8):  # more unfinished files than the node may hold
        other = chunk_payloads(
            os.urandom(40_000), {"event": f"ev-{n}", "node": "garden3-east", "file": "clip"}, 32768
        )
        parts.ingest.handle(f"edge/garden3-east/events/ev-{n}/clip", other[0])
    with parts.sessions() as s:
        held = s.scalar(select(func.sum(func.length(Chunk.data))))
    assert held <= 100_000
    assert parts.drops.snapshot()["pending evicted"] >= 1
    assert parts.ingest.expire_chunks(dt.timedelta(minutes=15)) == 0  # fresh ones stay
    assert (
        parts.ingest.expire_chunks(dt.timedelta(minutes=15), dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) > 0
    )
    with parts.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Chunk)) == 0


def test_node_and_camera_health_is_kept_and_cameras_per_node_are_bounded(parts, monkeypatch):
    parts.ingest.handle("edge/garden5/available", b"online")
    parts.ingest.handle("edge/garden5/stats", json.dumps({"v": 1, "node": "garden5", "cameras": {}}).encode())
    status = {"v": 1, "camera": "south", "state": "online", "reason": "receiving frames", "since": 0, "fps": 25}
    parts.ingest.handle("edge/garden5/south/status", json.dumps(status).encode())
    parts.ingest.flush_health()  # status and stats are written together, once a second
    with parts.sessions() as s:
        node = s.get(Node, "garden5")
        assert (node.available, node.stats["node"]) == ("online", "garden5")
        assert s.get(Camera, ("garden5", "south")).state == "online"
    monkeypatch.setattr("center.camera_health.MAX_CAMERAS_PER_NODE", 2)
    for cam in ("c2", "c3", "c4"):
        parts.ingest.handle(f"edge/garden5/{cam}/status", json.dumps(status).encode())
    parts.ingest.flush_health()
    with parts.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Camera)) == 2
    assert parts.drops.snapshot()["too many cameras"] == 2


def test_registering_a_node_later_verifies_what_it_already_sent(parts, tmp_path):
    key = Ed25519PrivateKey.generate()
    _send_clip(parts, "garden3-east", "ev-late", CLIP)
    parts.ingest.handle("edge/garden3-east/events/ev-late/manifest", _manifest(tmp_path, key, {"clip.mp4": CLIP}))
    assert _evidence(parts, "clip")[0].trust == Trust.UNTRUSTED  # not registered yet
    _register(parts, "garden3-east", Ed25519PrivateKey.generate())  # the wrong key: still untrusted
    assert reverify(parts.sessions, parts.files, "garden3-east") == 1
    assert _evidence(parts, "clip")[0].trust == Trust.UNTRUSTED
    _register(parts, "garden3-east", key)
    reverify(parts.sessions, parts.files, "garden3-east")
    assert {e.kind: e.trust for e in _evidence(parts)} == {"clip": Trust.VERIFIED, "manifest": Trust.VERIFIED}


def test_status_held_between_writes_is_bounded_by_bytes_per_node(parts):
    parts.ingest.max_health_bytes_per_node = 16 * 1024
    big = {"v": 1, "state": "online", "reason": "x" * 2000}  # about 2 KB each, many camera names
    for i in range(30):
        camera = f"cam{i:02d}"
        parts.ingest.handle(f"edge/garden5/{camera}/status", json.dumps({**big, "camera": camera}).encode())
    assert parts.ingest.health_held_bytes("garden5") <= 16 * 1024
    dropped = parts.drops.snapshot()["health backlog"]
    assert dropped > 0
    small = {"v": 1, "camera": "east", "state": "online"}  # the control: another node is not crowded out
    parts.ingest.handle("edge/garden3-east/east/status", json.dumps(small).encode())
    newer = {**big, "state": "offline"}  # a camera already held: replaces its own bytes
    parts.ingest.handle("edge/garden5/cam00/status", json.dumps(newer).encode())
    assert parts.drops.snapshot()["health backlog"] == dropped
    parts.ingest.flush_health()
    assert parts.ingest.health_held_bytes() == 0
    with parts.sessions() as s:
        assert s.get(Camera, ("garden3-east", "east")).state == "online"
        assert s.get(Camera, ("garden5", "cam00")).state == "offline"
        assert s.scalar(select(func.count()).select_from(Camera).where(Camera.node == "garden5")) == 30 - dropped


def _case_time(parts, event_id: str) -> dt.datetime:
    with parts.sessions() as s:
        ev = s.scalar(select(Event).where(Event.event_id == event_id))
        return ev.case.alert_at


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stats(parts, node_now: dt.datetime, retained: bool = False, node: str = "garden3-east") -> None:
    """The node's stats message, its clock reading `node_now` as it left; written at once."""
    body = {"v": 1, "node": node, "time_utc": _iso(node_now), "sent_utc": _iso(node_now), "cameras": {}}
    parts.ingest.handle(f"edge/{node}/stats", json.dumps(body).encode(), retained=retained)
    parts.ingest.flush_health()


DAYS = dt.timedelta(days=3)


def test_a_node_whose_clock_is_days_behind_has_its_alert_timed_on_the_center_s_clock(parts):
    # A node that booted without a clock dates its stats and its alert three days back: the case is dated
    # when it came, not three days back (where the dispatcher's list would bury it).
    now = dt.datetime.now(dt.UTC)
    _stats(parts, now - DAYS)
    send(parts, alert(event_id="ev-clockless", at=now - DAYS, sent_utc=_iso(now - DAYS)))
    assert abs(_case_time(parts, "ev-clockless") - now) < dt.timedelta(seconds=30)


def test_an_alert_that_waited_days_in_a_node_s_outbox_keeps_its_own_time(parts):
    # Positive control: the clock was right, the network was down; the message left just now.
    now = dt.datetime.now(dt.UTC)
    _stats(parts, now)
    send(parts, alert(event_id="ev-waited", at=now - DAYS, sent_utc=_iso(now)))
    assert abs(_case_time(parts, "ev-waited") - (now - DAYS)) < dt.timedelta(seconds=1)


def test_an_alert_that_waited_on_its_way_keeps_its_own_time_though_it_left_long_ago(parts):
    # The center was down for an hour while the broker held the alert (or paho resent it with its old stamp):
    # received minus sent is an hour, but the node's live stats say its clock is right.
    now = dt.datetime.now(dt.UTC)
    _stats(parts, now)
    send(parts, alert(event_id="ev-held", at=now - HOUR, sent_utc=_iso(now - HOUR)))
    assert abs(_case_time(parts, "ev-held") - (now - HOUR)) < dt.timedelta(seconds=1)


def test_a_retained_stats_message_hours_old_does_not_measure_the_node_s_clock(parts):
    # On subscribing, the broker gives the stats a node left before it went away: no reading of its clock now.
    now = dt.datetime.now(dt.UTC)
    _stats(parts, now - HOUR, retained=True)
    send(parts, alert(event_id="ev-after-retained", at=now - HOUR, sent_utc=_iso(now - HOUR)))
    assert abs(_case_time(parts, "ev-after-retained") - (now - HOUR)) < dt.timedelta(seconds=1)
    _stats(parts, now - HOUR)  # the control: the same stats as sent live do measure it
    send(parts, alert(event_id="ev-after-live", at=now - HOUR, sent_utc=_iso(now - HOUR)))
    assert abs(_case_time(parts, "ev-after-live") - now) < dt.timedelta(seconds=30)


def test_an_alert_dated_in_the_future_by_a_node_that_does_not_say_when_it_sent_is_dated_when_it_came(parts):
    # An older node sends no sent_utc: a clock ahead cannot be measured, but no alert came before it was made.
    now = dt.datetime.now(dt.UTC)
    send(parts, alert(event_id="ev-ahead", at=now + dt.timedelta(days=1)))
    send(parts, alert(event_id="ev-on-time", at=now - dt.timedelta(minutes=10)))  # positive control
    assert abs(_case_time(parts, "ev-ahead") - now) < dt.timedelta(seconds=30)
    assert abs(_case_time(parts, "ev-on-time") - (now - dt.timedelta(minutes=10))) < dt.timedelta(seconds=1)


def test_a_center_minutes_behind_its_messages_does_not_take_that_for_the_node_s_clock(parts):
    # A database stall: the stats and the alert after it are both handled five minutes late. Their readings
    # agree, but the least reading of the last minutes (the stats before the stall) says the clock is right.
    now = dt.datetime.now(dt.UTC)
    _stats(parts, now)
    late = now - dt.timedelta(minutes=5)
    _stats(parts, late)
    send(parts, alert(event_id="ev-late", at=late, sent_utc=_iso(late)))
    assert abs(_case_time(parts, "ev-late") - late) < dt.timedelta(seconds=1)


def test_a_node_that_connects_again_with_its_clock_set_back_is_measured_anew_at_once(parts):
    now = dt.datetime.now(dt.UTC)
    _stats(parts, now)  # its clock was right
    _stats(parts, now - DAYS)  # the control: a reading this far from the last minutes' least waits its turn
    send(parts, alert(event_id="ev-unsure", at=now - DAYS, sent_utc=_iso(now - DAYS)))
    assert abs(_case_time(parts, "ev-unsure") - (now - DAYS)) < dt.timedelta(seconds=1)
    parts.ingest.handle("edge/garden3-east/available", b"online")  # rebooted, to a dead RTC's date
    _stats(parts, now - DAYS)
    send(parts, alert(event_id="ev-rebooted", at=now - DAYS, sent_utc=_iso(now - DAYS), camera="west"))
    assert abs(_case_time(parts, "ev-rebooted") - now) < dt.timedelta(seconds=30)


def test_an_alert_queued_before_a_reboot_set_the_clock_back_keeps_its_time(parts):
    # Made under the right clock, sent after the node rebooted three days back: its alert_utc is later than
    # its sent_utc, so the offset measured since is not its own.
    now = dt.datetime.now(dt.UTC)
    parts.ingest.handle("edge/garden3-east/available", b"online")
    _stats(parts, now - DAYS)
    send(parts, alert(event_id="ev-before-reboot", at=now - HOUR, sent_utc=_iso(now - DAYS)))
    assert abs(_case_time(parts, "ev-before-reboot") - (now - HOUR)) < dt.timedelta(seconds=1)
    send(parts, alert(event_id="ev-after-reboot", at=now - DAYS, sent_utc=_iso(now - DAYS)))  # the control
    assert abs(_case_time(parts, "ev-after-reboot") - now) < dt.timedelta(seconds=30)
