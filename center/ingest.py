"""Ingest: every message from the nodes validated, committed to the database, and only then acknowledged.

`Ingest.handle(topic, payload)` does the work of one message in its own transactions and returns when it is
committed (or refused: hostile input is counted, logged and acknowledged, so it is never delivered again).
The validation is edge listen's (edge.listen): the same id pattern, size limits and chunk header checks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from center.camera_health import camera_row, keep_problem, keep_storage, parse_storage
from center.clock import keep_clock_sample, node_clock
from center.counters import Drops
from center.db import Camera, CameraProblem, Case, Chunk, Event, Evidence, Message, Node, utcnow
from center.files import EvidenceFiles, OutsideDataDir, file_name
from center.loop import Loop
from center.models import MAX_FLOORS, Level, Trust
from center.trust import judge_for, parse_manifest, trust_of
from edge.listen import (
    EVENT_TYPES,
    MAX_CHUNK_DATA,
    MAX_CHUNK_HEADER,
    MAX_EVENT_BYTES,
    MAX_JSON_BYTES,
    MAX_SNAPSHOT_BYTES,
    chunk_ok,
)
from edge.publish.manifest import MAX_MANIFEST_BYTES, Malformed
from edge.publish.mqtt import CHUNK_MAGIC, parse_chunk, valid_id
from edge.publish.problem_message import parse_problem

log = logging.getLogger(__name__)

FILE_TOPICS = ("snapshot", "clip", "original", "manifest")  # events/<id>/<this>
# Status and stats waiting for the next flush (a second) are held as their raw bytes, each counted with this
# much more for its key and dict entry, so a flood of tiny messages under new camera names is bounded too.
HEALTH_ENTRY_OVERHEAD = 512
HEALTH_BATCH = 100  # status rows per transaction: short transactions, short row locks
MAX_TEXT = 200  # characters kept of a free-text field from a node (camera name, level, reason)
# A node's clock is believed within these years: beyond, a time is a wrong clock or hostile, and near the
# calendar's ends the arithmetic on it (a same-throw window around it) overflows.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def parse_time(value) -> dt.datetime | None:
    """An ISO time from a node ('...Z' or with offset) as aware UTC; None when absent, malformed or not of
    this world (outside EARLIEST..LATEST)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        t = t.astimezone(dt.UTC) if t.tzinfo else None
    except (ValueError, OverflowError):  # year 1 at +01:00 is before the calendar begins in UTC
        return None
    return t if t is not None and EARLIEST <= t < LATEST else None


def parse_floor(value) -> int | None:
    """A floor number from a node; None unless a whole number of at most MAX_FLOORS either way."""
    return value if type(value) is int and -MAX_FLOORS <= value <= MAX_FLOORS else None


def parse_score(value) -> float | None:
    """A fall score from a node (0..1); None for anything else (a bool, a string, 1e400 as an integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        score = float(value)
    except OverflowError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: no database keeps it in JSON
        raise ValueError("not a finite number")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python reads them, PostgreSQL refuses them


def _json(payload: bytes, limit: int) -> dict | None:
    """A JSON object within `limit` bytes, of finite numbers only; None for anything else."""
    if len(payload) > limit:
        return None
    try:
        body = json.loads(payload, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


@dataclass
class Ingest:
    prefix: str
    sessions: sessionmaker
    files: EvidenceFiles
    loop: Loop
    instance: str
    drops: Drops
    max_pending_bytes: int = 512 << 20
    max_pending_bytes_per_node: int = 256 << 20
    # Unfinished files one node may have at once: an event's clip and original, for a few events at a time.
    # Bytes alone do not bound a flood of one-byte files, each a row (and a SUM over them) of its own.
    max_pending_sets_per_node: int = 32
    # Status and stats held until the next flush: a node's dozens of cameras send a few hundred bytes each,
    # so 1 MiB per node holds them many times over; all nodes together stay within 64 MiB.
    max_health_bytes_per_node: int = 1 << 20
    max_health_bytes: int = 64 << 20
    _health: dict = field(default_factory=dict)  # (node, camera or None for stats) -> (payload, received)
    _health_bytes: Counter = field(default_factory=Counter)  # node -> bytes held for it (with overhead)
    _health_total: int = 0  # the sum of _health_bytes
    _health_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- routing -------------------------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Validate and store one message; returns once it is committed or refused for good.

        `retained`: the broker gave it as the topic's retained message on subscribing, not as it was sent."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix:
            self.drops("bad topic", topic)
            return
        node, rest = parts[1], parts[2:]
        if not valid_id(node):
            self.drops("bad topic", topic)
            return
        if rest == ["available"]:
            self._available(node, payload, topic, retained)
        elif rest == ["stats"]:
            self._stats(node, payload, topic, live=not retained)
        elif len(rest) == 2 and rest[1] == "status":
            self._status(node, rest[0], payload, topic)
        elif len(rest) == 3 and rest[0] == "cameras" and rest[2] == "problem":
            self._problem(node, rest[1], payload, topic)
        elif rest == ["storage"]:
            self._storage(node, payload, topic)
        elif len(rest) == 3 and rest[1:] == ["detect", "state"]:
            return  # the node's answer to a command: nothing to keep
        elif len(rest) == 4 and rest[0] == "events" and rest[2:] == ["hold", "state"]:
            self._hold_state(node, rest[1], payload, topic)
        elif rest == ["events"]:
            self._event(node, payload, topic)
        elif len(rest) == 3 and rest[0] == "events" and rest[2] in FILE_TOPICS:
            if not valid_id(rest[1]):
                self.drops("bad topic", topic)
            elif rest[2] == "snapshot":
                self._snapshot(node, rest[1], payload, topic)
            elif rest[2] == "manifest":
                self._manifest(node, rest[1], payload, topic)
            else:
                self._chunk(node, rest[1], rest[2], payload, topic)
        elif rest == ["feedback"] or rest[-1:] in (["set"], ["get"]):
            return  # what the center itself (or an operator) sends
        else:
            self.drops("unknown topic", topic)

    # -- node health ---------------------------------------------------------------------------------------
    def _node(self, s: Session, name: str, now: dt.datetime, touch: bool = True) -> Node:
        """The node's row, made when first heard of; `touch` records it was heard now (health messages do;
        alerts do not, so that they never wait for a row lock a health flush holds)."""
        node = s.get(Node, name)
        if node is None:
            try:
                with s.begin_nested():
                    node = Node(name=name, last_seen=now)
                    s.add(node)
            except IntegrityError:  # another instance added it just now
                node = s.get(Node, name)
        if touch:
            node.last_seen = now
        return node

    def _available(self, node: str, payload: bytes, topic: str, retained: bool) -> None:
        if payload not in (b"online", b"offline"):
            self.drops("bad available", topic)
            return
        with self.sessions.begin() as s:
            row = self._node(s, node, utcnow())
            row.available = payload.decode()
            if payload == b"online" and not retained:  # connected again (a reboot may have set its clock anew)
                row.clock_offset_at = None

    def _stats(self, node: str, payload: bytes, topic: str, live: bool) -> None:
        body = _json(payload, MAX_JSON_BYTES)
        if body is None or body.get("node") != node:
            self.drops("bad stats", topic)
            return
        self._hold_health((node, None), payload, topic, live)

    def _status(self, node: str, camera: str, payload: bytes, topic: str) -> None:
        body = _json(payload, MAX_JSON_BYTES)
        if not valid_id(camera) or body is None:
            self.drops("bad status", topic)
            return
        self._hold_health((node, camera), payload, topic)

    def _problem(self, node: str, camera: str, payload: bytes, topic: str) -> None:
        if payload == b"":  # the node's camera starts afresh (node start, restart, reload): nothing raised now
            with self.sessions.begin() as s:
                row = s.get(Camera, (node, camera))
                if row is not None and row.problems is not None:
                    # Even with nothing active: the node's clock after a restart (no RTC, NTP not yet synced,
                    # or a replay's seconds) may be behind the last time it sent. There is no time of the
                    # node's to stamp this with (ours is not its): whatever the node says next is newer.
                    row.problems = {"active": [], "at_s": None}
            return
        body = _json(payload, MAX_JSON_BYTES)
        msg = parse_problem(body, node, camera) if body is not None else None
        if msg is None:
            self.drops("bad camera problem", topic)
            return
        try:
            with self.sessions.begin() as s:
                self._node(s, node, utcnow())
                if not keep_problem(s, self.loop, msg, parse_time(msg.at_utc)):
                    self.drops("too many cameras", f"{node}/{camera}")
        except IntegrityError:
            with self.sessions() as s:
                seen = s.scalar(select(CameraProblem.id).where(CameraProblem.msg_id == msg.msg_id))
            if seen is None:
                raise  # something else collided: the caller retries
            self.drops("duplicate", topic)  # QoS 1 is at least once, and the message is retained

    def _storage(self, node: str, payload: bytes, topic: str) -> None:
        if payload == b"":
            return
        body = _json(payload, MAX_JSON_BYTES)
        msg = parse_storage(body, node) if body is not None else None
        if msg is None:
            self.drops("bad storage", topic)
            return
        with self.sessions.begin() as s:
            keep_storage(self._node(s, node, utcnow()), msg)

    def _hold_health(self, key: tuple[str, str | None], payload: bytes, topic: str, live: bool = False) -> None:
        """Keep the latest status or stats until the next flush_health: they come every few seconds from
        every camera (QoS 0, retained, so nothing to acknowledge), and one transaction takes them all.

        Held as the validated bytes (parsed again at the flush: parsed JSON can take many times its bytes),
        within max_health_bytes_per_node and max_health_bytes; what does not fit is dropped and counted."""
        node = key[0]
        size = len(payload) + HEALTH_ENTRY_OVERHEAD
        with self._health_lock:
            old = self._health.get(key)
            freed = len(old[0]) + HEALTH_ENTRY_OVERHEAD if old else 0
            if (
                self._health_bytes[node] - freed + size > self.max_health_bytes_per_node
                or self._health_total - freed + size > self.max_health_bytes
            ):
                self.drops("health backlog", topic)
                return
            self._health[key] = (payload, utcnow(), live)
            self._health_bytes[node] += size - freed
            self._health_total += size - freed

    def health_held_bytes(self, node: str | None = None) -> int:
        """Bytes of status and stats held for the next flush, for one node or all (with per-entry overhead)."""
        with self._health_lock:
            return self._health_bytes[node] if node else self._health_total

    def flush_health(self) -> int:
        """Write the held status and stats, HEALTH_BATCH to a transaction; returns how many."""
        with self._health_lock:
            held, self._health = self._health, {}
            self._health_bytes.clear()
            self._health_total = 0
        items = sorted(held.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))  # one lock order everywhere
        for i in range(0, len(items), HEALTH_BATCH):
            self._write_health(items[i : i + HEALTH_BATCH])
        return len(items)

    def _write_health(self, items: list) -> None:
        with self.sessions.begin() as s:
            for (node, camera), (payload, at, live) in items:
                body = _json(payload, MAX_JSON_BYTES)  # validated when it came: parses again
                n = self._node(s, node, at)
                if camera is None:
                    n.stats, n.stats_at = body, at
                    node_time = parse_time(body.get("sent_utc")) or parse_time(body.get("time_utc"))
                    if live and node_time is not None:  # a retained one may be hours old: no measure of the clock
                        keep_clock_sample(n, node_time, at)
                    continue
                row = camera_row(s, node, camera, at)
                if row is None:
                    self.drops("too many cameras", f"{node}/{camera}")
                    continue
                state = body.get("state")
                row.state = state[:16] if isinstance(state, str) else None
                row.status, row.updated_at = body, at

    # -- events --------------------------------------------------------------------------------------------
    def _event(self, node: str, payload: bytes, topic: str) -> None:
        body = _json(payload, MAX_EVENT_BYTES)
        if (
            body is None
            or not isinstance(body.get("type"), str)  # a list is no type, and no set can hold it
            or body.get("type") not in EVENT_TYPES
            or not valid_id(body.get("id"))
            or not valid_id(body.get("msg_id"))
            or body.get("node") != node  # the node the topic (so the broker's ACL) vouches for
            or body.get("level", Level.SUSPECTED) not in tuple(Level)
        ):
            self.drops("bad event", topic)
            return
        try:
            with self.sessions.begin() as s:
                now = utcnow()
                s.add(
                    Message(
                        msg_id=body["msg_id"],
                        node=node,
                        event_id=body["id"],
                        type=body["type"],
                        body=body,
                        received_at=now,
                        instance=self.instance,
                    )
                )
                s.flush()  # the unique msg_id: a QoS 1 repeat fails here and changes nothing
                self._fold(s, node, body, now)
        except IntegrityError:
            if self._seen(body["msg_id"]):
                self.drops("duplicate", topic)  # counted, not logged as hostile: QoS 1 is at least once
                return
            raise  # something else collided (two instances made the same event): the caller retries

    def _seen(self, msg_id: str) -> bool:
        with self.sessions() as s:
            return s.get(Message, msg_id) is not None

    def _fold(self, s: Session, node: str, body: dict, now: dt.datetime) -> None:
        """Fold one event message into its event row, and the event into a case once it says its level."""
        ev = self._event_row(s, node, body["id"], now)
        offset = self._node(s, node, now, touch=False).clock_offset_s
        clock = node_clock(parse_time(body.get("sent_utc")), now, offset)  # the node's times, put on ours
        camera = body.get("camera")
        if isinstance(camera, str) and valid_id(camera):
            ev.camera = ev.camera or camera
        if body["type"] in ("new", "update") or not ev.body:
            if body["type"] == "new" or not ev.body:  # the alert itself, or the first word of it
                ev.body = body
            origin = body.get("origin")
            floor = parse_floor(origin.get("floor")) if isinstance(origin, dict) else None
            if floor is not None and ev.floor is None:
                ev.floor = floor
            score = parse_score(body.get("score"))
            if score is not None:
                ev.score = score
            claimed = parse_time(body.get("alert_utc")) or parse_time(body.get("queued_utc"))
            ev.alert_at = ev.alert_at or clock.on_center_clock(claimed)
        queued = clock.on_center_clock(parse_time(body.get("queued_utc")))
        if queued and (ev.first_queued_at is None or queued < ev.first_queued_at):
            ev.first_queued_at = queued
        if body["type"] == "end":
            ev.ended = True
        level = body.get("level")
        raised = level and (ev.level is None or (ev.level == Level.SUSPECTED and level == Level.CONFIRMED))
        if raised:
            ev.level = level
        if ev.case_id is None and ev.level is not None:
            self.loop.attach(s, ev, now)
        elif raised and ev.case is not None:
            # Locked, re-read: a dispatcher confirming the same case on another instance must not dispatch it too.
            case = s.get(Case, ev.case_id, with_for_update=True, populate_existing=True)
            self.loop.level_changed(s, case, level, now)

    def _event_row(self, s: Session, node: str, event_id: str, now: dt.datetime) -> Event:
        """The event's row, made if this is the first message of it (a still may come before the alert)."""
        ev = s.scalar(select(Event).where(Event.node == node, Event.event_id == event_id))
        if ev is None:
            registered = self._node(s, node, now, touch=False).public_key is not None
            ev = Event(node=node, event_id=event_id, body={}, received_at=now, node_registered=registered)
            s.add(ev)
            s.flush()  # a second instance making the same event fails here: IntegrityError, the caller retries
        return ev

    def _hold_state(self, node: str, event_id: str, payload: bytes, topic: str) -> None:
        """The node's retained answer to a hold command: whether it now keeps the event's evidence.

        Only for an event this center has: a hold is only ever asked of those, and a flood of made-up ids must
        not make rows."""
        if not valid_id(event_id):
            self.drops("bad topic", topic)
            return
        if payload == b"":
            return  # the node emptied its retained answer: the event's evidence is gone (its retention)
        if payload not in (b"ON", b"OFF"):
            self.drops("bad hold state", topic)
            return
        with self.sessions.begin() as s:
            ev = s.scalar(select(Event).where(Event.node == node, Event.event_id == event_id))
            if ev is None:
                self.drops("hold state of an unknown event", topic)
                return
            held = payload == b"ON"
            if ev.node_hold != held:  # the retained answer comes again on every reconnect: not a new answer
                ev.node_hold, ev.node_hold_at = held, utcnow()

    # -- files ---------------------------------------------------------------------------------------------
    def _snapshot(self, node: str, event_id: str, payload: bytes, topic: str) -> None:
        if len(payload) > MAX_SNAPSHOT_BYTES or not payload.startswith(b"\xff\xd8\xff"):  # a JPEG, not too big
            self.drops("bad snapshot", topic)
            return
        self._keep_file(node, event_id, "snapshot", payload, hashlib.sha256(payload).hexdigest())

    def _keep_file(self, node: str, event_id: str, kind: str, data: bytes, digest: str) -> Evidence | None:
        """Write a verified file under data_dir and record it (once: the unique event/kind/digest)."""
        try:
            rel = self.files.write(node, event_id, file_name(kind, digest, data), data)
        except OutsideDataDir as exc:
            self.drops("outside data dir", f"{node}/{event_id}", str(exc))
            return None
        try:
            with self.sessions.begin() as s:
                now = utcnow()
                ev = self._event_row(s, node, event_id, now)
                trust, why = trust_of(s, self.files, ev, digest)
                item = Evidence(
                    event_pk=ev.id,
                    kind=kind,
                    path=rel,
                    sha256=digest,
                    bytes=len(data),
                    trust=trust,
                    trust_note=why,
                    received_at=now,
                )
                s.add(item)
                s.flush()
                if kind == "snapshot":
                    self.loop.still_arrived(s, ev, item, now)
                return item
        except IntegrityError:
            if self._received_again(node, event_id, kind, digest):
                return None  # the same file of the same event again: kept once
            raise  # another instance made the event row at the same moment: the caller retries

    def _received_again(self, node: str, event_id: str, kind: str, digest: str) -> bool:
        """The row of a file written again (a QoS 1 repeat, an original asked for again), now received again and
        no longer swept: retention (center.retention) marked it when it deleted the file, and the file is back on
        the disk, for the next sweep. False when there is no such row."""
        with self.sessions.begin() as s:
            item = s.scalar(
                select(Evidence)
                .join(Event, Evidence.event_pk == Event.id)
                .where(Event.node == node, Event.event_id == event_id, Evidence.kind == kind)
                .where(Evidence.sha256 == digest)
            )
            if item is not None:
                item.received_at, item.swept_at = utcnow(), None
            return item is not None

    # -- chunks --------------------------------------------------------------------------------------------
    def _chunk(self, node: str, event_id: str, file: str, payload: bytes, topic: str) -> None:
        if len(payload) > len(CHUNK_MAGIC) + MAX_CHUNK_HEADER + 1 + MAX_CHUNK_DATA:
            self.drops("oversized", topic)
            return
        try:
            head, data = parse_chunk(payload)
        except ValueError:
            head, data = None, b""
        if not chunk_ok(head, node, event_id, file, payload, data):
            self.drops("bad chunk", topic)
            return
        key = (node, event_id, file, head["sha256"])
        with self.sessions.begin() as s:
            now = utcnow()
            other = s.scalar(
                select(Chunk).where(
                    Chunk.node == node, Chunk.event_id == event_id, Chunk.file == file, Chunk.sha256 == key[3]
                )
            )
            if other is not None and (other.count, other.size) != (head["count"], head["bytes"]):
                self.drops("bad chunk", topic)  # the same file cannot change its chunk count or size
                return
            if s.get(Chunk, (*key, head["index"])) is None:
                s.add(
                    Chunk(
                        node=node,
                        event_id=event_id,
                        file=file,
                        sha256=key[3],
                        index=head["index"],
                        count=head["count"],
                        size=head["bytes"],
                        data=data,
                        received_at=now,
                    )
                )
        self._bound(node)
        self._maybe_complete(key)

    def _maybe_complete(self, key: tuple[str, str, str, str]) -> None:
        """Join a file whose chunks are all in (checked after commit, so whichever instance stored the last
        chunk sees them all), verify its SHA-256, keep it, and forget the chunks."""
        node, event_id, file, digest = key
        where = (Chunk.node == node, Chunk.event_id == event_id, Chunk.file == file, Chunk.sha256 == digest)
        with self.sessions() as s:
            have = s.execute(
                select(func.count(), func.max(Chunk.count), func.sum(func.length(Chunk.data))).where(*where)
            ).one()
            if not have[0] or have[0] < have[1]:
                return
            rows = s.execute(select(Chunk.index, Chunk.data, Chunk.size).where(*where).order_by(Chunk.index)).all()
        blob = b"".join(r.data for r in rows)
        if len(blob) == rows[0].size and hashlib.sha256(blob).hexdigest() == digest:
            self._keep_file(node, event_id, file, blob, digest)
        else:
            self.drops("sha256 mismatch", f"{node}/{event_id}/{file}", f"{len(blob)} bytes")
        with self.sessions.begin() as s:
            s.execute(delete(Chunk).where(*where))

    def _bound(self, node: str) -> None:
        """Drop the unfinished files fed longest ago until the node's and the total bounds hold."""
        with self.sessions.begin() as s:
            mine = Chunk.node == node
            while self._pending_sets(s, mine) > self.max_pending_sets_per_node:
                self._drop_set(s, self._oldest_set(s, mine), "pending evicted")
            for scope, limit in (
                (Chunk.node == node, self.max_pending_bytes_per_node),
                (True, self.max_pending_bytes),
            ):
                while True:
                    held = s.scalar(select(func.coalesce(func.sum(func.length(Chunk.data)), 0)).where(scope))
                    if held <= limit:
                        break
                    self._drop_set(s, self._oldest_set(s, scope), "pending evicted")

    @staticmethod
    def _pending_sets(s: Session, scope) -> int:
        sets = select(Chunk.event_id, Chunk.file, Chunk.sha256).where(scope).distinct().subquery()
        return s.scalar(select(func.count()).select_from(sets))

    @staticmethod
    def _oldest_set(s: Session, scope) -> tuple[str, str, str, str]:
        oldest = s.execute(
            select(Chunk.node, Chunk.event_id, Chunk.file, Chunk.sha256)
            .where(scope)
            .order_by(Chunk.received_at)
            .limit(1)
        ).one()
        return tuple(oldest)

    def expire_chunks(self, idle: dt.timedelta, now: dt.datetime | None = None) -> int:
        """Drop unfinished files that got no chunk for `idle`: the rest will never come."""
        cutoff = (now or utcnow()) - idle
        with self.sessions.begin() as s:
            stale = s.execute(
                select(Chunk.node, Chunk.event_id, Chunk.file, Chunk.sha256)
                .group_by(Chunk.node, Chunk.event_id, Chunk.file, Chunk.sha256)
                .having(func.max(Chunk.received_at) < cutoff)
            ).all()
            for key in stale:
                self._drop_set(s, tuple(key), "pending expired")
        return len(stale)

    def _drop_set(self, s: Session, key: tuple, reason: str) -> None:
        node, event_id, file, digest = key
        s.execute(
            delete(Chunk).where(
                Chunk.node == node, Chunk.event_id == event_id, Chunk.file == file, Chunk.sha256 == digest
            )
        )
        self.drops(reason, f"{node}/{event_id}/{file}")

    # -- manifests and trust -------------------------------------------------------------------------------
    def _manifest(self, node: str, event_id: str, payload: bytes, topic: str) -> None:
        """A signed manifest (the node's manifest.json): kept, checked against the node's registered key, and
        the event's files it lists marked verified or untrusted."""
        if len(payload) > MAX_MANIFEST_BYTES:
            self.drops("bad manifest", topic)
            return
        try:
            body, sig, public = parse_manifest(self.files.data_dir, payload)
        except Malformed as exc:
            self.drops("bad manifest", topic, str(exc))
            return
        digest = hashlib.sha256(payload).hexdigest()
        kept = self._keep_file(node, event_id, "manifest", payload, digest)
        with self.sessions.begin() as s:
            registered = s.get(Node, node)
            key = registered.public_key if registered else None
            trust, why = judge_for(body, sig, public, key, node, event_id)
            if kept is not None:
                row = s.get(Evidence, kept.id)
                row.trust, row.trust_note = trust, why
            ev = s.scalar(select(Event).where(Event.node == node, Event.event_id == event_id))
            if ev is None:
                return
            listed = {m["sha256"] for m in body["files"].values()}
            for item in s.scalars(select(Evidence).where(Evidence.event_pk == ev.id, Evidence.kind != "manifest")):
                if item.sha256 in listed and item.trust != Trust.VERIFIED:
                    item.trust, item.trust_note = trust, why
        if trust != Trust.VERIFIED:
            self.drops("untrusted manifest", topic, why)
