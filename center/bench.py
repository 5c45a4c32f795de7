"""`edge-center bench`: many simulated nodes through one Mosquitto into several center instances on PostgreSQL.

Counts every alert stored exactly once and measures how fast: latency from publish to stored at a steady,
busy alert rate (with camera status and node stats beside it), then events per second through a burst.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from sqlalchemy import func, select

from center.db import Event, Message, make_engine, make_sessions
from center.migrate import upgrade
from center.pgcluster import Cluster, free_port, why_not

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ACL = REPO / "configs" / "mosquitto" / "acl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CAMERAS = ("east", "south", "west")  # per simulated node
STATUS_EVERY_S = 10.0  # node.status_interval_s default: status of each camera and node stats
SNAPSHOT_BYTES = 40_000  # a trajectory still at 1080p is some tens of KB
DRAIN_TIMEOUT_S = 300.0  # give up waiting for the centers after this
SUSPECTED_SHARE = 0.3  # the node's held-out bench: about 3 in 10 alerts are suspected ones


@dataclass
class Sent:
    """What the simulated nodes published: msg_id -> wall-clock time of publish (-1: not timed), per phase."""

    steady: dict[str, float] = field(default_factory=dict)
    burst: dict[str, float] = field(default_factory=dict)
    other: int = 0  # status, stats, snapshots, 'end' messages
    lock: threading.Lock = field(default_factory=threading.Lock)


def _broker(work: Path, nodes: list[str], password: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    users = {n: password for n in nodes} | {"center": password, "center-2": password}
    passwd = work / "passwd"
    passwd.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
    acl = work / "acl"
    shutil.copy(SHIPPED_ACL, acl)
    for f in (passwd, acl):
        f.chmod(0o600)
    conf = work / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
        "use_username_as_clientid true\nmax_queued_bytes 536870912\nmax_queued_messages 1000000\n"
        f"persistence false\nlog_dest file {work / 'mosquitto.log'}\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    return proc, port


def _roster(nodes: list[str]) -> dict:
    grids = {}
    buildings = {}
    for i, node in enumerate(nodes):
        g = f"g{i // 10}"
        grids.setdefault(
            g,
            {
                "workers": {f"w{i // 10}": {"name": f"worker {i // 10}", "phone": f"1380000{i // 10:04d}"}},
                "leader": {"name": f"leader {i // 10}"},
            },
        )
        buildings[f"b{i}"] = {
            "name": f"{i}号楼",
            "floors": 30,
            "grid": g,
            "facades": {cam: [{"node": node, "camera": cam}] for cam in CAMERAS},
        }
    return {"version": 1, "office": {"name": "office"}, "grids": grids, "buildings": buildings}


def _center_config(work: Path, name: str, user: str, port: int, url: str, password: str) -> Path:
    cfg = {
        "version": 1,
        "instance": name,
        "data_dir": str(work / name),
        "roster": str(work / "roster.yaml"),
        "database": {"url": url},
        "mqtt": {"host": "127.0.0.1", "port": port, "username": user, "password": password},
        "api": {"enabled": False},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _alert(node: str, camera: str, floor: int, level: str) -> dict:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    eid = f"{camera}-{uuid.uuid4().hex[:12]}"
    return {
        "v": 1,
        "type": "new",
        "msg_id": uuid.uuid4().hex,
        "id": eid,
        "node": node,
        "camera": camera,
        "level": level,
        "score": 0.93 if level == "confirmed" else 0.6,
        "alert_utc": now,
        "queued_utc": now,
        "origin": {"x": 812.0, "y": 233.5, "floor": floor, "facade_x_m": 12.1},
        "fall_m": 21.0,
        "trajectory": [[i, 800.0 + i, 230.0 + i * i] for i in range(40)],
    }


class Fleet:
    """The simulated nodes: one MQTT connection each (each its own user, as the ACL wants)."""

    def __init__(self, nodes: list[str], port: int, password: str, sent: Sent):
        self.sent = sent
        self.clients: dict[str, mqtt.Client] = {}
        for n in nodes:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=n, protocol=mqtt.MQTTv311)
            c.username_pw_set(n, password)
            c.max_queued_messages_set(0)
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients[n] = c
        self.still = b"\xff\xd8\xff\xe0" + os.urandom(SNAPSHOT_BYTES)

    def alert(self, node: str, phase: dict[str, float], with_extras: bool) -> mqtt.MQTTMessageInfo:
        level = "suspected" if random.random() < SUSPECTED_SHARE else "confirmed"
        body = _alert(node, random.choice(CAMERAS), random.randint(2, 30), level)
        with self.sent.lock:
            phase[body["msg_id"]] = time.time()
        c = self.clients[node]
        info = c.publish(f"edge/{node}/events", json.dumps(body), qos=1)
        if with_extras:  # what follows an alert: its still, and the end of the fall
            c.publish(f"edge/{node}/events/{body['id']}/snapshot", self.still, qos=1)
            end = {**body, "type": "end", "msg_id": uuid.uuid4().hex}
            c.publish(f"edge/{node}/events", json.dumps(end), qos=1)
            with self.sent.lock:
                phase[end["msg_id"]] = -1.0  # stored, not timed
                self.sent.other += 1
        return info

    def health(self, node: str) -> None:
        c = self.clients[node]
        for cam in CAMERAS:
            status = {
                "v": 1,
                "camera": cam,
                "state": "online",
                "reason": "receiving frames",
                "since": 0,
                "fps": 25,
            }
            c.publish(f"edge/{node}/{cam}/status", json.dumps(status), qos=0, retain=True)
        stats = {"v": 1, "node": node, "time_utc": "now", "cpu_percent": 60.0, "cameras": {}}
        c.publish(f"edge/{node}/stats", json.dumps(stats), qos=0, retain=True)
        with self.sent.lock:
            self.sent.other += len(CAMERAS) + 1

    def close(self) -> None:
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()


def _steady(fleet: Fleet, nodes: list[str], seconds: float, alert_every_s: float, sent: Sent) -> None:
    """Each node alerts at random (Poisson, mean alert_every_s) and reports health every STATUS_EVERY_S."""
    rng = random.Random(7)
    start = time.monotonic()
    heap = [(start + rng.expovariate(1 / alert_every_s), "alert", n) for n in nodes]
    heap += [(start + rng.uniform(0, STATUS_EVERY_S), "health", n) for n in nodes]
    heapq.heapify(heap)
    while heap:
        t, kind, node = heapq.heappop(heap)
        if t > start + seconds:
            break
        time.sleep(max(0.0, t - time.monotonic()))
        if kind == "alert":
            fleet.alert(node, sent.steady, with_extras=True)
            heapq.heappush(heap, (t + rng.expovariate(1 / alert_every_s), kind, node))
        else:
            fleet.health(node)
            heapq.heappush(heap, (t + STATUS_EVERY_S, kind, node))


def _burst(fleet: Fleet, nodes: list[str], count: int, sent: Sent) -> None:
    infos = [fleet.alert(nodes[i % len(nodes)], sent.burst, with_extras=False) for i in range(count)]
    for info in infos:
        info.wait_for_publish(60)


def _stored(sessions) -> dict[str, tuple[dt.datetime, str]]:
    with sessions() as s:
        return {m: (t, i) for m, t, i in s.execute(select(Message.msg_id, Message.received_at, Message.instance))}


def _wait_for(sessions, total: int) -> bool:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        with sessions() as s:
            if s.scalar(select(func.count()).select_from(Message)) >= total:
                return True
        time.sleep(0.5)
    return False


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run(args) -> dict:
    load0 = os.getloadavg()[0]  # the machine may be busy with more than this bench: say so in the report
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    password = uuid.uuid4().hex
    nodes = [f"node{i:03d}" for i in range(args.nodes)]
    cluster = None
    url = args.database_url
    if url is None:
        reason = why_not()
        if reason:
            raise SystemExit(f"edge-center bench: {reason}; give --database-url")
        cluster = Cluster(work / "pg", durable=True).start()
        url = cluster.new_database()
    upgrade(url)
    broker, port = _broker(work, nodes, password)
    (work / "roster.yaml").write_text(yaml.safe_dump(_roster(nodes)))
    centers = []
    fleet = None
    try:
        for k in range(args.instances):
            name, user = f"center-{k + 1}", ("center" if k == 0 else f"center-{k + 1}")
            cfg = _center_config(work, name, user, port, url, password)
            log = (work / f"{name}.log").open("wb")
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            proc = subprocess.Popen(
                [sys.executable, "-m", "center", "-v", "run", "--config", str(cfg)],
                stdout=log,
                stderr=log,
                env=env,
            )
            centers.append((proc, work / f"{name}.log"))
        deadline = time.monotonic() + 60
        while not all("subscribed to" in p.read_text() for _, p in centers):
            if time.monotonic() > deadline:
                raise SystemExit("edge-center bench: the centers did not subscribe")
            time.sleep(0.2)
        sent = Sent()
        fleet = Fleet(nodes, port, password, sent)
        engine = make_engine(url)
        sessions = make_sessions(engine)
        t0 = time.monotonic()
        _steady(fleet, nodes, args.seconds, args.alert_every_s, sent)
        steady_s = time.monotonic() - t0
        _wait_for(sessions, len(sent.steady))
        stored_steady = _stored(sessions)
        utc0 = dt.datetime.now(dt.UTC)
        _burst(fleet, nodes, args.burst, sent)
        complete = _wait_for(sessions, len(sent.steady) + len(sent.burst))
        stored = _stored(sessions)
        with sessions() as s:
            events = s.scalar(select(func.count()).select_from(Event))
        engine.dispose()
        timed = {m: t for m, t in sent.steady.items() if t >= 0}
        lat = [(stored_steady[m][0].timestamp() - t) * 1000 for m, t in timed.items() if m in stored_steady]
        burst_times = [stored[m][0] for m in sent.burst if m in stored]
        burst_s = (max(burst_times) - utc0).total_seconds() if burst_times else float("nan")
        alerts = len(timed) + len(sent.burst)
        by_instance: dict[str, int] = {}
        for _, inst in stored.values():
            by_instance[inst] = by_instance.get(inst, 0) + 1
        return {
            "nodes": args.nodes,
            "instances": args.instances,
            "steady_s": round(steady_s, 1),
            "alert_every_s": args.alert_every_s,
            "steady_alerts": len(timed),
            "steady_rate": round(len(timed) / steady_s, 2),
            "other_messages": sent.other,
            "latency_ms": {
                "p50": round(_pct(lat, 0.5), 1) if lat else None,
                "p95": round(_pct(lat, 0.95), 1) if lat else None,
                "max": round(max(lat), 1) if lat else None,
            },
            "burst": args.burst,
            "burst_s": round(burst_s, 2),
            "burst_rate": round(args.burst / burst_s, 1) if burst_times else None,
            "messages_published": len(sent.steady) + len(sent.burst),
            "messages_stored": len(stored),
            "alerts_published": alerts,
            "events_stored": events,
            "exactly_once": complete and len(stored) == len(sent.steady) + len(sent.burst) and events == alerts,
            "by_instance": by_instance,
            "database": "PostgreSQL " + ("(throwaway cluster, fsync on)" if cluster else "(given URL)"),
            "cpus": os.cpu_count(),
            "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }
    finally:
        if fleet:
            fleet.close()
        for proc, _ in centers:
            proc.terminate()
            proc.wait(30)
        broker.terminate()
        broker.wait(10)
        if cluster:
            cluster.stop()


def markdown(r: dict, command: str, title: str = "# edge-center at scale") -> str:
    lat = r["latency_ms"]
    steady = (
        f"each node alerts at random, one every {r['alert_every_s']} s on average ({r['steady_rate']} alerts/s "
        f"in all, {round(SUSPECTED_SHARE * 100)}% of them suspected and so sent to the office for review; each "
        f"alert followed by its still and its `end`), camera status and node stats every 10 s: "
        f"{r['other_messages']} further messages"
    )
    latency = (
        f"publish → stored: p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms "
        f"over {r['steady_alerts']} alerts"
    )
    return f"""{title}

