"""Evidence an operator has put on hold (a case under investigation): never deleted automatically.

Kept in storage.dir/holds.json, replaced atomically, so a hold survives restarts and upgrades.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from edge.publish.manifest import iso

log = logging.getLogger(__name__)
HOLDS_FILE = "holds.json"


class Holds:
    """The set of held event ids, with when each hold was placed; safe to use from several threads."""

    def __init__(self, storage: Path):
        self.path = storage / HOLDS_FILE
        self._lock = threading.Lock()
        # Why the file could not be read, if it could not: then no evidence is deleted at all (a hold is
        # never silently forgotten), until an operator repairs or removes the file.
        self.unreadable: str | None = None
        self._held: dict[str, str] = self._load()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
            held = data.get("held") if isinstance(data, dict) else None
            if not isinstance(held, dict):
                raise ValueError('expected {"held": {event id: since}}')
            return {str(k): str(v) for k, v in held.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.unreadable = f"{self.path}: {exc}"
            log.error("cannot read the evidence holds (%s): no evidence will be deleted until it is fixed", exc)
            return {}

    def is_held(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._held

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def set(self, event_id: str, held: bool) -> bool:
        """Hold or release one event; True when that changed anything."""
        with self._lock:
            if self.unreadable:
                log.error("event %s: hold not changed: %s must be repaired first", event_id, self.unreadable)
                return False
            if held == (event_id in self._held):
                return False
            if held:
                self._held[event_id] = iso(time.time())
            else:
                del self._held[event_id]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"held": self._held}, indent=1, sort_keys=True))
            tmp.replace(self.path)
        what = "HELD (never deleted automatically)" if held else "released"
        log.warning("event %s: evidence %s", event_id, what)
        return True
