"""Evidence an operator has put on hold (a case under investigation): never deleted automatically.

Kept in storage.dir/holds.json, replaced atomically, so a hold survives restarts and upgrades. Retention
deletes evidence only inside `unless_held`, under the same lock as `set`: a hold either comes first and the
evidence stays, or comes after the deletion and is refused, never answered ON for evidence already gone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.publish.evidence import stored_event
from edge.publish.manifest import iso, write_atomic

log = logging.getLogger(__name__)
HOLDS_FILE = "holds.json"
EVENTS_DIR = "events"  # storage.dir/events/<event id>/: one event's evidence


class Holds:
    """The set of held event ids, with when each hold was placed; safe to use from several threads."""

    def __init__(self, storage: Path):
        self.path = storage / HOLDS_FILE
        self.events = storage / EVENTS_DIR
        self._lock = threading.RLock()  # re-entrant: a hold may be placed by code that runs inside unless_held
        # Why the file could not be read, if it could not: then no evidence is deleted at all (a hold is
        # never silently forgotten), until an operator repairs or removes the file.
        self.unreadable: str | None = None
        self._held: dict[str, str] = {}
        self._read = False  # whether the file was read (or found absent): memory rules from then on
        self.refresh()

    def refresh(self) -> None:
        """Read the file again while it could not be read: an operator repaired or removed it, or what kept it
        from being read (too many open files, an I/O error) has passed. Retention calls this at every sweep, so
        a repaired file takes effect without a restart; a readable file is never read again (memory rules)."""
        with self._lock:
            if self._read:
                return
            try:
                data = json.loads(self.path.read_text())
                held = data.get("held") if isinstance(data, dict) else None
                if not isinstance(held, dict):
                    raise ValueError('expected {"held": {event id: since}}')
                self._held = {str(k): str(v) for k, v in held.items()}
            except FileNotFoundError:
                self._held = {}
            except (OSError, ValueError) as exc:
                why = f"{self.path}: {exc}"
                if why != self.unreadable:  # once per reason, not at every sweep
                    log.error(
                        "cannot read the evidence holds (%s): no evidence will be deleted until it is fixed", exc
                    )
                self.unreadable = why
                return
            if self.unreadable is not None:
                log.warning("the evidence holds are readable again (%d held): retention resumes", len(self._held))
            self.unreadable, self._read = None, True

    def is_held(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._held

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._held)

    @contextmanager
    def unless_held(self, event_id: str) -> Iterator[bool]:
        """True when the event's evidence may be deleted (not held, holds readable); no hold changes meanwhile."""
        with self._lock:
            yield self.unreadable is None and event_id not in self._held

    def set(self, event_id: str, held: bool) -> bool:
        """Hold or release one event; True when that changed anything. Only evidence stored here can be held,
        and a hold that cannot be saved is not taken (a hold only in memory would end at the next restart)."""
        with self._lock:
            self.refresh()
            if self.unreadable:
                log.error("event %s: hold not changed: %s must be repaired first", event_id, self.unreadable)
                return False
            if held == (event_id in self._held):
                return False
            if held and stored_event(self.events, event_id) is None:
                log.warning("event %s: not held: its evidence is not (or no longer) on this node", event_id)
                return False
            after = dict(self._held)
            if held:
                after[event_id] = iso(time.time())
            else:
                del after[event_id]
            try:  # synced before and after the rename: a hold a dispatcher was told of survives a power cut
                write_atomic(self.path, json.dumps({"held": after}, indent=1, sort_keys=True).encode())
            except OSError as exc:
                log.error("event %s: hold not changed: cannot write %s: %s", event_id, self.path, exc)
                return False
            self._held = after
        what = "HELD (never deleted automatically)" if held else "released"
        log.warning("event %s: evidence %s", event_id, what)
        return True
