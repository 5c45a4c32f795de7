"""`edge listen`: the reference receiver — what the community center runs, and what the tests use.

Subscribes to every node under the prefix, drops duplicates (QoS 1 delivers at least once), reassembles
clips and checks their SHA-256, writes each event with its files to a folder, prints one line per alert.

Everything from the network is hostile until validated: a topic level or field reaches a path or a printed
line only if it matches the id pattern (edge.publish.mqtt.valid_id) or a fixed set of values; every path is
resolved and checked against the output folder; what a sender can make the receiver hold is bounded by the
limits below. A message that fails a check is dropped and counted in `Listener.dropped`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import unicodedata
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.config import EdgeConfig
from edge.events import announcement
from edge.publish.mqtt import (
    CHUNK_MAGIC,
    MAX_CHUNK_HEADER,
    EventType,
    Reconnect,
    clip_extension,
    connect_failed,
    make_client,
    parse_chunk,
    valid_id,
)
from edge.publish.problem_message import parse_problem

log = logging.getLogger(__name__)

# What one message may be. Anything larger is dropped unread (the broker's message_size_limit should stop it
# earlier: the client library has the whole message in memory before it reaches us).
MAX_EVENT_BYTES = 64 * 1024  # nodes keep event payloads under 8 KiB (trajectory thinned); 8x margin
MAX_JSON_BYTES = 64 * 1024  # status and stats are a few hundred bytes per camera
MAX_SNAPSHOT_BYTES = 16 << 20  # the still is one JPEG frame: a few MiB even at 4K
MAX_CHUNK_DATA = 8 << 20  # mqtt.chunk_kib is at most 8192 KiB
MAX_FILE_BYTES = 200 << 20  # an original clip: pre_s + post_s are at most 60 s, plus the fall, at 4K 16 Mbit/s
MAX_CHUNKS = MAX_FILE_BYTES // (16 * 1024)  # mqtt.chunk_kib is at least 16 KiB

# What unfinished files may hold, together. Past a bound the set that waited longest for a chunk is dropped.
MAX_PENDING_BYTES = 512 << 20  # all nodes: two of the largest files at once, with room to spare
MAX_PENDING_BYTES_PER_NODE = 256 << 20  # one node (or whoever has its password) cannot push out the others
MAX_PENDING_SETS = 256  # files in flight: a clip and an original from each of 100 nodes, with margin
MAX_PENDING_SETS_PER_NODE = 32  # a node sends a file's chunks back to back: a few in flight at once; without
#                                 this one node's tiny unfinished files would push out everyone else's
CHUNK_OVERHEAD = 256  # bookkeeping bytes counted per held chunk, so that a flood of tiny chunks is bounded too
PENDING_IDLE_S = 15 * 60.0  # a node sends a file's chunks back to back: 15 min without one means the rest
#                             was dropped (node outbox full, broker queue limit) and will never come

MAX_CAMERAS_PER_NODE = 64  # status is kept per camera topic level; a node has a handful of cameras
MAX_SEEN = 100_000  # msg_ids remembered to drop duplicates: QoS 1 resends come long before 100 000 more
MAX_KEPT = 10_000  # events and file results kept in memory for callers; all of them are on disk
MAX_LINE = 500  # characters of a printed line
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
EVENT_TYPES = frozenset(t.value for t in EventType)  # docs/schemas/event.schema.json, "type"
FILE_NAMES = {"clip": "clip.mp4", "original": None}  # original: .ts, .mkv or .mp4 by its first bytes


def printable(text: str, limit: int = MAX_LINE) -> str:
    """`text` with every control, format or separator character escaped, cut to `limit` characters: safe for
    a terminal and a log line (no newlines, terminal escapes, bidi overrides)."""
    out = []
    for ch in text[: limit + 1]:
        cat = unicodedata.category(ch)
        if cat[0] == "C" or cat in ("Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    line = "".join(out)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _int(value) -> bool:
    return type(value) is int  # not bool, not float


def chunk_ok(head, node: str, event_id: str, file: str, payload: bytes, data: bytes) -> bool:
    """True when a parsed chunk (`head`, `data` of `payload`) is one of `file` of the topic's node and event,
    with sane count, size, index and SHA-256. Public: the center checks chunks with it too."""
    if not isinstance(head, dict) or len(payload) - len(data) > len(CHUNK_MAGIC) + MAX_CHUNK_HEADER + 1:
        return False
    count, size, index = head.get("count"), head.get("bytes"), head.get("index")
    return (
        head.get("event") == event_id  # the header names the event and file of its topic
        and head.get("file") == file
        and head.get("node") == node
        and _int(count)
        and _int(size)
        and _int(index)
        and 0 <= size <= MAX_FILE_BYTES
        and 1 <= count <= min(MAX_CHUNKS, max(1, size))  # every chunk carries at least a byte
        and 0 <= index < count
        and len(data) <= min(size, MAX_CHUNK_DATA)
        and isinstance(head.get("sha256"), str)
        and SHA256_HEX.fullmatch(head["sha256"]) is not None
    )


@dataclass
class _Pending:
    """One file being put together from its chunks."""

    node: str
    count: int
    size: int
    last: float  # time.monotonic() of the last chunk
    parts: dict[int, bytes] = field(default_factory=dict)
    data_bytes: int = 0
    held: int = 0  # counted against the bounds: data plus CHUNK_OVERHEAD per chunk


class Listener:
    """Receives alerts and files from all nodes into `out/<node>/<event id>/`."""

    def __init__(
        self, config: EdgeConfig, out: Path, client_id: str | None = None, on_line: Callable[[str], None] = print
    ):
        self.cfg = config.mqtt
        self.prefix = self.cfg.topic_prefix
        self.out = out
        self.on_line = on_line
        out.mkdir(parents=True, exist_ok=True)
        self.root = out.resolve()
        self.seen_path = out / "seen_msg_ids.txt"
        self.seen_order: deque[str] = deque()
        self.seen: set[str] = set()
        self._seen_lines = 0
        if self.seen_path.exists():
            for msg_id in self.seen_path.read_text(errors="replace").split():
                self._seen_lines += 1
                if valid_id(msg_id):
                    self._remember(msg_id, persist=False)
        # Limits, per instance so that a test can make them small; the module constants say why each is what it is.
        self.max_pending_bytes = MAX_PENDING_BYTES
        self.max_pending_bytes_per_node = MAX_PENDING_BYTES_PER_NODE
        self.max_pending_sets = MAX_PENDING_SETS
        self.max_pending_sets_per_node = MAX_PENDING_SETS_PER_NODE
        self.pending_idle_s = PENDING_IDLE_S
        self.pending: OrderedDict[tuple[str, str, str, str], _Pending] = OrderedDict()  # least recently fed first
        self.pending_bytes = 0
        self.pending_by_node: Counter[str] = Counter()
        self.pending_sets_by_node: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # messages and unfinished files dropped, by reason
        self.events: list[dict] = []  # distinct event messages in arrival order (the last MAX_KEPT)
        self.available: dict[str, str] = {}
        self.status: dict[tuple[str, str], dict] = {}
        self.problems: dict[tuple[str, str], dict] = {}  # the latest camera problem message of each camera
        self.stats: dict[str, dict] = {}
        self.files_ok: list[tuple[str, str, str]] = []
        self.files_bad: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        # A fixed id and a persistent session: the broker keeps messages for us while we are away.
        self.client = make_client(self.cfg, client_id or f"edge-listen-{config.node.id}", clean_session=False)
        self.reconnect = Reconnect(self.client, self.cfg)  # alerts wait while the center is away too
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            connect_failed(client, f"broker refused the listener: {reason_code}")
            return
        self.reconnect.connected()
        p = self.prefix
        for topic in (
            f"{p}/+/available",
            f"{p}/+/+/status",
            f"{p}/+/cameras/+/problem",
            f"{p}/+/+/detect/state",
            f"{p}/+/events",
            f"{p}/+/events/+/snapshot",
            f"{p}/+/events/+/clip",
            f"{p}/+/events/+/original",
            f"{p}/+/stats",
        ):
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if self.connected.is_set():
            log.warning("listener disconnected (%s); the broker keeps messages for our session", reason_code)
        self.connected.clear()

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix:
            return
        node, rest = parts[1], parts[2:]
        try:
            with self.lock:
                self._expire(time.monotonic())
                if not valid_id(node):
                    self._drop("bad topic", msg.topic)
                    return
                self._dispatch(node, rest, msg.payload, msg.topic)
        except Exception:
            log.exception("could not handle a message on %s", printable(msg.topic))

    def _dispatch(self, node: str, rest: list[str], payload: bytes, topic: str) -> None:
        if rest == ["available"]:
            if payload not in (b"online", b"offline"):
                self._drop("bad available", topic)
                return
            self.available[node] = payload.decode()
            self.on_line(printable(f"NODE {node} {payload.decode()}"))
        elif rest == ["stats"]:
            body = self._json(payload, topic, "bad stats")
            if body is not None:
                self.stats[node] = body
        elif len(rest) == 2 and rest[1] == "status":
            if not valid_id(rest[0]):
                self._drop("bad topic", topic)
                return
            cameras = sum(k[0] == node for k in self.status)
            if (node, rest[0]) not in self.status and cameras >= MAX_CAMERAS_PER_NODE:
                self._drop("too many cameras", topic)
                return
            body = self._json(payload, topic, "bad status")
            if body is not None:
                self.status[(node, rest[0])] = body
        elif len(rest) == 3 and rest[0] == "cameras" and rest[2] == "problem":
            self._problem(node, rest[1], payload, topic)
        elif rest == ["events"]:
            self._event(node, payload, topic)
        elif len(rest) == 3 and rest[0] == "events" and rest[2] in ("snapshot", "clip", "original"):
            if not valid_id(rest[1]):
                self._drop("bad topic", topic)
            elif rest[2] == "snapshot":
                self._snapshot(node, rest[1], payload, topic)
            else:
                self._chunk(node, rest[1], rest[2], payload, topic)

    # -- what is kept --------------------------------------------------------------------------------------
    def _event(self, node: str, payload: bytes, topic: str) -> None:
        body = self._json(payload, topic, "bad event", MAX_EVENT_BYTES)
        if body is None:
            return
        kind = body.get("type")
        if (
            kind not in EVENT_TYPES
            or not valid_id(body.get("id"))
            or not valid_id(body.get("msg_id"))
            or body.get("node") != node  # the node the topic (so the broker's ACL) vouches for
        ):
            self._drop("bad event", topic)
            return
        if body["msg_id"] in self.seen:
            return  # delivered again after a reconnect: QoS 1 is at least once
        folder = self._folder(node, body["id"])
        self._remember(body["msg_id"])
        self._keep(self.events, body)
        self._write(folder, f"event-{kind}.json", json.dumps(body, indent=1, ensure_ascii=False).encode())
        line = self._alert_line(node, kind, body)
        if line:
            self.on_line(line)

    def _problem(self, node: str, camera: str, payload: bytes, topic: str) -> None:
        """A camera problem raised or cleared: kept as the camera's latest, written and printed once."""
        key = (node, camera)
        if payload == b"":  # the node's camera started afresh: nothing is raised now
            self.problems.pop(key, None)
            return
        if not valid_id(camera):
            self._drop("bad topic", topic)
            return
        if key not in self.problems and sum(k[0] == node for k in self.problems) >= MAX_CAMERAS_PER_NODE:
            self._drop("too many cameras", topic)
            return
        body = self._json(payload, topic, "bad camera problem")
        msg = parse_problem(body, node, camera) if body is not None else None
        if msg is None:
            self._drop("bad camera problem", topic)
            return
        self.problems[key] = body
        if msg.msg_id in self.seen:
            return  # the retained copy again, or a QoS 1 resend
        self._remember(msg.msg_id)
        folder = self._folder(node, msg.id)
        self._write(folder, f"problem-{msg.state}.json", json.dumps(body, indent=1, ensure_ascii=False).encode())
        self.on_line(printable(f"CAMERA {msg.problem} {msg.state} {node}/{camera}: {msg.reason} (id {msg.id})"))

    def _alert_line(self, node: str, kind: str, body: dict) -> str | None:
        """The alert line, the node named; a line with what there is when fields are missing or malformed."""
        camera = body.get("camera")
        where = f"{node}/{camera}" if isinstance(camera, str) else node
        try:
            line = announcement(kind, {**body, "camera": where})
        except (KeyError, TypeError, ValueError, AttributeError):
            level = body.get("level")
            level = level.upper() if isinstance(level, str) else "?"
            raised = "level raised, " if kind == EventType.UPDATE else ""
            line = f"ALERT {level} {where}: object, {raised}details missing or malformed (id {body['id']})"
        return printable(line) if line else None

    def _snapshot(self, node: str, event_id: str, payload: bytes, topic: str) -> None:
        if len(payload) > MAX_SNAPSHOT_BYTES or not payload.startswith(b"\xff\xd8\xff"):  # a JPEG, not too big
            self._drop("bad snapshot", topic)
            return
        self._write(self._folder(node, event_id), "snapshot.jpg", payload)

    def _chunk(self, node: str, event_id: str, file: str, payload: bytes, topic: str) -> None:
        if len(payload) > len(CHUNK_MAGIC) + MAX_CHUNK_HEADER + 1 + MAX_CHUNK_DATA:
            self._drop("oversized", topic)
            return
        try:
            head, data = parse_chunk(payload)
        except ValueError:  # not a chunk, or its header is no JSON, too long or nested too deep
            head, data = None, b""
        if not chunk_ok(head, node, event_id, file, payload, data):
            self._drop("bad chunk", topic)
            return
        count, size, index = head["count"], head["bytes"], head["index"]
        key = (node, event_id, file, head["sha256"])
        p = self.pending.get(key)
        if p is None:
            p = self.pending[key] = _Pending(node, count, size, time.monotonic())
            self.pending_sets_by_node[node] += 1
        elif (p.count, p.size) != (count, size):
            self._drop("bad chunk", topic)  # the same file cannot change its chunk count or size
            return
        old = p.parts.get(index)
        if old is not None:  # a duplicate chunk replaces itself
            p.data_bytes -= len(old)
            self._hold(p, -(len(old) + CHUNK_OVERHEAD))
        p.parts[index] = data
        p.data_bytes += len(data)
        self._hold(p, len(data) + CHUNK_OVERHEAD)
        p.last = time.monotonic()
        self.pending.move_to_end(key)
        if p.data_bytes > size:
            self._discard(key, "bad chunk")  # more bytes than the file has
            return
        if len(p.parts) == count:
            self._complete(key)
        else:
            self._bound(node)

    def _complete(self, key: tuple[str, str, str, str]) -> None:
        node, event_id, file, digest = key
        p = self.pending[key]
        blob = b"".join(p.parts[i] for i in range(p.count))
        self._discard(key, None)
        ok = len(blob) == p.size and hashlib.sha256(blob).hexdigest() == digest
        name = FILE_NAMES[file] or "original" + clip_extension(blob)
        if ok:
            self._write(self._folder(node, event_id), name, blob)
            self._keep(self.files_ok, (node, event_id, file))
            self.on_line(printable(f"FILE {node}/{event_id}/{name}: {len(blob)} bytes, SHA-256 verified"))
        else:
            self._keep(self.files_bad, (node, event_id, file))
            self.on_line(printable(f"FILE {node}/{event_id}/{name}: SHA-256 MISMATCH, discarded"))

    # -- bounds --------------------------------------------------------------------------------------------
    def _hold(self, p: _Pending, n: int) -> None:
        p.held += n
        self.pending_bytes += n
        self.pending_by_node[p.node] += n

    def _discard(self, key, reason: str | None) -> None:
        p = self.pending.pop(key)
        self._hold(p, -p.held)
        if not self.pending_by_node[p.node]:
            del self.pending_by_node[p.node]
        self.pending_sets_by_node[p.node] -= 1
        if not self.pending_sets_by_node[p.node]:
            del self.pending_sets_by_node[p.node]
        if reason:
            node, event_id, file, _ = key
            self._drop(reason, f"{node}/{event_id}/{file}", f"{len(p.parts)} of {p.count} chunks")

    def _bound(self, node: str) -> None:
        """Drop the unfinished files that waited longest until the node's and the total bounds hold."""
        while (
            self.pending_by_node[node] > self.max_pending_bytes_per_node
            or self.pending_sets_by_node[node] > self.max_pending_sets_per_node
        ):
            self._discard(next(k for k, p in self.pending.items() if p.node == node), "pending evicted")
        while self.pending and (
            self.pending_bytes > self.max_pending_bytes or len(self.pending) > self.max_pending_sets
        ):
            self._discard(next(iter(self.pending)), "pending evicted")

    def _expire(self, now: float) -> None:
        """Drop unfinished files that got no chunk for pending_idle_s (least recently fed come first)."""
        while self.pending:
            key, p = next(iter(self.pending.items()))
            if now - p.last < self.pending_idle_s:
                break
            self._discard(key, "pending expired")

    def _drop(self, reason: str, where: str, detail: str = "") -> None:
        """Count a dropped message or file; log the 1st, 2nd, 4th, 8th, ... of a reason (a flood stays short)."""
        self.dropped[reason] += 1
        n = self.dropped[reason]
        if n & (n - 1) == 0:
            log.warning("dropped (%s) %s %s [%d so far]", reason, printable(where, 200), detail, n)

    def _remember(self, msg_id: str, persist: bool = True) -> None:
        self.seen.add(msg_id)
        self.seen_order.append(msg_id)
        if len(self.seen_order) > MAX_SEEN:
            self.seen.discard(self.seen_order.popleft())
        if not persist:
            return
        with self.seen_path.open("a") as f:
            f.write(msg_id + "\n")
        self._seen_lines += 1
        if self._seen_lines > 2 * MAX_SEEN:  # the file keeps what memory keeps
            tmp = self.seen_path.with_name(self.seen_path.name + ".part")
            tmp.write_text("".join(m + "\n" for m in self.seen_order))
            os.replace(tmp, self.seen_path)
            self._seen_lines = len(self.seen_order)

    @staticmethod
    def _keep(items: list, item) -> None:
        items.append(item)
        if len(items) > MAX_KEPT:
            del items[: len(items) - MAX_KEPT]

    # -- paths ---------------------------------------------------------------------------------------------
    def _json(self, payload: bytes, topic: str, reason: str, limit: int = MAX_JSON_BYTES) -> dict | None:
        try:
            body = json.loads(payload) if len(payload) <= limit else None
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond the parser
            body = None
        if not isinstance(body, dict):
            self._drop(reason, topic)
            return None
        return body

    def _folder(self, node: str, event_id: str) -> Path:
        """out/<node>/<event id>, created; refused unless both are valid ids and it resolves to just that."""
        if not (valid_id(node) and valid_id(event_id)):
            raise ValueError(f"bad node or event id {printable(node, 140)!r}/{printable(event_id, 140)!r}")
        folder = self.out / node / event_id
        expected = self.root / node / event_id
        if folder.resolve() != expected:  # a link in the way, before anything is created through it
            raise ValueError(f"{printable(str(folder))} is not inside {self.root}")
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve() != expected:
            raise ValueError(f"{printable(str(folder))} is not inside {self.root}")
        return folder

    def _write(self, folder: Path, name: str, data: bytes) -> None:
        """Write folder/name through a temporary file and a rename (a link in its place is replaced, not
        followed), after checking the path resolves to a file right in `folder` under the output folder."""
        target = folder / name
        resolved = target.resolve()
        if "/" in name or resolved.parent != folder.resolve() or not resolved.is_relative_to(self.root):
            raise ValueError(f"{printable(str(target))} is not inside {self.root}")
        tmp = folder / f".{name}.part"
        tmp.unlink(missing_ok=True)
        with open(tmp, "xb") as f:  # exclusive: never through something already there
            f.write(data)
        os.replace(tmp, target)
