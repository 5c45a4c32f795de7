"""The shipped broker (configs/mosquitto/) starts as shipped, and holds what README, "The broker", promises.

Every test runs a real Mosquitto loaded from the shipped mosquitto.conf and acl; only paths and the port differ."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import yaml
from support.broker import SHIPPED, Broker, center_config
from support.servers import wait_for

from edge.config import MqttConfig, parse_config
from edge.listen import Listener
from edge.publish.mqtt import Topics, chunk_payloads

USERS = {"garden-a": "pw-a", "garden-b": "pw-b", "center": "pw-center", "monitor": "pw-monitor"}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", USERS).start()
    yield b
    b.stop()


def test_the_shipped_config_has_no_end_of_line_comments():
    # Mosquitto takes everything after the option name as its value: "password_file /x  # y" opens "/x  # y".
    for n, line in enumerate((SHIPPED / "mosquitto.conf").read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" not in line, f"mosquitto.conf:{n}: a comment after a value is part of the value: {line!r}"


def test_the_broker_under_test_is_the_shipped_config_with_only_paths_and_port_changed(broker):
    shipped = (SHIPPED / "mosquitto.conf").read_text().splitlines()
    running = broker.shipped.read_text().splitlines()
    assert len(running) == len(shipped)
    changed = {a.split()[0] for a, b in zip(shipped, running, strict=True) if a != b}
    assert changed == {"password_file", "acl_file", "listener", "cafile", "certfile", "keyfile"}
    for a, b in zip(shipped, running, strict=True):
        if a != b:  # only the first value differs
            assert re.sub(r"^(\S+\s+)\S+", r"\1", a) == re.sub(r"^(\S+\s+)\S+", r"\1", b).replace(" 127.0.0.1", "")
    assert wait_for(lambda: broker.proc.poll() is None, 1)  # it started from them, and runs


def _center(tmp_path, broker, client_id: str | None = "center-test") -> Listener:
    """`edge listen` as the center runs it: user center, a persistent session, everything at QoS 1."""
    cfg = center_config(tmp_path, broker)
    out = tmp_path / "received"
    listener = Listener(parse_config(yaml.safe_dump(cfg)), out, client_id, on_line=lambda _: None)
    listener.start()
    assert listener.connected.wait(10)
    return listener


def _client(broker, user, client_id, clean_session=True, on_message=None) -> tuple[mqtt.Client, dict]:
    """A connected paho client; state["disconnects"] counts the times the broker closed it."""
    state = {"disconnects": 0, "connected": threading.Event()}
    v2 = mqtt.CallbackAPIVersion.VERSION2
    client = mqtt.Client(v2, client_id=client_id, clean_session=clean_session, reconnect_on_failure=False)
    client.tls_set(ca_certs=str(broker.ca))
    client.username_pw_set(user, USERS[user])
    client.max_inflight_messages_set(100)

    def on_connect(c, u, flags, rc, props=None):
        if not rc.is_failure:
            state["connected"].set()

    def on_disconnect(c, u, flags, rc, props=None):
        state["disconnects"] += 1
        state["connected"].clear()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    if on_message:
        client.on_message = on_message
    client.connect("127.0.0.1", broker.port, keepalive=30)
    client.loop_start()
    assert state["connected"].wait(10), f"{user} as {client_id} could not connect"
    return client, state


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _event(event_id: str, node: str = "garden-a") -> bytes:
    origin = {"x": 320.0, "y": 40.0, "floor": 12, "facade_x_m": 8.0}
    body = {"v": 1, "type": "new", "node": node, "msg_id": uuid.uuid4().hex, "id": event_id, "camera": "cam"}
    body |= {"level": "suspected", "score": 0.9, "alert_s": 1.0, "origin": origin}
    return json.dumps(body).encode()


def _new_ids(listener: Listener) -> set[str]:
    return {e["id"] for e in listener.events if e["type"] == "new"}


def _sync(broker, listener: Listener, node: str = "garden-a") -> None:
    """An alert the center must get now: its subscriptions are in place, and all sent before has been handled."""
    node_client, _ = _client(broker, node, node)
    eid = f"sync-{uuid.uuid4().hex[:8]}"
    node_client.publish(f"edge/{node}/events", _event(eid, node), qos=1).wait_for_publish(5)
    _close(node_client)
    assert wait_for(lambda: eid in _new_ids(listener), 10), "the center never got the sync alert"


def test_an_alert_after_5000_stats_and_chunks_reaches_a_center_that_was_away(tmp_path, broker):
    center = _center(tmp_path, broker)
    _sync(broker, center)
    center.stop()  # the center is away; its persistent session stays on the broker
    node, _ = _client(broker, "garden-a", "garden-a")
    topics = Topics("edge", "garden-a")
    # What a node sends while the center is away, as the node sends it (QoS 1, as edge/publish/mqtt.py does):
    # stats every 10 s, then one event's annotated clip in 256 KiB chunks (mqtt.chunk_kib), then the alert.
    stats = json.dumps({"v": 1, "node": "garden-a", "time_utc": "2026-01-01T00:00:00Z", "cpu_percent": 31.5})
    stats = stats.encode().ljust(400)
    clip = os.urandom(100 * 256 * 1024)
    chunks = chunk_payloads(clip, {"event": "ev-clip", "node": "garden-a", "file": "clip"}, 256 * 1024)
    sent = [node.publish(topics.stats, stats, qos=1) for _ in range(4900)]
    sent += [node.publish(topics.files("ev-clip", "clip"), c, qos=1) for c in chunks]
    assert len(sent) == 5000
    alert = node.publish(topics.events, _event("the-alert"), qos=1)
    alert.wait_for_publish(120)
    assert alert.is_published()  # the broker acknowledged the alert: the node has deleted it from its outbox
    _close(node)
    broker.stop()  # and a broker restart meanwhile (persistence)
    broker.start()
    center = _center(tmp_path, broker)  # the center is back, same session
    try:
        assert wait_for(lambda: "the-alert" in _new_ids(center), 60), "the alert sent after 5000 messages was lost"
        assert wait_for(lambda: ("garden-a", "ev-clip", "clip") in center.files_ok, 30)  # and nothing before it
    finally:
        center.stop()


def test_the_largest_chunk_a_node_can_send_passes_and_a_larger_message_does_not(tmp_path, broker):
    center = _center(tmp_path, broker)
    try:
        _sync(broker, center)
        kib = MqttConfig.model_fields["chunk_kib"].metadata  # the bound check-config puts on mqtt.chunk_kib
        largest = max(m.le for m in kib if hasattr(m, "le")) * 1024
        node, _ = _client(broker, "garden-a", "garden-a")
        head = {"event": "ev-big", "node": "garden-a", "file": "clip"}
        chunk = chunk_payloads(os.urandom(largest), head, largest)[0]
        node.publish("edge/garden-a/events/ev-big/clip", chunk, qos=1).wait_for_publish(30)
        head = {"event": "ev-huge", "node": "garden-a", "file": "clip"}
        huge = chunk_payloads(os.urandom(17 << 20), head, 17 << 20)[0]
        node.publish("edge/garden-a/events/ev-huge/clip", huge, qos=1).wait_for_publish(30)
        _close(node)
        _sync(broker, center)
        assert ("garden-a", "ev-big", "clip") in center.files_ok
        assert not [k for k in center.files_ok + center.files_bad if k[1] == "ev-huge"]
    finally:
        center.stop()


@pytest.mark.parametrize(
    ("victim", "victim_id", "taken_id"),
    [
        ("garden-b", "garden-b", "garden-b"),  # a node's client id is its node id
        ("center", "edge-listen-center", "edge-listen-center"),  # what `edge listen` asks for
        ("center", "edge-listen-center", "center"),  # what the broker gives it (use_username_as_clientid)
    ],
)
def test_a_node_logging_in_with_another_clients_id_cannot_disconnect_it(broker, victim, victim_id, taken_id):
    got: list[bytes] = []
    topic = "edge/garden-b/cam/detect/set" if victim == "garden-b" else "edge/garden-b/events"
    client, state = _client(broker, victim, victim_id, clean_session=victim != "garden-b")
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.subscribe(topic, qos=1)
    time.sleep(0.3)
    intruder, _ = _client(broker, "garden-a", taken_id)  # garden-a's own password, someone else's client id
    try:
        time.sleep(1.0)
        assert state["disconnects"] == 0 and state["connected"].is_set(), f"{victim} was thrown off"
        # The control: the victim still receives what is meant for it.
        sender, _ = _client(broker, "center" if victim == "garden-b" else "garden-b", "sender")
        sender.publish(topic, b"OFF", qos=1).wait_for_publish(5)
        _close(sender)
        assert wait_for(lambda: b"OFF" in got, 5), f"{victim} no longer receives"
    finally:
        _close(intruder)
        _close(client)


def test_a_node_logging_in_with_the_centers_client_id_cannot_wipe_its_session(tmp_path, broker):
    center = _center(tmp_path, broker, client_id=None)  # `edge listen`'s own id, edge-listen-<node id>
    _sync(broker, center)
    center.stop()  # away: its session holds what arrives meanwhile
    node, _ = _client(broker, "garden-b", "garden-b")
    node.publish("edge/garden-b/events", _event("while-away", "garden-b"), qos=1).wait_for_publish(5)
    _close(node)
    for taken_id in ("edge-listen-center", "center"):
        # A clean session under the center's id would delete the center's session and its queue.
        intruder, _ = _client(broker, "garden-a", taken_id, clean_session=True)
        _close(intruder)
    center = _center(tmp_path, broker, client_id=None)
    try:
        assert wait_for(lambda: "while-away" in _new_ids(center), 10), "the alert queued for the center is gone"
    finally:
        center.stop()
