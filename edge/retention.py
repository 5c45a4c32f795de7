"""Retention under a quota: evidence kept `storage.evidence_days` and deleted after; the expendable goes first.

What lives in storage.dir falls in three classes:
  evidence    one folder per event under events/ (holding the node's event.json): deleted only once older
              than evidence_days and not held;
  expendable  what is known to be disposable: left-over .tmp and partial files, logs (logs/, *.log), old stats
              (stats/), stray files beside the event folders, core dumps: deleted oldest first whenever
              storage.dir holds more than it may;
  kept        everything else: what the node needs to run (its key, the outbox, status, detection switches,
              holds, events.jsonl, feedback) and whatever retention does not know (an operator's file is
              never deleted behind their back); counted in the space, never deleted here.
When what may not be deleted yet fills `warn_share` of the space, a warning is raised; when it fills all of it,
the node reports itself full and goes on capturing and alerting (alerts are tiny; a clip that cannot be
written is logged by the pipeline, never fatal).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from edge.config import StorageConfig
from edge.holds import EVENTS_DIR, HOLDS_FILE, Holds
from edge.publish.evidence import EVENT
from edge.publish.manifest import iso

log = logging.getLogger(__name__)

# Files and folders of storage.dir the node itself needs; names only at its top level.
KEPT_NAMES = frozenset(
    {
        "keys",
        "events.jsonl",
        "outbox.sqlite",
        "outbox.sqlite-wal",
        "outbox.sqlite-shm",
        "outbox.sqlite-journal",
        "status.json",
        "detect.json",
        HOLDS_FILE,
        "feedback",
    }
)
EXPENDABLE_DIRS = frozenset({"logs", "stats", "tmp"})  # top-level folders of disposable files
# Disposable files at the top of storage.dir:
EXPENDABLE_NAMES = ("*.tmp", "*.log", "*.log.*", ".*-partial*", "core", "core.*")
IN_USE_S = 60.0  # an expendable file written this recently may be in use (a .tmp about to be renamed): left;
# one dated further ahead than this was written under a clock since set back, not now
GB = 1_000_000_000


class FileClass(StrEnum):
    EVIDENCE = "evidence"
    KEPT = "kept"
    EXPENDABLE = "expendable"


class Level(StrEnum):
    """How close storage is to putting evidence at risk."""

    OK = "ok"
    WARNING = "warning"  # what may not be deleted yet fills warn_share of the space
    FULL = "full"  # ... all of it: new evidence may not fit


@dataclass(frozen=True)
class Item:
    """One deletable unit: an event's folder, or one file."""

    path: Path
    cls: FileClass
    size: int
    time: float  # Unix time it dates from: the event's start for evidence, else the file's mtime
    event_id: str | None = None


@dataclass(frozen=True)
class Policy:
    quota_bytes: int | None
    free_min_bytes: int
    evidence_s: float
    warn_share: float

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> Policy:
        quota = int(cfg.quota_gb * GB) if cfg.quota_gb is not None else None
        return cls(quota, int(cfg.free_min_gb * GB), cfg.evidence_days * 86400.0, cfg.warn_share)


@dataclass
class Report:
    """What one sweep found and did."""

    used_bytes: int = 0  # storage.dir after the sweep
    budget_bytes: int = 0  # most it may hold now: the quota, or less when the disk is fuller
    evidence_bytes: int = 0
    held_bytes: int = 0
    expendable_bytes: int = 0
    protected_bytes: int = 0  # what may not be deleted yet: kept files and evidence inside its retention
    level: Level = Level.OK
    expired: list[str] = field(default_factory=list)  # event ids deleted for age
    expendable_deleted: int = 0  # files
    freed_bytes: int = 0


def _size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (links are not followed)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # deleted meanwhile
    return total


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return time.time()


def event_time(folder: Path) -> float:
    """When an event began, from its event.json; the folder's mtime when that cannot be read."""
    try:
        started = json.loads((folder / EVENT).read_text()).get("start_utc")
        return datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except (OSError, ValueError, AttributeError, TypeError):
        return _mtime(folder)


