"""`edge-center run`: ingest, the loop's timers, the notice queue and the API, wired together."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import uvicorn

from center.api import Context, create_app
from center.config import CenterConfig
from center.counters import Drops
from center.db import make_engine, make_sessions, utcnow
from center.files import EvidenceFiles
from center.ingest import Ingest
from center.loop import Loop
from center.migrate import current, head, refuse_newer, upgrade
from center.notify import JobRunner, make_notifiers
from center.receiver import Receiver
from center.retention import Retention
from center.roster import Roster
from center.yamlfile import load_model
from edge.config import ConfigError

log = logging.getLogger(__name__)

TICK_S = 1.0  # escalations and due notices are looked at this often
EXPIRE_EVERY_S = 60.0  # unfinished clips are looked at this often (they expire after minutes)
SHUTDOWN_S = 3.0  # open API requests get this long to finish on SIGTERM


class ApiUnavailable(Exception):
    """The API's address is taken or not ours: `edge-center run` exits 71."""


class SchemaBehind(Exception):
    """The database is not at the newest schema: `edge-center db upgrade` first."""


def ensure_schema(url: str) -> None:
    """SQLite is brought up to date on start (nothing to set up); PostgreSQL, shared by several instances, is
    migrated once by `edge-center db upgrade`, never by two starting instances at the same time."""
    at = current(url)
    if at == head():
        return
    refuse_newer(at)  # a newer edge-center's schema is neither upgraded nor called old
    if url.startswith("sqlite:"):
        upgrade(url)
        return
    raise SchemaBehind(f"the database is at {at or 'no schema'}, not {head()}: run edge-center db upgrade")


class Center:
    def __init__(self, cfg: CenterConfig, roster: Roster):
        self.cfg = cfg
        self.engine = make_engine(cfg.database_url(), cfg.database.sqlite_busy_s)
        self.sessions = make_sessions(self.engine)
        self.files = EvidenceFiles(cfg.data_dir)
        self.drops = Drops()
        self.loop = Loop(cfg, roster)
        self.ingest = Ingest(
            cfg.mqtt.topic_prefix,
            self.sessions,
            self.files,
            self.loop,
            cfg.instance,
            self.drops,
            max_pending_bytes=cfg.mqtt.max_chunk_set_mib << 20,
            max_pending_bytes_per_node=(cfg.mqtt.max_chunk_set_mib << 20) // 2,
        )
        self.receiver = Receiver(cfg.mqtt, cfg.mqtt.client_id or cfg.instance, self.ingest)
        notifiers = make_notifiers(cfg, self.sessions, self.files, self.receiver.publish)
        self.jobs = JobRunner(cfg, self.sessions, notifiers, cfg.instance)
        self.retention = Retention(cfg.retention, self.sessions, self.files)
        self.context = Context(
            cfg,
            roster,
            self.sessions,
            make_sessions(self.engine, readonly=True),
            self.loop,
            self.files,
            self.drops,
            self.receiver.publish,
            lambda: self.retention.disk,
        )
        self._roster_mark = self._roster_stat()
        self.stopping = threading.Event()
        self.server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.receiver.start()
        self._spawn(self._timers, "center-timers")
        self._spawn(self._notices, "center-notices")
        if self.cfg.api.enabled:
            app = create_app(self.context)
            config = uvicorn.Config(
                app,
                host=self.cfg.api.host,
                port=self.cfg.api.port,
                log_level="warning",
                timeout_graceful_shutdown=SHUTDOWN_S,
            )
            self.server = uvicorn.Server(config)
            thread = self._spawn(self.server.run, "center-api")
            while not self.server.started and thread.is_alive():
                time.sleep(0.05)
            if not self.server.started:
                self.stop()
                raise ApiUnavailable(f"the API cannot listen on {self.cfg.api.host}:{self.cfg.api.port}")

    def stop(self) -> None:
        log.info("stopping: API, MQTT, timers")
        self.stopping.set()
        if self.server:
            self.server.should_exit = True
        self.receiver.stop()
        for t in self._threads:
            t.join(10)
            if t.is_alive():
                log.warning("%s did not stop in time", t.name)
        try:
            self.ingest.flush_health()  # the last status seen, kept
        except Exception:
            log.exception("could not keep the last camera status")
        self.engine.dispose()

    def _notices(self) -> None:
        """Send due notices, each endpoint (webhook, WeCom group, the SMTP server, the broker) in a thread of its
        own: one that is down or hangs takes its timeouts in its own thread, while the grid worker's WeCom
        group, email, and escalations and camera status, go on as usual. First, the notices of a webhook or
        WeCom group no longer in center.yaml are marked failed: no lane sends them."""
        try:
            self.jobs.fail_unconfigured()
        except Exception:  # the database is away: they wait for the next start, sent by nobody meanwhile
            log.exception("could not mark failed the notices of endpoints no longer in center.yaml")
        lanes = [
            threading.Thread(target=self._lane, args=(lane,), name=f"center-notices-{lane}", daemon=True)
            for lane in self.jobs.lanes
        ]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()

    def _lane(self, lane) -> None:
        while not self.stopping.wait(TICK_S):
            try:
                self.jobs.run_due(lane=lane)
            except Exception:
                log.exception("sending %s notices failed this round; trying again", lane)

    def _spawn(self, target, name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _roster_stat(self) -> tuple | None:
        try:
            st = self.cfg.roster.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload_roster(self) -> bool:
        """Use the roster file again when it changed on disk (saved on another instance's page, or by hand), so
        instances sharing it dispatch by the same roster; one that no longer validates is logged and not used."""
        mark = self._roster_stat()
        if mark is None or mark == self._roster_mark:
            return False
        self._roster_mark = mark
        try:
            roster = load_model(self.cfg.roster, Roster)
        except ConfigError as exc:
            log.error("the roster changed on disk but is not valid; still using the one loaded before: %s", exc)
            return False
        self.loop.roster = self.context.roster = roster
        log.info(
            "the roster changed on disk: %d buildings, %d grids now", len(roster.buildings), len(roster.grids)
        )
        return True

    def _timers(self) -> None:
        last_expire = 0.0
        idle = dt.timedelta(minutes=self.cfg.mqtt.chunk_set_idle_min)
        while not self.stopping.wait(TICK_S):
            try:
                self.reload_roster()
                self.ingest.flush_health()
                with self.sessions.begin() as s:
                    self.loop.escalate_due(s, utcnow())
                now = utcnow().timestamp()
                if now - last_expire > EXPIRE_EVERY_S:
                    self.ingest.expire_chunks(idle)
                    last_expire = now
            except Exception:
                log.exception("the center's timers failed this round; trying again")
            try:  # apart: a sweep that fails (the database away) holds up no escalation, and the reverse
                self.retention.tick()
            except Exception:
                log.exception("the retention sweep failed this round; trying again")
