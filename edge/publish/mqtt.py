"""Alerts, status and clips over MQTT, through the outbox so nothing is lost while the broker is away.

Topics, under <prefix>/<node>/ (see README, "MQTT"):
  available                     online | offline, retained, QoS 1; offline is the last will
  <camera>/status               retained JSON
  <camera>/detect/set           command ON | OFF, answered on the retained <camera>/detect/state
  events                        QoS 1 JSON: type new | update | end | clip_ready | original_ready
  events/<id>/snapshot          the trajectory still, JPEG
  events/<id>/clip              the annotated clip in chunks; events/<id>/original on request
  events/<id>/manifest          the signed manifest.json of the event's evidence (hashes of every file)
  events/<id>/original/get      command: send the original evidence clip
  events/<id>/hold              command ON | OFF: keep the event's evidence past retention (a case under
                                investigation); answered on the retained events/<id>/hold/state
  storage                       retained JSON: the storage level changed (ok | warning | full)
  stats                         periodic node health
  cameras/<camera>/problem      QoS 1, retained JSON: a camera problem raised or cleared, with every problem
                                still active (docs/schemas/camera-problem.schema.json); emptied at start
  feedback                      the center's verdicts on this node's alerts (kept in storage/feedback/)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import re
import sqlite3
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.config import EdgeConfig, MqttConfig
from edge.publish.evidence import EvidenceFiles, EvidenceStage, stored_event
from edge.publish.feedback import FeedbackStore, parse_feedback
from edge.publish.manifest import iso
from edge.publish.outbox import Kind, NewMessage, Outbox

log = logging.getLogger(__name__)
_PAHO_LOG = logging.getLogger(f"{__name__}.paho")  # paho's own messages: its errors, not its chatter
_PAHO_LOG.setLevel(logging.WARNING)
# While the broker is away paho's loop logs "Client is not connected. Socket: None" at ERROR between attempts,
# several times a second, naming neither the broker nor why: ConnectFailures says both, now and then.
_PAHO_LOG.addFilter(lambda record: not str(record.msg).startswith("Client is not connected"))
CONNECT_FAIL_LOG_S = 300.0  # a broker still away is said again this often (the first failure at once)
MAX_HOLD_PAYLOAD = 16  # ON or OFF with some whitespace; anything longer is not a hold command
CHUNK_MAGIC = b"EDGECHUNK1\n"  # a chunk is: magic, one JSON header line, then the bytes


class EventType(StrEnum):
    """The `type` of a message on `events` (docs/schemas/event.schema.json); the values are the wire format."""

    NEW = "new"  # the fall is decided: the alert
    UPDATE = "update"  # its level was raised
    END = "end"  # the object is gone
    CLIP_READY = "clip_ready"  # snapshot and annotated clip were queued
    ORIGINAL_READY = "original_ready"  # the original clip was queued, on request


class Topics:
    """The topic names of one node."""

    def __init__(self, prefix: str, node: str):
        self.base = f"{prefix}/{node}"

    available = property(lambda self: f"{self.base}/available")
    events = property(lambda self: f"{self.base}/events")
    stats = property(lambda self: f"{self.base}/stats")
    feedback = property(lambda self: f"{self.base}/feedback")
    storage = property(lambda self: f"{self.base}/storage")

    def status(self, camera: str) -> str:
        return f"{self.base}/{camera}/status"

    def problem(self, camera: str) -> str:
        return f"{self.base}/cameras/{camera}/problem"

    def detect_set(self, camera: str) -> str:
        return f"{self.base}/{camera}/detect/set"

    def detect_state(self, camera: str) -> str:
        return f"{self.base}/{camera}/detect/state"

    def files(self, event_id: str, name: str) -> str:
        return f"{self.base}/events/{event_id}/{name}"


def logged(callback: Callable) -> Callable:
    """A paho callback that logs its errors, with their traceback, instead of raising them.

    make_client's clients already survive a callback that raises (paho logs one line); the publisher's
    callbacks touch the outbox and the node's state, whose failures are worth their whole traceback.
    """

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except Exception:
            log.exception("MQTT callback %s failed", callback.__name__)

    return guarded


def make_client(
    cfg: MqttConfig, client_id: str, will: tuple[str, bytes] | None = None, clean_session: bool = True
) -> mqtt.Client:
    """A paho client with the config's TLS, credentials and last will (the password is never logged)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
    )
    if cfg.tls is not None:
        client.tls_set(
            ca_certs=str(cfg.tls.ca_file),
            certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
            keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.secret())
    if will:
        client.will_set(will[0], will[1], qos=1, retain=True)
    # Without jitter; a Reconnect attached to the client replaces this with the jittered schedule.
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
    # paho 2 re-raises a callback's exception in its network thread, which then dies: nothing is sent or
    # received again and nothing reconnects. paho logs it instead (to _PAHO_LOG) and carries on.
    client.suppress_exceptions = True
    client.enable_logger(_PAHO_LOG)
    client.on_connect_fail = ConnectFailures(f"{cfg.host}:{cfg.port}")
    return client