def scan(storage: Path) -> list[Item]:
    """Everything under storage.dir, classified."""
    items: list[Item] = []
    try:
        entries = list(storage.iterdir())
    except OSError:
        return items
    for entry in entries:
        name = entry.name
        if name == EVENTS_DIR and entry.is_dir() and not entry.is_symlink():
            items.extend(_events(entry))
        elif name in EXPENDABLE_DIRS and entry.is_dir() and not entry.is_symlink():
            items.extend(_expendable(entry))
        elif name not in KEPT_NAMES and _disposable(entry):
            items.append(Item(entry, FileClass.EXPENDABLE, _size(entry), _mtime(entry)))
        else:
            items.append(Item(entry, FileClass.KEPT, _size(entry), _mtime(entry)))
    return items


def _events(events: Path) -> list[Item]:
    out = []
    try:
        subs = list(events.iterdir())
    except OSError as exc:  # the rest of storage.dir is still swept: expendable files must still go
        log.error("retention: cannot list %s: %s", events, exc)
        return out
    for sub in subs:
        if sub.is_dir() and not sub.is_symlink():
            # Only a folder the node made (it holds event.json) is evidence; any other folder is not retention's
            # to judge (storage.dir shared with other data, a folder an operator put there): kept.
            if _holds_event(sub):
                out.append(Item(sub, FileClass.EVIDENCE, _size(sub), event_time(sub), sub.name))
            else:
                out.append(Item(sub, FileClass.KEPT, _size(sub), _mtime(sub)))
        else:
            out.append(Item(sub, FileClass.EXPENDABLE, _size(sub), _mtime(sub)))  # a stray file, not an event
    return out


def _holds_event(folder: Path) -> bool:
    """Whether the folder holds an event.json; False when the node may not look inside (a folder copied there as
    root): pathlib raises on that, and one such folder must not stop every sweep and so fill the disk."""
    try:
        return (folder / EVENT).is_file()
    except OSError:
        return False


def _disposable(path: Path) -> bool:
    return not path.is_dir() and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in EXPENDABLE_NAMES)


def _expendable(entry: Path) -> list[Item]:
    """One item per file of an expendable folder, so the oldest log lines go before yesterday's."""
    out = []
    for root, _dirs, files in os.walk(entry):
        for fname in files:
            p = Path(root, fname)
            out.append(Item(p, FileClass.EXPENDABLE, _size(p), _mtime(p)))
    return out


def _delete_event(folder: Path) -> None:
    """An event's folder with its event.json last: a deletion cut short (a crash, a file that will not go) leaves
    a folder still known as the node's evidence, which the next sweep finishes."""
    for entry in folder.iterdir():
        if entry.name == EVENT:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (folder / EVENT).unlink(missing_ok=True)
    folder.rmdir()


def _delete(item: Item) -> bool:
    try:
        if item.cls is FileClass.EVIDENCE:
            _delete_event(item.path)
        elif item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path)
        else:
            item.path.unlink()
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.error("retention: cannot delete %s: %s", item.path, exc)
        return False


