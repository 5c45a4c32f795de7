"""GET /healthz and GET /metrics at node.metrics.listen: a small WSGI app on prometheus-client's server.

/healthz answers 200 only when every camera the node runs is online, no camera worker is stuck, and the
outbox drains (empty, or acknowledged by the broker within node.metrics.outbox_stall_s); else 503. Both
answer with a JSON body saying which check failed and why.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from edge.capture.camera import CameraState
from edge.config import split_listen

if TYPE_CHECKING:
    from edge.node import Node

log = logging.getLogger(__name__)


@dataclass
class Health:
    ok: bool
    problems: list[str] = field(default_factory=list)
    cameras: dict[str, str] = field(default_factory=dict)  # name -> state
    outbox: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        body = {"ok": self.ok, "problems": self.problems, "cameras": self.cameras, "outbox": self.outbox}
        return json.dumps(body, indent=1).encode()


def check(node: Node) -> Health:
    """The node's health now."""
    problems: list[str] = []
    cameras = {}
    for name, w in list(node.cameras.items()):
        st = w.capture.status
        cameras[name] = str(st.state)
        if st.state != CameraState.ONLINE:
            problems.append(f"camera {name} is {st.state}: {st.reason}")
    problems += [f"camera {name}: {why}" for name, why in node.stuck_workers().items()]
    outbox = _outbox(node, problems)
    return Health(not problems, problems, cameras, outbox)


def _outbox(node: Node, problems: list[str]) -> dict:
    pub = node.publisher
    if pub is None:
        return {"enabled": False}
    n, size = pub.outbox.depth()
    out = {"enabled": True, "connected": pub.connected.is_set(), "messages": n, "bytes": size}
    if n:
        now = time.time()
        # Waiting since the oldest message came, or since the broker last acknowledged one, whichever is later;
        # or since the broker was lost (status and stats replace their older copies, so they never get old).
        waiting = now - max(pub.last_ack, pub.outbox.oldest() or now)
        if pub.down_since is not None:
            waiting = max(waiting, now - pub.down_since)
        out["stalled_s"] = round(waiting, 1)
        if waiting > node.config.node.metrics.outbox_stall_s:
            where = "" if pub.connected.is_set() else " (not connected to the broker)"
            problems.append(f"outbox not draining: {n} messages, none acknowledged for {waiting:.0f} s{where}")
    return out


# A client that connects and sends nothing (a port scanner, a scrape whose peer vanished on a flaky link) is let go
# after this long: else it holds a thread and a descriptor for the node's lifetime. A scraper sends its request at
# once, and Prometheus gives up on a scrape after 10 s anyway.
REQUEST_TIMEOUT_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        self.timeout = REQUEST_TIMEOUT_S  # read at each connection: the socket timeout of every read and write
        super().setup()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError as exc:  # a silent or vanished client: not a traceback on stderr (wsgiref's default)
            log.debug("metrics: a client from %s dropped: %s", self.client_address[0], exc)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        """Scrapes every 15 s are not news."""


class MetricsServer:
    """Serves /metrics and /healthz in its own threads."""

    def __init__(self, node: Node, listen: str):
        self.node = node
        self.host, self.port = split_listen(listen)
        self._metrics = make_wsgi_app(node.metrics.registry)
        self._server = None
        self._thread: threading.Thread | None = None

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/healthz":
            health = check(self.node)
            body = health.to_json()
            status = "200 OK" if health.ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]

    def start(self) -> None:
        """Bind and serve in a thread; OSError when the address cannot be had."""

        class Server(ThreadingWSGIServer):
            address_family = _family(self.host)

        self._server = make_server(self.host, self.port, self.app, Server, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics and health at http://%s:%d/metrics and /healthz", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
