"""The roster: buildings and their cameras, micro-grids with their workers and leader, the community office.

Validated as strictly as the node config: unknown keys, bad references and overlapping cameras are errors
with `file:line: key.path`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from edge.config import Strict

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]  # ids used in URLs and the database
DUTY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Person(Strict):
    """Someone who is told about a case: by phone, WeCom and/or email."""

    name: str = Field(min_length=1, max_length=80, description="Shown in messages and the API.")
    phone: str | None = Field(
        None, pattern=r"^\+?[0-9 -]{5,20}$", description="Mentioned in WeCom group messages."
    )
    wecom_user: str | None = Field(None, max_length=64, description="WeCom user id, @-mentioned in the group.")
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", description="Where email notices go.")


class Worker(Person):
    """A micro-grid worker (微网格员) and the hours they are on duty (local time)."""

    duty: list[str] = Field(
        default_factory=lambda: ["00:00-24:00"],
        description="Duty windows 'HH:MM-HH:MM' in the center's time zone; a window may run past midnight.",
    )

    @field_validator("duty")
    @classmethod
    def _windows(cls, duty: list[str]) -> list[str]:
        for w in duty:
            m = DUTY.match(w)
            if not m:
                raise ValueError(f"duty window {w!r} is not HH:MM-HH:MM")
            if m.group(1, 2) == m.group(3, 4):
                raise ValueError(f"duty window {w!r} is empty")
        return duty

    def on_duty(self, at: dt.time) -> bool:
        """True when `at` (local wall-clock time) falls in one of the duty windows."""
        minute = at.hour * 60 + at.minute
        for w in self.duty:
            m = DUTY.match(w)
            start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
            if (start <= minute < end) if start < end else (minute >= start or minute < end):
                return True
        return False


class Grid(Strict):
    """A micro-grid (微网格): its workers in order of preference, and its grid leader (网格长)."""

    workers: dict[Name, Worker] = Field(min_length=1, description="Grid workers; the first on duty gets the case.")
    leader: Person = Field(description="Told when a case is not acknowledged in time.")


class CameraRef(Strict):
    node: Name = Field(description="Node id (its MQTT user name).")
    camera: Name = Field(description="Camera name in that node's config.")


class Building(Strict):
    name: str = Field(min_length=1, max_length=80, description="As residents say it: '3号楼'.")
    address: str = Field("", max_length=200)
    floors: int = Field(ge=1, le=200, description="Floors above ground; alerts above it are still kept.")
    grid: Name = Field(description="The micro-grid this building belongs to.")
    facades: dict[Name, list[CameraRef]] = Field(
        default_factory=dict, description="Facade name -> the cameras watching it."
    )


class Roster(Strict):
    version: Literal[1] = 1
    office: Person = Field(description="The community office (社区办公室): told last when nobody acknowledges.")
    grids: dict[Name, Grid] = Field(min_length=1)
    buildings: dict[Name, Building] = Field(min_length=1)

    def cross_problems(self) -> list[tuple[tuple, object, str]]:
        """Rules between sections: every grid referenced exists; a camera watches one facade only."""
        out: list[tuple[tuple, object, str]] = []
        seen: dict[tuple[str, str], str] = {}
        for bid, b in self.buildings.items():
            if b.grid not in self.grids:
                out.append((("buildings", bid, "grid"), b.grid, f"no grid {b.grid!r} under grids:"))
            for facade, cams in b.facades.items():
                for i, cam in enumerate(cams):
                    key = (cam.node, cam.camera)
                    where = f"{bid}.facades.{facade}"
                    if key in seen:
                        why = f"camera {cam.node}/{cam.camera} is already at {seen[key]}"
                        out.append((("buildings", bid, "facades", facade, i), None, why))
                    seen[key] = where
        workers: dict[str, str] = {}
        for gid, g in self.grids.items():
            for wid in g.workers:
                if wid in workers:
                    why = f"worker id {wid!r} is also in grid {workers[wid]}; ids name one person"
                    out.append((("grids", gid, "workers", wid), None, why))
                workers[wid] = gid
        return out

    def building_of(self, node: str, camera: str | None) -> str | None:
        """The building id a node's camera watches, or None when the roster does not know it."""
        for bid, b in self.buildings.items():
            for cams in b.facades.values():
                if any(c.node == node and c.camera == camera for c in cams):
                    return bid
        return None

    def facade_of(self, node: str, camera: str | None) -> str | None:
        for b in self.buildings.values():
            for facade, cams in b.facades.items():
                if any(c.node == node and c.camera == camera for c in cams):
                    return facade
        return None

    def worker_on_duty(self, building: str, at: dt.time) -> tuple[str, Worker] | None:
        """(id, worker) of the first worker of the building's grid on duty at `at`; None when nobody is."""
        grid = self.grids[self.buildings[building].grid]
        return next(((wid, w) for wid, w in grid.workers.items() if w.on_duty(at)), None)

    def buildings_of_worker(self, worker_id: str) -> set[str]:
        grids = {gid for gid, g in self.grids.items() if worker_id in g.workers}
        return {bid for bid, b in self.buildings.items() if b.grid in grids}

    def person(self, ref: str) -> Person | None:
        """A person by reference: 'worker:<id>', 'leader:<grid>' or 'office'."""
        kind, _, ident = ref.partition(":")
        if kind == "office":
            return self.office
        if kind == "leader" and ident in self.grids:
            return self.grids[ident].leader
        if kind == "worker":
            for g in self.grids.values():
                if ident in g.workers:
                    return g.workers[ident]
        return None
