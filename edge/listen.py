"""`edge listen`: the reference receiver — what the community center runs, and what the tests use.

Subscribes to every node under the prefix, drops duplicates (QoS 1 delivers at least once), reassembles
clips and checks their SHA-256, writes each event with its files to a folder, prints one line per alert.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from edge.config import EdgeConfig
from edge.events import announcement
from edge.publish.mqtt import Reconnect, make_client, parse_chunk

log = logging.getLogger(__name__)


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
        self.seen_path = out / "seen_msg_ids.txt"
        self.seen = set(self.seen_path.read_text().split()) if self.seen_path.exists() else set()
        self.chunks: dict[tuple[str, str, str], dict[int, bytes]] = {}
        self.events: list[dict] = []  # every distinct event message, in arrival order
        self.available: dict[str, str] = {}
        self.status: dict[tuple[str, str], dict] = {}
        self.stats: dict[str, dict] = {}
        self.files_ok: list[tuple[str, str, str]] = []
        self.files_bad: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        # A fixed id and a persistent session: the broker keeps messages for us while we are away.
        self.client = make_client(self.cfg, client_id or f"edge-listen-{config.node.id}", clean_session=False)
        self.reconnect = Reconnect(self.client, self.cfg)  # alerts wait while the center is away too
        self.client.on_connect = self._on_connect
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
            log.warning("broker refused the listener: %s", reason_code)
            return
        self.reconnect.connected()
        p = self.prefix
        for topic in (
            f"{p}/+/available",
            f"{p}/+/+/status",
            f"{p}/+/+/detect/state",
            f"{p}/+/events",
            f"{p}/+/events/+/snapshot",
            f"{p}/+/events/+/clip",
            f"{p}/+/events/+/original",
            f"{p}/+/stats",
        ):
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix:
            return
        node, rest = parts[1], parts[2:]
        try:
            with self.lock:
                self._dispatch(node, rest, msg.payload)
        except Exception:
            log.exception("could not handle a message on %s", msg.topic)

    def _dispatch(self, node: str, rest: list[str], payload: bytes) -> None:
        if rest == ["available"]:
            self.available[node] = payload.decode()
            self.on_line(f"NODE {node} {payload.decode()}")
        elif rest == ["stats"]:
            self.stats[node] = json.loads(payload)
        elif len(rest) == 2 and rest[1] == "status":
            self.status[(node, rest[0])] = json.loads(payload)
        elif rest == ["events"]:
            self._event(node, json.loads(payload))
        elif len(rest) == 3 and rest[0] == "events" and rest[2] == "snapshot":
            self._folder(node, rest[1]).joinpath("snapshot.jpg").write_bytes(payload)
        elif len(rest) == 3 and rest[0] == "events" and rest[2] in ("clip", "original"):
            self._chunk(node, payload)

    def _event(self, node: str, body: dict) -> None:
        if body["msg_id"] in self.seen:
            return  # delivered again after a reconnect: QoS 1 is at least once
        self.seen.add(body["msg_id"])
        with self.seen_path.open("a") as f:
            f.write(body["msg_id"] + "\n")
        self.events.append(body)
        folder = self._folder(node, body["id"])
        (folder / f"event-{body['type']}.json").write_text(json.dumps(body, indent=1, ensure_ascii=False))
        line = announcement(body["type"], body)
        if line:
            self.on_line(line)

    def _chunk(self, node: str, payload: bytes) -> None:
        head, data = parse_chunk(payload)
        key = (node, head["event"], head["file"])
        parts = self.chunks.setdefault(key, {})
        parts[head["index"]] = data  # a duplicate chunk just overwrites itself
        if len(parts) < head["count"]:
            return
        blob = b"".join(parts[i] for i in range(head["count"]))
        del self.chunks[key]
        ok = len(blob) == head["bytes"] and hashlib.sha256(blob).hexdigest() == head["sha256"]
        name = {"clip": "clip.mp4", "original": "original" + (".ts" if blob[:1] == b"G" else ".mp4")}[head["file"]]
        if ok:
            self._folder(node, head["event"]).joinpath(name).write_bytes(blob)
            self.files_ok.append(key)
            self.on_line(f"FILE {node}/{head['event']}/{name}: {len(blob)} bytes, SHA-256 verified")
        else:
            self.files_bad.append(key)
            self.on_line(f"FILE {node}/{head['event']}/{name}: SHA-256 MISMATCH, discarded")

    def _folder(self, node: str, event_id: str) -> Path:
        if "/" in event_id or event_id.startswith("."):
            raise ValueError(f"bad event id {event_id!r}")
        folder = self.out / node / event_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder
