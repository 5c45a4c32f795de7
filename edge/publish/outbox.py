"""Store and forward: every outgoing MQTT message is written to SQLite first and deleted only on PUBACK.

Messages leave by priority (alerts before status before clips), oldest first within a priority. When the
outbox outgrows its bound, the least valuable go first: clip chunks, then snapshots, then stats; alerts
and event updates are never dropped (they are tiny); every drop is counted and reported.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Kind(StrEnum):
    """What an outbox message is; the value is what the `kind` column holds (keep them: old rows use them)."""

    ALERT = "alert"  # a new fall: the event message that matters most
    EVENT = "event"  # every other event message (update, end, clip_ready, original_ready)
    COMMAND = "command"  # an answer to a command (detect/state)
    STATUS = "status"
    STATS = "stats"
    SNAPSHOT = "snapshot"
    CHUNK = "chunk"


# Lower number leaves first. Drop order when full is the reverse: chunks first.
PRIORITY = {
    Kind.ALERT: 0,
    Kind.EVENT: 1,
    Kind.COMMAND: 2,
    Kind.STATUS: 3,
    Kind.STATS: 4,
    Kind.SNAPSHOT: 5,
    Kind.CHUNK: 6,
}
DROPPABLE = (Kind.CHUNK, Kind.SNAPSHOT, Kind.STATS)

_WAL_LIMIT_BYTES = 16 << 20  # the log is cut back to this after a checkpoint: a few batches of chunks

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    coalesce_key TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS dropped (kind TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class OutMessage:
    seq: int
    kind: Kind | str  # a str only for a row some other version wrote with a kind this one does not know
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class NewMessage:
    """A message to queue: with a coalesce key, an older unsent message with the same key is replaced."""

    kind: Kind
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    coalesce_key: str | None = None


class Outbox:
    """A durable queue of MQTT messages; safe to use from several threads."""

    def __init__(self, path: Path, max_bytes: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Queued messages are evidence and alerts: 0600, whatever the umask; SQLite gives its -wal and
        # -shm files the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        path.chmod(0o600)
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an accepted alert survives a power cut
        # The write-ahead log keeps its largest size otherwise: a burst of clips would hold that disk for good.
        self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # Files not queued whole whose chunks could not be deleted yet (a full disk): never sent, and each later
        # write tries to delete them first. Lost with the process: after a restart such a part is sent, and the
        # center discards a file it never gets whole.
        self._unfinished: set[str] = set()

    def put(
        self,
        kind: Kind,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        coalesce_key: str | None = None,
    ) -> int:
        """Store a message; with a coalesce key, an older unsent message with the same key is replaced."""
        return self.put_many([NewMessage(kind, topic, payload, qos, retain, coalesce_key)])[0]

    def put_many(self, messages: Iterable[NewMessage]) -> list[int]:
        """Store messages in one transaction, all or none; returns their sequence numbers.

        A batch costs one sync to disk, not one per message (retention emptying thousands of retained answers
        at once, a file's chunks). The outbox is locked meanwhile: keep batches to a few MB, and `messages`
        must not use this outbox. The bound is enforced once, after the batch: the chunks of one file go whole.
        """
        with self._lock:
            self._drop_unfinished()
            with self._transaction():
                seqs = self._insert(messages)
                self._enforce_bound()
        return seqs

    def _insert(self, messages: Iterable[NewMessage]) -> list[int]:
        """Insert messages within the caller's transaction; returns their sequence numbers."""
        seqs = []
        for m in messages:
            kind = Kind(m.kind)  # a plain string is accepted, an unknown kind is not
            if m.coalesce_key is not None:
                self._db.execute("DELETE FROM outbox WHERE coalesce_key = ?", (m.coalesce_key,))
            cur = self._db.execute(
                "INSERT INTO outbox (kind, priority, topic, payload, qos, retain, coalesce_key, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, PRIORITY[kind], m.topic, m.payload, m.qos, int(m.retain), m.coalesce_key, time.time()),
            )
            seqs.append(int(cur.lastrowid))
        return seqs

    def put_file(self, topic: str, chunks: list[bytes], batch_bytes: int) -> bool:
        """Queue a file's chunks, `batch_bytes` to a transaction; False when the bound dropped the file meanwhile.

        Only whole files wait: when the bound drops the file's first batches, the rest is not queued after them,
        and when a batch fails (a full disk), the batches before it are taken back before the error is raised.
        Between batches an alert is queued without waiting for the whole file (an original is up to 200 MiB).
        """
        with self._lock:
            self._drop_unfinished()
            if topic in self._unfinished:  # its new chunks would go with the old part when that goes
                raise sqlite3.OperationalError(f"database or disk is full: an unsent part of {topic} remains")
        batch: list[NewMessage] = []
        size = 0
        try:
            for i, chunk in enumerate(chunks):
                batch.append(NewMessage(Kind.CHUNK, topic, chunk))
                size += len(chunk)
                if size >= batch_bytes or i == len(chunks) - 1:
                    with self._lock, self._transaction():
                        self._insert(batch)
                        cut = self._enforce_bound()
                    batch, size = [], 0
                    if topic in cut:
                        return False
        except BaseException:
            self._take_back(topic)
            raise
        return True

    def _take_back(self, topic: str) -> None:
        """Delete the queued chunks of a file that could not be queued whole. On a disk too full even for that,
        they are held back from sending, and each later write tries again (`_drop_unfinished`)."""
        with self._lock:
            self._unfinished.add(topic)
            self._drop_unfinished()

    def _drop_unfinished(self) -> None:
        """Delete the chunks of files not queued whole, in a transaction of their own (the caller holds the lock).

        On a disk too full even for that they stay held back, and the next write tries again first: never in
        the write's own transaction, which an alert's must not fail for."""
        if not self._unfinished:
            return
        try:
            with self._transaction():
                for topic in self._unfinished:
                    self._db.execute("DELETE FROM outbox WHERE kind = ? AND topic = ?", (Kind.CHUNK, topic))
        except sqlite3.Error:
            return
        self._unfinished.clear()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One explicit transaction, rolled back on any error.

        With isolation_level=None, `with self._db` opens none: each statement would commit on its own, and the
        DELETE of a coalesced older message would stand when the INSERT of its replacement fails (disk full).
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back by itself (SQLITE_FULL can)
                self._db.execute("ROLLBACK")
            raise

    def next_batch(self, limit: int, exclude: set[int]) -> list[OutMessage]:
        """Up to `limit` messages to send next, skipping those already in flight."""
        with self._lock:
            held = sorted(self._unfinished)  # never sent: parts of files that could not be queued whole
            rows = self._db.execute(
                "SELECT seq, kind, topic, payload, qos, retain FROM outbox"
                f" WHERE topic NOT IN ({', '.join('?' * len(held))}) ORDER BY priority, seq LIMIT ?",
                (*held, limit + len(exclude)),
            ).fetchall()
        return [OutMessage(s, _kind(k), t, bytes(p), q, bool(r)) for s, k, t, p, q, r in rows if s not in exclude][
            :limit
        ]

    def ack(self, seq: int) -> None:
        """The broker has it: forget the message."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def waiting(self, topic: str) -> bool:
        """Whether a message for `topic` is still queued (not yet acknowledged by the broker)."""
        with self._lock:
            if topic in self._unfinished:  # what is left of it is never sent: it may be queued again
                return False
            return (
                self._db.execute("SELECT 1 FROM outbox WHERE topic = ? LIMIT 1", (topic,)).fetchone() is not None
            )

    def depth(self) -> tuple[int, int]:
        """(messages, bytes) waiting."""
        with self._lock:
            n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        return int(n), int(size)

    def oldest(self) -> float | None:
        """Unix time the oldest waiting message was queued; None when none waits."""
        with self._lock:
            (created,) = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()
        return created

    def dropped(self) -> dict[Kind | str, int]:
        with self._lock:
            return {_kind(k): n for k, n in self._db.execute("SELECT kind, count FROM dropped").fetchall()}

    def _enforce_bound(self) -> set[str]:
        """Drop the least valuable messages until the outbox fits its bound; returns the topics dropped from."""
        (size,) = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        topics: set[str] = set()
        for kind in DROPPABLE:
            while size > self.max_bytes:
                dropped = self._drop_oldest(kind)
                if dropped is None:
                    break
                size -= dropped[0]
                topics.add(dropped[1])
        return topics

    def _drop_oldest(self, kind: Kind) -> tuple[int, str] | None:
        """Drop the oldest message of `kind` (a chunk: its file's every queued chunk); (bytes freed, its topic),
        None when there is none.

        A file missing one chunk never completes at the center: the rest of its chunks go with it, so only
        whole files wait, and asking for an original again queues all of it (`waiting`).
        """
        row = self._db.execute(
            "SELECT seq, topic FROM outbox WHERE kind = ? ORDER BY seq LIMIT 1", (kind,)
        ).fetchone()
        if row is None:
            return None
        # Two statements for a whole file, not two per chunk: a clip is hundreds, under the lock of a put.
        where, args = ("kind = ? AND topic = ?", (kind, row[1])) if kind == Kind.CHUNK else ("seq = ?", (row[0],))
        n, freed = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE {where}", args
        ).fetchone()
        self._db.execute(f"DELETE FROM outbox WHERE {where}", args)
        self._db.execute(
            "INSERT INTO dropped (kind, count) VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET count = count + ?",
            (kind, n, n),
        )
        return int(freed), row[1]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _kind(value: str) -> Kind | str:
    """The Kind of a stored row; an unknown one (written by another version, after a rollback, say) stays a
    string, so the message is still sent instead of stopping the sender."""
    try:
        return Kind(value)
    except ValueError:
        return value