`{command}`

{r["nodes"]} simulated nodes (3 cameras each, one MQTT connection and user each) publish through one Mosquitto
into {r["instances"]} `edge-center run` instances sharing `$share/center/...` on {r["database"]}, all on one
machine of {r["cpus"]} cores with the broker, the database and the simulator (load average {r["load_before"]}
before the run, {r["load_after"]} after: the machine was shared with other work).

| phase | what | result |
|---|---|---|
| steady, {r["steady_s"]} s | {steady} | {latency} |
| burst | {r["burst"]} alerts published as fast as the nodes can | all stored in {r["burst_s"]} s: \
**{r["burst_rate"]} events/s** |

Exactly once: {r["messages_published"]} event messages published, {r["messages_stored"]} stored (unique `msg_id`);
{r["alerts_published"]} alerts, {r["events_stored"]} event rows — **{"yes" if r["exactly_once"] else "NO"}**.
Split between instances: {", ".join(f"{k} {v}" for k, v in sorted(r["by_instance"].items()))}.

Latency is from the node's `publish()` to the center's row (its `received_at`, taken just before the commit),
so it includes the broker, the TLS-less loopback hop and the wait in the center's queue. Clips are left out
(at this alert rate they would be tens of MB/s through one machine); their chunks meet in the database, see
`tests/center/test_center_mqtt.py::test_two_instances_share_the_load_and_store_every_alert_and_clip_once`.
"""


def main(args) -> int:
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.markdown:
        cmd = (
            "edge-center bench " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "edge-center bench"
        )
        out = Path(args.markdown)
        if args.append:  # a further run of other settings, as a section of the same report
            out.write_text(out.read_text() + "\n" + markdown(result, cmd, f"## {args.append}"))
        else:
            out.write_text(markdown(result, cmd))
    return 0 if result["exactly_once"] else 1