def sweep(
    storage: Path, policy: Policy, holds: Holds, now: float | None = None, clock: EvidenceClock | None = None
) -> Report:
    """Delete expired evidence, then expendable files oldest first while over budget; say how full it is.
    With a `clock`, an event's age is never more than the time it was seen to pass (see EvidenceClock)."""
    now = time.time() if now is None else now
    holds.refresh()  # a holds file repaired since the last sweep lets evidence go again
    items = scan(storage)
    if clock is not None:
        clock.forget_all_but({it.event_id for it in items if it.cls is FileClass.EVIDENCE})
    report = Report()
    keep: list[Item] = []
    for it in items:
        if it.cls is not FileClass.EVIDENCE:
            keep.append(it)
            continue
        age = now - it.time if clock is None else clock.age(it.event_id, now - it.time)
        if age > policy.evidence_s and _delete_expired(it, holds):
            report.expired.append(it.event_id)
            report.freed_bytes += it.size
            log.info("retention: event %s deleted after %d days", it.event_id, policy.evidence_s // 86400)
        else:
            keep.append(it)
            if now - it.time > policy.evidence_s >= age and clock is not None and not clock.warned:
                clock.warned = True  # once per run: the clock stays where it is until the node restarts
                log.warning(
                    "retention: the wall clock is %.1f days ahead of the time seen passing since event %s was "
                    "found; its evidence (and any like it) is kept until it is %d days old by the time seen "
                    "passing (a restart believes the clock again)",
                    (now - it.time - age) / 86400,
                    it.event_id,
                    policy.evidence_s // 86400,
                )
    held = holds.ids()
    used = sum(it.size for it in keep)
    report.budget_bytes = _budget(storage, policy, used)
    deleted: set[Path] = set()  # a set, not keep.remove() per file: thousands of rotated logs stay linear
    expendable = (i for i in keep if i.cls is FileClass.EXPENDABLE)
    # Oldest first; a file dated ahead of now was written under a clock since set back: among the oldest.
    for it in sorted(expendable, key=lambda i: i.time if i.time <= now + IN_USE_S else -math.inf):
        if used <= report.budget_bytes:
            break
        if abs(now - it.time) >= IN_USE_S and _delete(it):
            used -= it.size
            report.freed_bytes += it.size
            report.expendable_deleted += 1
            deleted.add(it.path)
    keep = [it for it in keep if it.path not in deleted]
    if report.expendable_deleted:
        log.warning("retention: %d expendable files deleted to stay within the quota", report.expendable_deleted)
    return _measure(report, keep, held, policy)


class EvidenceClock:
    """The age of each event's evidence as far as this process can vouch for it: its age by the wall clock when
    first seen, plus the time (monotonic) that has passed since; never more than the wall clock says either.

    Evidence is dated by the wall clock it was recorded under, and the wall clock of a node can jump: set by
    hand, by a bad time server, or stepped by NTP after a boot without a real-time clock or with the internet
    down (the cameras still work on the LAN, and every event of that time is dated by a stale clock). Ages by
    the wall clock alone then delete, at the next sweep, every event the jump made look older than
    evidence_days: all of them for a jump of a month. With this, a jump while the node runs ages nothing;
    evidence already older than evidence_days when first seen (at the node's start) goes by the wall clock.
    A clock stepped forward while the node runs keeps evidence longer (until the node restarts), never shorter."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self.monotonic = monotonic
        self._first: dict[str, tuple[float, float]] = {}  # event id -> (wall-clock age, monotonic) first seen
        self.warned = False  # whether the clock's holding back evidence was logged

    def age(self, event_id: str, wall_age: float) -> float:
        now = self.monotonic()
        first_age, first_seen = self._first.setdefault(event_id, (wall_age, now))
        return min(wall_age, first_age + (now - first_seen))

    def forget_all_but(self, event_ids: set[str]) -> None:
        """Bounded by the evidence on disk: an event deleted (by retention or by hand) is forgotten."""
        for gone in set(self._first) - event_ids:
            del self._first[gone]


def _delete_expired(item: Item, holds: Holds) -> bool:
    """Delete an expired event's evidence unless it is held, decided under the holds' lock (a hold arriving
    from MQTT mid-sweep is either seen here or refused because the evidence is gone)."""
    with holds.unless_held(item.event_id) as deletable:
        return deletable and _delete(item)


def _budget(storage: Path, policy: Policy, used: int) -> int:
    """The most storage.dir may hold: its quota, less when the disk itself would keep under free_min free."""
    try:
        free = shutil.disk_usage(storage).free
    except OSError:
        free = 0
    by_disk = max(0, used + free - policy.free_min_bytes)
    return min(policy.quota_bytes, by_disk) if policy.quota_bytes is not None else by_disk


def _measure(report: Report, keep: list[Item], held: set[str], policy: Policy) -> Report:
    report.used_bytes = sum(it.size for it in keep)
    report.evidence_bytes = sum(it.size for it in keep if it.cls is FileClass.EVIDENCE)
    report.held_bytes = sum(it.size for it in keep if it.cls is FileClass.EVIDENCE and it.event_id in held)
    report.expendable_bytes = sum(it.size for it in keep if it.cls is FileClass.EXPENDABLE)
    report.protected_bytes = report.used_bytes - report.expendable_bytes
    if report.protected_bytes >= report.budget_bytes:
        report.level = Level.FULL
    elif report.protected_bytes >= policy.warn_share * report.budget_bytes:
        report.level = Level.WARNING
    return report


def storage_record(node: str, report: Report, policy: Policy) -> dict:
    """The `storage` event (events.jsonl and MQTT) for a change of level."""
    share = report.protected_bytes / report.budget_bytes if report.budget_bytes else 1.0
    days = round(policy.evidence_s / 86400)
    if report.level is Level.OK:
        message = f"storage ok: {share:.0%} of the space held by evidence not yet {days} days old"
    else:
        full = "FULL: new evidence may not fit" if report.level is Level.FULL else "evidence at risk soon"
        message = (
            f"storage {full}: files that may not be deleted yet (evidence under {days} days old, held evidence, "
            f"the node's own) fill {share:.0%} of {report.budget_bytes / GB:.2f} GB; add disk space, raise "
            "storage.quota_gb, lower storage.evidence_days or release held events"
        )
    return {
        "v": 1,
        "type": "storage",
        "node": node,
        "level": str(report.level),
        "time_utc": iso(time.time()),
        "message": message,
        "used_bytes": report.used_bytes,
        "budget_bytes": report.budget_bytes,
        "quota_bytes": policy.quota_bytes,
        "evidence_bytes": report.evidence_bytes,
        "held_bytes": report.held_bytes,
        "protected_bytes": report.protected_bytes,
        "evidence_days": days,
    }


class Retention:
    """Sweeps storage.dir every `interval_s` in its own thread and reports each change of level (and the level
    found by the first sweep, which the retained MQTT state must say whatever an earlier run left there)."""

    def __init__(
        self,
        storage: Path,
        cfg: StorageConfig,
        holds: Holds,
        on_level: Callable[[Report, Policy, bool], None],  # (report, policy, whether the level changed)
        on_expired: Callable[[list[str]], None] | None = None,  # ids of the events whose evidence a sweep deleted
    ):
        self.storage, self.holds, self.on_level, self.on_expired = storage, holds, on_level, on_expired
        self.configure(cfg)
        self.level = Level.OK
        self._told = False  # whether on_level has heard of any sweep yet
        self.last: Report | None = None
        self.expired_total = 0
        self.expendable_total = 0
        self.wall = time.time  # the clocks of each sweep (a test moves them)
        self.clock = EvidenceClock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def configure(self, cfg: StorageConfig) -> None:
        """Apply the storage settings of a (reloaded) config from the next sweep on."""
        self.policy, self.interval_s = Policy.from_config(cfg), cfg.retention_interval_s

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> Report:
        """One sweep now; tells on_level after the first sweep and whenever the level changed."""
        report = sweep(self.storage, self.policy, self.holds, self.wall(), self.clock)
        self.last = report
        self.expired_total += len(report.expired)
        self.expendable_total += report.expendable_deleted
        changed = report.level != self.level
        if changed or not self._told:
            self.level, self._told = report.level, True
            self.on_level(report, self.policy, changed)
        if report.expired and self.on_expired is not None:  # after the level: a mass expiry must not delay it
            try:
                self.on_expired(list(report.expired))
            except Exception:  # an outbox closed by a reload, a full disk: the sweep itself is done
                log.exception("retention: telling of %d expired events failed", len(report.expired))
        return report

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.exception("retention sweep failed")
            if self._stop.wait(self.interval_s):
                return
