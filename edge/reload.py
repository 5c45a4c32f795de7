"""What a reloaded config (SIGHUP, `systemctl reload edge`) changes, decided before anything is touched.

A camera whose source, frame rate or capture settings changed is reconnected alone; one added or removed is
started or stopped alone; any other camera setting (thresholds, masks, calibration, recording) reaches its
running pipeline without a reconnect. MQTT and storage settings are applied live. What cannot change
without a restart (the node's id, storage.dir, the metrics address) makes the reload refused, and the
running config is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.config import CameraConfig, EdgeConfig

RECONNECT_FIELDS = ("source", "fps", "capture")  # a change in these needs a new connection to the camera


class ReloadRefused(Exception):
    """The new config is valid but cannot be applied to a running node."""


@dataclass
class ReloadPlan:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reconnected: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)  # new settings, same connection
    unchanged: list[str] = field(default_factory=list)
    mqtt: bool = False
    storage: bool = False

    def summary(self) -> str:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("reconnected", self.reconnected),
                ("new settings for", self.reconfigured),
            )
            if names
        ]
        sections = (("MQTT settings", self.mqtt), ("storage settings", self.storage))
        parts += [what for what, changed in sections if changed]
        return "; ".join(parts) or "nothing changed"


_FIXED = (
    ("node.id", lambda c: c.node.id),
    ("storage.dir", lambda c: c.storage.dir),
    ("node.metrics.listen", lambda c: c.node.metrics.listen),
)


def plan_reload(old: EdgeConfig, new: EdgeConfig, only: list[str] | None = None) -> ReloadPlan:
    """How to go from the running config to `new`; ReloadRefused when a restart is needed instead.

    `only`: the cameras the node was told to run (`edge run --camera`); others in the file stay off.
    """
    for name, get in _FIXED:
        if get(old) != get(new):
            raise ReloadRefused(f"{name} changed ({get(old)} -> {get(new)}): that needs a restart")
    running = {n: c for n, c in old.cameras.items() if not only or n in only}
    wanted = {n: c for n, c in new.cameras.items() if not only or n in only}
    if not wanted:
        raise ReloadRefused(f"none of the cameras this node runs ({', '.join(only or [])}) is in the new config")
    plan = ReloadPlan(
        added=sorted(set(wanted) - set(running)),
        removed=sorted(set(running) - set(wanted)),
        mqtt=old.mqtt != new.mqtt,
        storage=old.storage != new.storage,
    )
    for name in sorted(set(wanted) & set(running)):
        if _connection(running[name]) != _connection(wanted[name]):
            plan.reconnected.append(name)
        elif running[name] != wanted[name]:
            plan.reconfigured.append(name)
        else:
            plan.unchanged.append(name)
    return plan


def _connection(cam: CameraConfig) -> dict:
    return cam.model_dump(include=set(RECONNECT_FIELDS))