def connect_failed(client: mqtt.Client, why: str) -> None:
    """A failed attempt paho does not raise (the broker refused the login), logged as make_client's own are."""
    client.on_connect_fail.failed(why)


class ConnectFailures:
    """paho's on_connect_fail: one WARNING naming the broker and the reason at the first failed attempt, at a
    new reason, and every CONNECT_FAIL_LOG_S while it stays away (attempts come every few seconds)."""

    def __init__(self, broker: str):
        self.broker = broker
        self.attempts = 0
        self._said: tuple[str, float] | None = None

    def __call__(self, client, userdata) -> None:
        # paho calls this inside its `except OSError` around the attempt: the exception is the reason.
        exc = sys.exc_info()[1]
        self.failed(f"{type(exc).__name__}: {exc}" if exc else "no reason given")

    def failed(self, why: str) -> None:
        self.attempts += 1
        now = time.monotonic()
        if self._said is None or self._said[0] != why or now - self._said[1] >= CONNECT_FAIL_LOG_S:
            what = (self.broker, why, self.attempts)
            log.warning("MQTT broker %s cannot be reached (%s), retrying (%d tries)", *what)
            self._said = (why, now)


class Backoff:
    """Reconnect delays: the first within `first` s, doubling up to `cap`, each drawn from the upper half of
    its step (jitter: nodes that lost the same broker do not all come back in the same instant)."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return base * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class Reconnect:
    """Paces paho's own reconnect loop (the loop_start thread) with a jittered Backoff.

    paho waits before each reconnect attempt, and reconnect_delay_set starts its schedule afresh at min_delay.
    So just before every attempt (on_pre_connect) min and max are both set to the next jittered delay: the wait
    should this attempt fail, or this connection later drop. Call `connected()` from on_connect on success:
    the schedule starts again from `mqtt.reconnect_min_s`. paho's threading is left exactly as it is.
    """

    def __init__(self, client: mqtt.Client, cfg: MqttConfig, rng: random.Random | None = None):
        self.client = client
        self.backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, rng)
        client.on_pre_connect = self._before_attempt

    def connected(self) -> None:
        self.backoff.reset()
        self._arm()

    @logged
    def _before_attempt(self, client, userdata) -> None:
        self._arm()

    def _arm(self) -> None:
        delay = self.backoff.next_delay()
        self.client.reconnect_delay_set(delay, delay)


def chunk_payloads(data: bytes, header: dict, chunk_bytes: int, digest: str | None = None) -> list[bytes]:
    """Split a file into self-describing chunks: each carries index, count and the whole file's SHA-256."""
    digest = digest or hashlib.sha256(data).hexdigest()
    count = max(1, -(-len(data) // chunk_bytes))
    out = []
    for i in range(count):
        head = {**header, "index": i, "count": count, "sha256": digest, "bytes": len(data)}
        out.append(CHUNK_MAGIC + json.dumps(head).encode() + b"\n" + data[i * chunk_bytes : (i + 1) * chunk_bytes])
    return out


# A file's chunks are queued this many bytes to a transaction: one sync to disk for many chunks, yet an alert
# never waits behind a whole original (up to 200 MiB) on a slow SD card, and the SQLite log stays small.
FILE_BATCH_BYTES = 4 << 20
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML: a USB camera's MJPEG original (original.mkv)


def clip_extension(head: bytes) -> str:
    """The extension a received clip is stored under, from its first bytes: the original is MPEG-TS (a TS packet
    starts with G) or Matroska, the annotated copy MP4."""
    if head[:1] == b"G":
        return ".ts"
    return ".mkv" if head.startswith(_MATROSKA_MAGIC) else ".mp4"


MAX_CHUNK_HEADER = 1024  # the header line a node writes is about 250 bytes


def parse_chunk(payload: bytes) -> tuple[dict, bytes]:
    """(header, data) of a chunk; raises ValueError for anything else (a receiver's input is hostile)."""
    if not payload.startswith(CHUNK_MAGIC):
        raise ValueError("not a chunk")
    # The header line is looked for only where it may be: parsing a megabyte "header" costs time, and one
    # nested too deep raises RecursionError, a traceback per message instead of a counted drop.
    end = payload.find(b"\n", len(CHUNK_MAGIC), len(CHUNK_MAGIC) + MAX_CHUNK_HEADER + 1)
    if end < 0:
        raise ValueError(f"no chunk header line within {MAX_CHUNK_HEADER} bytes")
    try:
        return json.loads(payload[len(CHUNK_MAGIC) : end]), payload[end + 1 :]
    except RecursionError:
        raise ValueError("chunk header nested too deep") from None


# Node ids, event ids and msg_ids as they may appear in a topic level, a JSON field or a path: taken from the
# network, one is used only if it matches this whole (fullmatch, so no trailing newline) and holds no "..".
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def valid_id(value) -> bool:
    """True for a string safe as a topic level, a file name and a printed word (see ID_PATTERN)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None and ".." not in value


MAX_ORIGINALS_WANTED = 64  # a few events at once are being recorded; the bound keeps hostile requests small


class MqttPublisher:
    """Puts everything the node reports into the outbox, and a sender thread drains it to the broker."""

    def __init__(
        self,
        config: EdgeConfig,
        outbox: Outbox,
        storage: Path,
        on_detect_set: Callable[[str, bool], None] | None = None,
        on_hold: Callable[[str, bool], bool] | None = None,
    ):
        self.cfg = config.mqtt
        self.node = config.node.id
        self.cameras = list(config.cameras)
        self.topics = Topics(self.cfg.topic_prefix, self.node)
        self.outbox = outbox
        self.storage = storage
        self.feedback = FeedbackStore(storage)
        self.on_detect_set = on_detect_set
        self.on_hold = on_hold
        self.last_ack = time.time()  # when the broker last acknowledged a message (/healthz: the outbox drains)
        self.down_since: float | None = time.time()  # when the broker connection was lost; None while connected
        # A persistent session: the broker keeps the center's commands (a hold on a crime's evidence, a request
        # for an original) while the node is away, restarting or off line, and acknowledges them to the center
        # either way. With a clean session they were thrown away, and the evidence deleted after evidence_days.
        will = (self.topics.available, b"offline")
        self.client = make_client(self.cfg, self.cfg.client_id or self.node, will, clean_session=False)
        self.reconnect = Reconnect(self.client, self.cfg)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.connected = threading.Event()
        self.commands_ready = threading.Event()  # the broker acknowledged our command subscriptions
        self._pending_subs: set[int] = set()
        # The sender thread's own: (paho's handle, outbox seq, connection) of each message sent and not yet
        # acknowledged. The handle, not the mid, says whether *this* message was acknowledged: paho's 16-bit mids
        # come round again, and an acknowledgement can come back before publish() has returned the mid.
        self._inflight: list[tuple[mqtt.MQTTMessageInfo, int, int]] = []
        self._acked: set[int] = set()  # acknowledged, but not yet removed from the outbox (disk full)
        self._ack_failing = False
        self._connection = 0  # counts connects and disconnects: what was in flight on an older one goes again
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self.last_error: str | None = None
        # Originals asked for while still being recorded (a dispatcher asks as the alert comes in): sent when
        # saved. Asked from paho's thread, saved on a camera's thread.
        self._originals_wanted: set[str] = set()
        self._wanted_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._sender.start()

    def stop(self) -> None:
        """Say offline, then disconnect (what is not acknowledged stays in the outbox)."""
        self._stop.set()
        if self.connected.is_set():
            try:
                self.client.publish(self.topics.available, b"offline", qos=1, retain=True).wait_for_publish(2)
            except (RuntimeError, ValueError):  # the connection went as we stopped: the last will says offline
                log.info("MQTT: offline not said, the connection is gone; the broker's last will says it")
        self.client.disconnect()
        self.client.loop_stop()
        self._sender.join(5)
        if not self._sender.is_alive():
            self._settle()  # acknowledgements that came after the sender's last round: not sent again next start

    # -- what the node reports -----------------------------------------------------------------------------
    def on_update(self, kind: str, record: dict) -> None:
        kind = EventType(kind)  # new | update | end; anything else would break the event schema
        payload = self._event_payload(kind, record)
        self.outbox.put(Kind.ALERT if kind == EventType.NEW else Kind.EVENT, self.topics.events, payload)

    def on_evidence(self, record: dict, files: EvidenceFiles) -> None:
        with self._wanted_lock:
            wanted = record["id"] in self._originals_wanted
            self._originals_wanted.discard(record["id"])
        if wanted:
            self.send_original(record["id"])
        if files.stage is not EvidenceStage.COMPLETE:
            return  # the center hears once, when the still and clip exist (or are known not to)
        eid = record["id"]
        if files.still:
            still = (files.folder / files.still).read_bytes()
            self.outbox.put(Kind.SNAPSHOT, self.topics.files(eid, "snapshot"), still)
        clip_bytes = clip_sha = None
        if files.annotated:
            clip_bytes, clip_sha = self._send_file(eid, "clip", files.folder / files.annotated)
        # The signed manifest, as written: the center checks the files it receives against it, and against the
        # node's registered key, instead of taking the node's word in the event message.
        manifest = (files.folder / files.manifest).read_bytes()
        self.outbox.put(Kind.SNAPSHOT, self.topics.files(eid, "manifest"), manifest)
        extra = {
            "clip_sha256": clip_sha,
            "clip_bytes": clip_bytes,
            "original_bytes": (files.folder / files.original).stat().st_size,
            "snapshot_bytes": (files.folder / files.still).stat().st_size if files.still else None,
        }
        self.outbox.put(Kind.EVENT, self.topics.events, self._event_payload(EventType.CLIP_READY, record, extra))

    def on_status(self, camera: str, status) -> None:
        body = json.dumps({"v": 1, "camera": camera, **status.to_dict()}).encode()
        topic = self.topics.status(camera)
        # QoS 0, retained: never queued by the broker for an absent center (where it would crowd out alerts);
        # the center reads the latest copy when it subscribes again.
        self.outbox.put(Kind.STATUS, topic, body, qos=0, retain=True, coalesce_key=topic)

    def on_problem(self, record: dict) -> None:
        """A camera problem raised or cleared: QoS 1 through the outbox (never dropped), retained as the latest."""
        body = {**record, "type": "camera_problem", "msg_id": uuid.uuid4().hex, "queued_utc": _now_iso()}
        topic = self.topics.problem(record["camera"])
        self.outbox.put(Kind.EVENT, topic, json.dumps(body, ensure_ascii=False).encode(), retain=True)

    def forget_problems(self, camera: str) -> None:
        """Empty a camera's retained problem at start: this run raises again what is still wrong."""
        self.outbox.put(Kind.EVENT, self.topics.problem(camera), b"", retain=True)

    def publish_stats(self, stats: dict) -> None:
        body = json.dumps(stats).encode()
        self.outbox.put(Kind.STATS, self.topics.stats, body, qos=0, retain=True, coalesce_key="stats")  # as status

    def send_original(self, event_id: str) -> bool:
        """Queue the original evidence clip of an event, or once it is saved when it is still being recorded;
        False when there is no such event here.

        The id comes from a command topic, that is from the network: only a valid id naming a folder strictly
        inside storage/events (itself, not a link out of it) is served, and only a regular file in it.
        """
        if not valid_id(event_id):
            return False
        folder = stored_event(self.storage / "events", event_id)
        if folder is None:
            return False
        originals = sorted(p for p in folder.glob("original.*") if p.is_file() and not p.is_symlink())
        if not originals:
            return self._want_original(event_id)
        if self.outbox.waiting(self.topics.files(event_id, "original")):
            # Asked again (a second click, a repeated QoS 1 command) while its chunks still wait: a clip of tens of
            # MB queued twice would only crowd the outbox, whose bound drops clip chunks first.
            log.info("original of %s asked for again while it is still being sent: not queued twice", event_id)
            return True
        size, digest = self._send_file(event_id, "original", originals[0])
        rec = {"id": event_id, "node": self.node}
        extra = {"original_bytes": size, "original_sha256": digest}
        self.outbox.put(Kind.EVENT, self.topics.events, self._event_payload(EventType.ORIGINAL_READY, rec, extra))
        return True

    def _want_original(self, event_id: str) -> bool:
        """Remember a request for an original still being recorded (its folder exists, its clip is not saved
        yet); the oldest requests give way past MAX_ORIGINALS_WANTED (the center may ask again)."""
        with self._wanted_lock:
            if len(self._originals_wanted) >= MAX_ORIGINALS_WANTED:
                self._originals_wanted.discard(min(self._originals_wanted))  # ids start with their UTC time
            self._originals_wanted.add(event_id)
        log.info("original of %s asked for while it is being recorded: sent once it is saved", event_id)
        return True

    # -- internals -----------------------------------------------------------------------------------------
    def _event_payload(self, kind: EventType, record: dict, extra: dict | None = None) -> bytes:
        body = {
            **record,
            "v": 1,
            "type": kind,
            "node": self.node,
            "msg_id": uuid.uuid4().hex,
            "queued_utc": _now_iso(),
            **(extra or {}),
        }
        traj = body.get("trajectory")
        if traj and len(traj) > self.cfg.trajectory_points:
            step = -(-len(traj) // self.cfg.trajectory_points)
            body["trajectory"] = traj[::step] + ([traj[-1]] if (len(traj) - 1) % step else [])
            body["trajectory_points_total"] = len(traj)
        return json.dumps(body, ensure_ascii=False).encode()

    def _send_file(self, event_id: str, name: str, path: Path) -> tuple[int, str]:
        """Queue a file in chunks; returns its size and SHA-256 (read and hashed once)."""
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        header = {"event": event_id, "node": self.node, "file": name}
        topic = self.topics.files(event_id, name)
        chunks = chunk_payloads(data, header, self.cfg.chunk_kib * 1024, digest)
        if not self.outbox.put_file(topic, chunks, FILE_BATCH_BYTES):
            log.warning("%s: %s (%d bytes) dropped by the outbox's size bound", event_id, name, len(data))
        return len(data), digest

    @logged
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused: {reason_code}"
            connect_failed(client, self.last_error)
            return
        self.reconnect.connected()
        self.last_error = None
        client.publish(self.topics.available, b"online", qos=1, retain=True)
        self.commands_ready.clear()
        topics = [(self.topics.detect_set(cam), 1) for cam in self.cameras]
        _, mid = client.subscribe(
            [
                *topics,
                (self.topics.files("+", "original/get"), 1),
                (self.topics.files("+", "hold"), 1),
                (self.topics.feedback, 1),
            ]
        )
        self._pending_subs = {mid}
        self._connection += 1
        self.down_since = None
        self.connected.set()
        log.info("MQTT connected to %s:%s", self.cfg.host, self.cfg.port)

    @logged
    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.commands_ready.set()

    @logged
    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if self.connected.is_set():
            log.warning("MQTT disconnected (%s); keeping messages in the outbox", reason_code)
            self.down_since = time.time()
        self.connected.clear()
        self.commands_ready.clear()
        self._connection += 1  # unacknowledged messages stay in the outbox and go again

    @logged
    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        self.last_ack = time.time()  # the sender thread removes the message from the outbox (_settle)

    @logged
    def _on_message(self, client, userdata, msg) -> None:
        if not msg.topic.startswith(self.topics.base + "/"):
            return
        if msg.retain:
            # A command is for now. One published with the retain flag comes again from the broker's store at
            # every connect: detect/set OFF would switch detection off after each outage, whatever was said
            # since, and original/get queue the whole clip again. Sent live, it was carried out then.
            log.warning("ignoring a retained command on %r: a command is not taken from the store", msg.topic[:99])
            return
        parts = msg.topic[len(self.topics.base) + 1 :].split("/")
        try:
            if len(parts) == 3 and parts[1:] == ["detect", "set"] and parts[0] in self.cameras:
                self._detect_set(parts[0], msg.payload.decode(errors="replace").strip().upper())
            elif len(parts) == 4 and parts[0] == "events" and parts[2:] == ["original", "get"]:
                if not valid_id(parts[1]):  # events//original/get, events/../original/get, ...
                    log.warning("ignoring a request for the original of %r: not an event id", parts[1][:200])
                elif not self.send_original(parts[1]):
                    log.warning("original requested for unknown event %s", parts[1])
            elif len(parts) == 3 and parts[0] == "events" and parts[2] == "hold":
                self._hold(parts[1], msg.payload)
            elif parts == ["feedback"]:
                self._feedback(msg.payload)
        except Exception:
            log.exception("command on %s failed", msg.topic)

    def _feedback(self, payload: bytes) -> None:
        try:
            fb = parse_feedback(payload)
        except ValueError as exc:
            log.warning("ignoring feedback from the center: %s", exc)
            return
        if self.feedback.keep(fb):
            log.info("event %s: on-site verdict %s (%s, by %s)", fb.id, fb.verdict, fb.state, fb.by)
        else:
            log.info("feedback %s for event %s not kept: already kept, or no such event here", fb.msg_id, fb.id)

    def _hold(self, event_id: str, payload: bytes) -> None:
        """events/<id>/hold from the network: a valid id of an event stored here, and ON or OFF, or nothing."""
        if not valid_id(event_id):
            log.warning("ignoring a hold for %r: not an event id", event_id[:200])
            return
        value = payload.strip().upper() if len(payload) <= MAX_HOLD_PAYLOAD else b""
        if value not in (b"ON", b"OFF"):
            log.warning("ignoring a hold for %s: expected ON or OFF, got %r", event_id, payload[:40])
            return
        if stored_event(self.storage / "events", event_id) is None:
            # Only events stored here: a flood of made-up ids must not grow the holds file.
            log.warning("ignoring a hold for unknown event %s", event_id)
            return
        if self.on_hold is None:
            return
        held = self.on_hold(event_id, value == b"ON")  # what stands now, which a broken holds file can refuse
        topic = self.topics.files(event_id, "hold/state")
        # Retention may have deleted the evidence meanwhile and emptied the answer (`forget_hold_states`): an OFF
        # queued after that would stand on the broker for ever.
        answer = b"ON" if held else b"OFF" if stored_event(self.storage / "events", event_id) is not None else b""
        self.outbox.put(Kind.COMMAND, topic, answer, retain=True, coalesce_key=topic)

    def forget_hold_states(self, event_ids: list[str]) -> None:
        """Empty the retained hold state of events whose evidence retention has deleted: the broker would keep
        each held (and later released) event's answer for ever, and hand every one to the center at each
        connect. An event never held has none; emptying it costs one small message."""
        topics = [self.topics.files(event_id, "hold/state") for event_id in event_ids if valid_id(event_id)]
        self.outbox.put_many(NewMessage(Kind.COMMAND, t, b"", retain=True, coalesce_key=t) for t in topics)

    def publish_storage(self, record: dict) -> None:
        """The storage level changed: retained, so a center subscribing later sees where it stands."""
        body = json.dumps(record).encode()
        self.outbox.put(Kind.EVENT, self.topics.storage, body, retain=True, coalesce_key="storage")

    def set_cameras(self, cameras: list[str]) -> None:
        """The cameras changed (reload): follow detect/set of the new ones, forget the removed ones (their retained
        status and problem are emptied)."""
        added = [c for c in cameras if c not in self.cameras]
        removed = [c for c in self.cameras if c not in cameras]
        self.cameras = list(cameras)
        if added:
            self.client.subscribe([(self.topics.detect_set(c), 1) for c in added])
        if removed:
            self.client.unsubscribe([self.topics.detect_set(c) for c in removed])
        self.forget_cameras(removed)

    def forget_cameras(self, cameras: list[str]) -> None:
        """Empty the retained status and problems of cameras taken out of the config (a reload)."""
        for camera in cameras:  # its retained status would say online forever
            self.outbox.put(
                Kind.STATUS,
                self.topics.status(camera),
                b"",
                qos=0,
                retain=True,
                coalesce_key=self.topics.status(camera),
            )
            # Nor would anything ever clear a problem it left raised: the center would show it for a camera
            # that is gone.
            self.forget_problems(camera)

    def _detect_set(self, camera: str, value: str) -> None:
        if value not in ("ON", "OFF"):
            log.warning("ignoring %r for %s: expected ON or OFF", value[:40], camera)
            return
        if self.on_detect_set:
            self.on_detect_set(camera, value == "ON")
        self.publish_detect_state(camera, value == "ON")

    def publish_detect_state(self, camera: str, on: bool) -> None:
        topic = self.topics.detect_state(camera)
        self.outbox.put(Kind.COMMAND, topic, b"ON" if on else b"OFF", retain=True, coalesce_key=topic)

    def _send_loop(self) -> None:
        interval = 1.0 / self.cfg.drain_rate_per_s
        while not self._stop.is_set():
            if not self.connected.wait(0.5):
                continue
            try:
                self._send_round(interval)
            except Exception:  # the outbox unreadable for now, say: its messages wait, and this thread lives on
                log.exception("MQTT sender failed; trying again in a second")
                self._stop.wait(1.0)

    def _send_round(self, interval: float) -> None:
        """Settle what the broker acknowledged, then send the next batch from the outbox."""
        self._settle()
        busy = {seq for _, seq, _ in self._inflight} | self._acked
        room = self.cfg.max_inflight - len(self._inflight)
        batch = self.outbox.next_batch(room, busy) if room > 0 else []
        if not batch:
            time.sleep(0.02)
            return
        connection = self._connection
        for msg in batch:
            if not self.connected.is_set() or self._stop.is_set():
                break
            # Events and stats only: the storage and problem messages' schemas allow no field more.
            stamped = msg.topic in (self.topics.events, self.topics.stats)
            payload = stamp_sent(msg.payload, _now_iso()) if stamped else msg.payload
            info = self.client.publish(msg.topic, payload, qos=msg.qos, retain=msg.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break  # not connected after all: the message stays in the outbox
            self._inflight.append((info, msg.seq, connection))
            time.sleep(interval)

    def _settle(self) -> None:
        """Remove from the outbox each message whose own acknowledgement came back (for QoS 0: once written);
        one still unacknowledged from an earlier connection, or lost with it, is forgotten here and sent again."""
        waiting = []
        for info, seq, connection in self._inflight:
            done = delivered(info)
            if done:
                self._acked.add(seq)
            elif done is None and connection == self._connection:
                waiting.append((info, seq, connection))
        self._inflight = waiting
        self._remove_acked()

    def _remove_acked(self) -> None:
        """Delete acknowledged messages from the outbox; on a full disk they stay, are not sent again, and the
        deletion is tried again next round (a restart in between sends them twice: QoS 1 allows that)."""
        try:
            for seq in sorted(self._acked):
                self.outbox.ack(seq)
                self._acked.discard(seq)
        except sqlite3.Error as exc:
            if not self._ack_failing:
                log.error("outbox: %d acknowledged messages not removed (%s); trying again", len(self._acked), exc)
            self._ack_failing = True
            return
        if self._ack_failing:
            log.info("outbox: acknowledged messages removed again")
        self._ack_failing = False


def stamp_sent(payload: bytes, sent_utc: str) -> bytes:
    """An event or stats message with `sent_utc`, the node's clock as it leaves; a payload that is no JSON object
    goes as it is.

    An event's `alert_utc` and `queued_utc` may be days old (the outbox waits out the network), so only the time
    it left tells the center how far the node's clock is off: a node that booted without a clock, say.
    """
    try:
        body = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(body, dict):
        return payload
    body["sent_utc"] = sent_utc
    return json.dumps(body, ensure_ascii=False).encode()


def delivered(info: mqtt.MQTTMessageInfo) -> bool | None:
    """True once the broker acknowledged this very message (QoS 0: once written), False when it was lost with
    its connection, None while it waits."""
    try:
        published = info.is_published()
    except (RuntimeError, ValueError):  # how paho says the message was lost
        return False
    if not published:
        return None
    return info.rc == mqtt.MQTT_ERR_SUCCESS  # paho sets rc before it marks a lost QoS 0 message published


def _now_iso() -> str:
    return iso(time.time())
