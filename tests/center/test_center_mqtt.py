"""The center against a real Mosquitto (TLS, passwords, the shipped ACL): shared subscription, acknowledgement
after commit, feedback to the node, and a center killed mid-stream losing nothing it acknowledged."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time

import httpx
import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from centerkit import CenterProcess, load, node_client, run_cli, write_center
from parts import alert
from sqlalchemy import func, select
from support.servers import free_port, wait_for

from center.db import Case, Event, Evidence, Message, make_engine, make_sessions
from edge.publish.mqtt import chunk_payloads


def _count(url: str, table) -> int:
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as s:
            return s.scalar(select(func.count()).select_from(table))
    finally:
        engine.dispose()


def test_an_alert_reaches_the_api_and_the_verdict_goes_back_to_its_node(tmp_path, broker):
    port = free_port()
    config = write_center(tmp_path, None, broker, api={"host": "127.0.0.1", "port": port})
    token = run_cli("user", "add", "disp", "--role", "dispatcher", "--config", str(config)).stdout.strip()
    assert token.startswith("ec_")
    center = CenterProcess(config).start()
    node = node_client(broker, "garden3-east")
    got: list[dict] = []
    node.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    node.subscribe("edge/garden3-east/feedback", qos=1)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
    try:
        assert wait_for(lambda: _api_up(api), 20)
        node.publish("edge/garden3-east/events", json.dumps(alert(event_id="ev-e2e")), qos=1).wait_for_publish(5)
        cases = wait_for(lambda: api.get("/api/cases").json(), 20)
        assert cases, center.output()[-2000:]
        (case,) = cases
        assert (case["state"], case["building"], case["assignee"]) == ("dispatched", "b3", "worker:zhang")
        r = api.post(f"/api/cases/{case['id']}/check", json={"verdict": "false_alarm", "note": "a kite"})
        assert r.status_code == 200, r.text
        assert wait_for(lambda: got, 20), center.output()[-2000:]
        assert (got[0]["id"], got[0]["verdict"], got[0]["note"], got[0]["by"]) == (
            "ev-e2e",
            "false_alarm",
            "a kite",
            "disp",
        )
    finally:
        api.close()
        node.loop_stop()
        assert center.stop() == 0, center.output()[-2000:]


def test_a_thrown_object_s_hold_reaches_its_node_and_the_node_s_answer_shows_on_the_case(tmp_path, broker):
    port = free_port()
    config = write_center(tmp_path, None, broker, api={"host": "127.0.0.1", "port": port})
    token = run_cli("user", "add", "disp", "--role", "dispatcher", "--config", str(config)).stdout.strip()
    center = CenterProcess(config).start()
    node = node_client(broker, "garden3-east")
    asked: list[tuple[str, bytes]] = []
    node.on_message = lambda c, u, m: asked.append((m.topic, m.payload))
    node.subscribe("edge/garden3-east/events/+/hold", qos=1)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})

    def told() -> list[bool | None]:
        (case,) = api.get("/api/cases").json()
        return [e["node_hold"] for e in api.get(f"/api/cases/{case['id']}").json()["events"]]

    try:
        assert wait_for(lambda: _api_up(api), 20)
        node.publish("edge/garden3-east/events", json.dumps(alert(event_id="ev-held")), qos=1).wait_for_publish(5)
        (case,) = wait_for(lambda: api.get("/api/cases").json(), 20) or [None]
        assert case, center.output()[-2000:]
        assert told() == [None]  # control: nothing asked, nothing answered
        r = api.post(f"/api/cases/{case['id']}/check", json={"verdict": "thrown", "note": "a flower pot"})
        assert r.status_code == 200, r.text
        assert wait_for(lambda: asked, 20), center.output()[-2000:]
        assert asked[0] == ("edge/garden3-east/events/ev-held/hold", b"ON")
        # The node answers as edge/publish/mqtt.py does: retained, on .../hold/state.
        node.publish("edge/garden3-east/events/ev-held/hold/state", b"ON", qos=1, retain=True).wait_for_publish(5)
        assert wait_for(lambda: told() == [True], 20), center.output()[-2000:]
        detail = api.get(f"/api/cases/{case['id']}").json()
        assert detail["events"][0]["node_hold_at"] is not None
    finally:
        api.close()
        node.loop_stop()
        assert center.stop() == 0, center.output()[-2000:]


def _api_up(api: httpx.Client) -> bool:
    try:
        return api.get("/api/me").status_code == 200
    except httpx.TransportError:
        return False


class Stream:
    """A node publishing `total` alerts at QoS 1, at a steady pace, in a thread."""

    def __init__(self, broker, total: int, pace_s: float = 0.01):
        self.client = node_client(broker, "garden5")
        self.total, self.pace_s = total, pace_s
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in range(self.total):
            body = alert("garden5", "south", f"ev-{i:05d}", floor=i % 18 + 1)
            body["msg_id"] = f"msg-{i:05d}"
            self.client.publish("edge/garden5/events", json.dumps(body), qos=1).wait_for_publish(30)
            self.sent += 1
            time.sleep(self.pace_s)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_center_killed_mid_stream_loses_nothing_and_stores_nothing_twice(tmp_path, broker, database, request):
    url = None if database == "sqlite" else request.getfixturevalue("pg_cluster").new_database()
    config = write_center(tmp_path, url, broker)
    cfg, _ = load(config)
    assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0
    url = cfg.database_url()
    center = CenterProcess(config).start()
    total = 400
    stream = Stream(broker, total)
    stream.thread.start()
    try:
        assert wait_for(lambda: _count(url, Message) >= 50, 60), center.output()[-2000:]
        center.kill()  # SIGKILL: no goodbye, whatever was in flight is cut
        killed_at = _count(url, Message)
        assert killed_at < total  # it died mid-stream
        time.sleep(0.5)
        center = CenterProcess(config).start()  # the same persistent session comes back
        stream.thread.join(120)
        assert stream.sent == total
        assert wait_for(lambda: _count(url, Message) == total, 60), (_count(url, Message), center.output()[-3000:])
        assert _count(url, Event) == total
    finally:
        stream.client.loop_stop()
        center.stop()


def test_what_the_center_cannot_commit_it_does_not_acknowledge(tmp_path, broker):
    """The database is locked while alerts come: the center holds them unacknowledged, is killed, and the
    broker gives them to it again once it is back."""
    config = write_center(tmp_path, None, broker, database={"sqlite_busy_s": 0.5})
    cfg, _ = load(config)
    assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0
    url = cfg.database_url()
    center = CenterProcess(config).start()
    node = node_client(broker, "garden5")
    lock = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # nobody else can write now
        for i in range(5):
            body = alert("garden5", "south", f"ev-locked-{i}", floor=3 + 3 * i)
            node.publish("edge/garden5/events", json.dumps(body), qos=1).wait_for_publish(10)
        assert wait_for(lambda: "could not store a message" in center.output(), 60)  # it tried, and waits
        center.kill()
        lock.execute("ROLLBACK")
        assert _count(url, Message) == 0
        center = CenterProcess(config).start()
        assert wait_for(lambda: _count(url, Message) == 5, 60), center.output()[-3000:]
    finally:
        lock.close()
        node.loop_stop()
        center.stop()


def test_two_instances_share_the_load_and_store_every_alert_and_clip_once(tmp_path, broker, pg_cluster):
    url = pg_cluster.new_database()
    one = write_center(tmp_path / "a", url, broker, instance="center-1", mqtt_user="center")
    two = write_center(tmp_path / "b", url, broker, instance="center-2", mqtt_user="center-2")
    assert run_cli("db", "upgrade", "--config", str(one)).returncode == 0
    centers = [CenterProcess(one).start(), CenterProcess(two).start()]
    nodes = {n: node_client(broker, n) for n in ("garden3-east", "garden3-west", "garden5")}
    cams = {"garden3-east": "east", "garden3-west": "west", "garden5": "south"}
    clips = {}
    try:
        for i in range(60):
            node = list(nodes)[i % 3]
            body = alert(node, cams[node], f"ev-{i:03d}", floor=i % 18 + 1)
            body["alert_utc"] = f"2026-05-01T02:{2 * i // 60:02d}:{2 * i % 60:02d}.000Z"  # 2 s apart: 60 cases
            nodes[node].publish(f"edge/{node}/events", json.dumps(body), qos=1).wait_for_publish(10)
            if i % 10 == 0:  # every tenth alert with a clip in 8 chunks, which the two instances split
                data = os.urandom(8 * 16384 - 100)
                clips[(node, body["id"])] = hashlib.sha256(data).hexdigest()
                head = {"event": body["id"], "node": node, "file": "clip"}
                for chunk in chunk_payloads(data, head, 16384):
                    nodes[node].publish(f"edge/{node}/events/{body['id']}/clip", chunk, qos=1).wait_for_publish(10)
        assert wait_for(lambda: _count(url, Message) == 60, 60), [c.output()[-1500:] for c in centers]
        assert wait_for(lambda: _count(url, Evidence) == len(clips), 60)
        engine = make_engine(url)
        with make_sessions(engine)() as s:
            by_instance = dict(s.execute(select(Message.instance, func.count()).group_by(Message.instance)).all())
            kept = {(e.node, e.event_id): x.sha256 for x, e in s.execute(select(Evidence, Event).join(Event))}
            assert s.scalar(select(func.count()).select_from(Case)) == 60
        engine.dispose()
        assert set(by_instance) == {"center-1", "center-2"}  # both took a share
        assert kept == clips  # every clip joined and checked once, whichever instance got which chunk
    finally:
        for n in nodes.values():
            n.loop_stop()
        for c in centers:
            c.stop()


def test_an_api_address_in_use_stops_the_center_with_a_clear_error(tmp_path, broker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_center(tmp_path, None, broker, api={"host": "127.0.0.1", "port": port})
        r = run_cli("run", "--config", str(config))
    assert r.returncode == 71 and f"the API cannot listen on 127.0.0.1:{port}" in r.stderr
