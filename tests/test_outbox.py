"""The outbox keeps messages until acknowledged, sends alerts first and drops clips before anything else."""

import hashlib
import json
import sqlite3

import jsonschema
import pytest
from support.disk import fill_up, small_disk

from edge.publish.mqtt import chunk_payloads, parse_chunk
from edge.publish.outbox import Kind, NewMessage, Outbox

from conftest import REPO


def test_messages_survive_reopening_until_acknowledged(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    a = box.put("alert", "t/events", b"a")
    box.put("chunk", "t/clip", b"c")
    box.close()
    again = Outbox(tmp_path / "o.sqlite", 10_000_000)
    assert [m.payload for m in again.next_batch(10, set())] == [b"a", b"c"]
    again.ack(a)
    assert [m.payload for m in again.next_batch(10, set())] == [b"c"]


def test_new_alerts_jump_a_backlog_of_clip_chunks(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    for i in range(50):
        box.put("chunk", "t/clip", bytes([i]))
    box.put("alert", "t/events", b"alert")
    assert box.next_batch(1, set())[0].payload == b"alert"


def test_in_flight_messages_are_not_handed_out_twice(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    first = box.put("event", "t", b"1")
    box.put("event", "t", b"2")
    assert [m.payload for m in box.next_batch(5, {first})] == [b"2"]


def test_when_full_clip_chunks_go_first_and_alerts_never(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_bytes=3000)
    for _ in range(3):
        box.put("alert", "t/events", b"x" * 500)
    for _ in range(10):
        box.put("chunk", "t/clip", b"y" * 500)
    kinds = [m.kind for m in box.next_batch(100, set())]
    assert kinds.count("alert") == 3
    assert box.depth()[1] <= 3000
    assert box.dropped()["chunk"] + kinds.count("chunk") == 10 and box.dropped()["chunk"] >= 7


def test_a_file_that_lost_a_chunk_to_the_bound_loses_the_rest_and_another_file_stays_whole(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_bytes=3000)
    for _ in range(4):
        box.put("chunk", "t/events/a/original", b"a" * 500)
    for _ in range(3):
        box.put("chunk", "t/events/b/clip", b"b" * 500)  # 3500 bytes: the oldest file goes, all of it
    left = [m.topic for m in box.next_batch(100, set())]
    assert left == ["t/events/b/clip"] * 3  # control: the newer file is whole
    assert not box.waiting("t/events/a/original") and box.dropped()["chunk"] == 4


def test_a_newer_status_replaces_the_unsent_one(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    box.put("status", "t/cam/status", b"old", retain=True, coalesce_key="t/cam/status")
    box.put("status", "t/cam/status", b"new", retain=True, coalesce_key="t/cam/status")
    assert [m.payload for m in box.next_batch(10, set())] == [b"new"]


def test_a_replacement_that_does_not_fit_on_a_full_disk_leaves_the_older_message_queued(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        box = Outbox(disk / "o.sqlite", 10**9)
        box.put("event", "t/storage", b'{"level": "warning"}', retain=True, coalesce_key="storage")
        # Room for the DELETE of the older message, not for the INSERT of the newer, larger one.
        filler = fill_up(disk, leave_bytes=3 * 4096)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            box.put("event", "t/storage", b"x" * 200_000, retain=True, coalesce_key="storage")
        assert [m.payload for m in box.next_batch(10, set())] == [b'{"level": "warning"}']
        filler.unlink()  # the control: with space back, the newer one replaces it
        box.put("event", "t/storage", b"x" * 200_000, retain=True, coalesce_key="storage")
        assert [m.payload for m in box.next_batch(10, set())] == [b"x" * 200_000]
        box.close()


def test_a_batch_that_outgrows_the_bound_is_dropped_whole_not_in_part(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_bytes=3000)
    box.put_many(NewMessage(Kind.CHUNK, "t/events/a/clip", b"a" * 500) for _ in range(4))
    box.put_many(NewMessage(Kind.CHUNK, "t/events/b/clip", b"b" * 500) for _ in range(8))  # more than the bound
    assert box.depth() == (0, 0) and box.dropped()["chunk"] == 12  # neither file fits next to the other
    box.put_many(NewMessage(Kind.CHUNK, "t/events/c/clip", b"c" * 500) for _ in range(4))  # the control
    assert [m.topic for m in box.next_batch(10, set())] == ["t/events/c/clip"] * 4


def test_a_file_the_bound_cuts_while_it_is_queued_batch_by_batch_leaves_none_of_it_waiting(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_bytes=3000)
    assert not box.put_file("t/events/a/original", [b"a" * 500] * 10, batch_bytes=1000)  # 5000 bytes
    assert box.depth() == (0, 0) and box.dropped()["chunk"] == 8  # its first 8, cut; the last 2 never queued
    assert box.put_file("t/events/b/original", [b"b" * 500] * 5, batch_bytes=1000)  # the control: it fits
    assert [m.topic for m in box.next_batch(10, set())] == ["t/events/b/original"] * 5


def test_a_file_whose_later_batch_does_not_fit_on_a_full_disk_takes_back_its_earlier_ones(tmp_path):
    chunks = [bytes([i]) * 50_000 for i in range(8)]
    with small_disk(tmp_path / "disk") as disk:
        box = Outbox(disk / "o.sqlite", 10**9)
        box.put("alert", "t/events", b"a")
        filler = fill_up(disk, leave_bytes=150_000)  # room for the first batches, not for all eight chunks
        with pytest.raises(sqlite3.OperationalError, match="full"):
            box.put_file("t/events/e1/original", chunks, batch_bytes=50_000)
        assert [m.payload for m in box.next_batch(20, set())] == [b"a"]  # no half file waits for the center
        filler.unlink()  # the control: with space back, the whole file is queued, in order
        assert box.put_file("t/events/e1/original", chunks, batch_bytes=50_000)
        assert [m.payload for m in box.next_batch(20, set())] == [b"a", *chunks]
        box.close()


def test_a_batch_that_does_not_fit_on_a_full_disk_is_not_queued_in_part(tmp_path):
    chunks = [NewMessage(Kind.CHUNK, "t/events/e1/clip", bytes([i]) * 50_000) for i in range(8)]
    with small_disk(tmp_path / "disk") as disk:
        box = Outbox(disk / "o.sqlite", 10**9)
        box.put("alert", "t/events", b"a")
        filler = fill_up(disk, leave_bytes=100_000)  # room for two chunks of the eight
        with pytest.raises(sqlite3.OperationalError, match="full"):
            box.put_many(chunks)
        assert [m.payload for m in box.next_batch(20, set())] == [b"a"]  # no half file waits for the center
        filler.unlink()  # the control: with space back, the whole file is queued, in order
        box.put_many(chunks)
        assert [m.payload for m in box.next_batch(20, set())] == [b"a", *(c.payload for c in chunks)]
        box.close()


def test_a_batch_with_an_unknown_kind_queues_none_of_it(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    with pytest.raises(ValueError):
        box.put_many([NewMessage(Kind.COMMAND, "t/a", b""), NewMessage("alrt", "t/b", b"")])
    assert box.depth() == (0, 0)
    box.put_many([NewMessage(Kind.COMMAND, "t/a", b""), NewMessage("alert", "t/b", b"")])  # control
    assert sorted(m.topic for m in box.next_batch(10, set())) == ["t/a", "t/b"]


def test_chunks_reassemble_to_the_file_and_match_their_schema():
    data = bytes(range(256)) * 1000
    parts = [parse_chunk(p) for p in chunk_payloads(data, {"event": "e1", "node": "n", "file": "clip"}, 65536)]
    schema = json.loads((REPO / "docs" / "schemas" / "chunk-header.schema.json").read_text())
    for head, _ in parts:
        jsonschema.validate(head, schema)
    assert b"".join(d for _, d in sorted(parts, key=lambda p: p[0]["index"])) == data
    assert parts[0][0]["sha256"] == hashlib.sha256(data).hexdigest() and parts[0][0]["count"] == 4


def test_kinds_keep_the_stored_values_so_old_outboxes_still_drain(tmp_path):
    assert [k.value for k in Kind] == ["alert", "event", "command", "status", "stats", "snapshot", "chunk"]
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    box.put(Kind.CHUNK, "t/clip", b"c")
    box.put("alert", "t/events", b"a")  # a plain string is still accepted
    box.close()
    db = sqlite3.connect(tmp_path / "o.sqlite")
    assert db.execute("SELECT kind FROM outbox ORDER BY seq").fetchall() == [("chunk",), ("alert",)]
    # Rows as another version left them: one it knows, one it does not (after a rollback, say).
    with db:
        for kind, priority in (("event", 1), ("telemetry", 4)):
            db.execute(
                "INSERT INTO outbox (kind, priority, topic, payload, qos, retain, created)"
                " VALUES (?, ?, 't', x'00', 1, 0, 0)",
                (kind, priority),
            )
    db.close()
    again = Outbox(tmp_path / "o.sqlite", 10_000_000)
    kinds = [m.kind for m in again.next_batch(10, set())]
    assert kinds == [Kind.ALERT, Kind.EVENT, "telemetry", Kind.CHUNK]
    assert isinstance(kinds[0], Kind) and not isinstance(kinds[2], Kind)  # the unknown one is still sent


def test_an_unknown_kind_is_refused_when_queued(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    with pytest.raises(ValueError):
        box.put("alrt", "t/events", b"a")
    assert box.depth() == (0, 0)
