"""What the pages show of cases: rows of the alert list, an alert's evidence, people's names, durations.

Queries here only read (the reading sessions); every change goes through center.loop like the JSON API's."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session, object_session

from center.api import Caller, Context
from center.clock import told_offset
from center.db import Case, Event, Evidence, History, Job, Node, User, utcnow
from center.files import OutsideDataDir
from center.ingest import parse_time
from center.loop import SYSTEM
from center.models import MAX_FLOORS, TRANSITIONS, Action, CaseState, Role
from center.queries import CaseQuery, cases_seen, local_midnight
from center.web import charts

LIST_LIMIT = 200  # rows on one page of the alert list; older ones are on the next pages
MAX_PAGE = 100_000  # a page asked for past this is a typo or a probe: the first page is shown
MAX_METRES = 10_000.0  # along or up a facade: more is not a measurement
YEARS = range(1970, 9999)  # dates asked for in a query string: a day after the last or before the first of
# these overflows the calendar (or the time zone's offset) when the database is asked, a 500 for a typo


@dataclass
class Filters:
    """The alert list's filters, from its query string (each empty: any)."""

    state: CaseState | None = None
    building: str | None = None
    level: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive: the whole day
    page: int = 1  # of LIST_LIMIT cases, newest first


def visible_cases(s: Session, who: Caller, f: Filters, tz: str, limit: int = LIST_LIMIT) -> list[Case]:
    """Cases the caller may see, newest alert first, filtered (dates are local days of the center's zone), from
    the start of the filters' page."""
    until = f.until + dt.timedelta(days=1) if f.until else None
    query = CaseQuery(
        state=f.state,
        building=f.building,
        level=f.level,
        since=local_midnight(f.since, tz) if f.since else None,
        until=local_midnight(until, tz) if until else None,
    )
    return list(s.scalars(cases_seen(query, who.buildings).offset((f.page - 1) * LIST_LIMIT).limit(limit)))


def latest_mark(s: Session, who: Caller) -> tuple[int, int]:
    """(newest case id, newest history id) the caller may see: when either moves, their list changed."""
    cases = select(func.max(Case.id))
    hist = select(func.max(History.id)).join(Case, History.case_id == Case.id)
    if who.buildings is not None:
        mine = sorted(who.buildings)
        cases, hist = cases.where(Case.building.in_(mine)), hist.where(Case.building.in_(mine))
    return s.scalar(cases) or 0, s.scalar(hist) or 0


def person_label(ctx: Context, ref: str | None, t) -> str:
    """'worker:zhang' -> 张伟; 'leader:g1' -> the leader's name; 'office' -> the office."""
    if not ref:
        return t("none")
    person = ctx.roster.person(ref)
    if ref == "office":
        return t("office")
    return person.name if person else ref


def actor_label(ctx: Context, s: Session, actor: str, t) -> str:
    """Who did a step of a case's history: a grid worker by their roster name (张伟 · zhang), anyone else by
    their user name, the center itself in the viewer's words."""
    if actor == SYSTEM:
        return t("actor.system")
    worker = s.scalar(select(User.worker).where(User.name == actor))
    person = ctx.roster.person(f"worker:{worker}") if worker else None
    return f"{person.name} · {actor}" if person and person.name != actor else actor


def waited(case: Case, now: dt.datetime) -> dt.timedelta:
    """How long the case has waited for someone to take it on (to acknowledgement, or until now)."""
    end = case.acknowledged_at or case.checked_at or case.resolved_at or now
    return max(dt.timedelta(0), end - case.created_at)


def duration(d: dt.timedelta | float | None, t) -> str:
    if d is None:
        return t("none")
    seconds = d.total_seconds() if isinstance(d, dt.timedelta) else d
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} {t('minutes')}" if minutes else f"{int(seconds)} {t('seconds')}"
    return f"{minutes // 60} {t('hours')} {minutes % 60} {t('minutes')}"


def origin_of(ev: Event) -> dict:
    """The origin the node reported (pixel, floor, metres along the facade and above ground), or {}."""
    origin = (ev.body or {}).get("origin")
    return origin if isinstance(origin, dict) else {}


def _num(x) -> float | None:
    """A number a node sent, as a finite float; None for anything else (a string, a bool, NaN, 10**400)."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except OverflowError:  # JSON's integers are unbounded: 10**400 fits no float
        return None
    return f if math.isfinite(f) else None


def metres(x) -> float | None:
    """A length the node reported, when it is a number a facade can have; None for anything else."""
    f = _num(x)
    return f if f is not None and abs(f) <= MAX_METRES else None


def drawn_origin(origin: dict) -> charts.Origin:
    """The origin as the elevation draws it: numbers only, and a floor a building can have. The node's message
    is stored as it came, so a string, a bool or a floor of 10**9 must not break (or swamp) the drawing."""
    floor = origin.get("floor")
    floor = floor if type(floor) is int and 0 < floor <= MAX_FLOORS else None
    return charts.Origin(metres(origin.get("facade_x_m")), metres(origin.get("height_m")), floor)


def window_label(ctx: Context, ev: Event | None) -> str:
    """Where on the facade: its name and metres from the facade's left edge, as the node measured."""
    if ev is None:
        return ""
    facade = ctx.roster.facade_of(ev.node, ev.camera) or ""
    x = metres(origin_of(ev).get("facade_x_m"))
    return f"{facade} {x:.1f} m" if x is not None else facade


# The center's own notes on evidence trust (center.trust, center.photos), kept in English in the database and
# the API; the pages show them in the viewer's language. A note matching none is shown as it is.
TRUST_NOTES = (
    (re.compile(r"no signed manifest lists it yet"), "note.unsigned"),
    (re.compile(r"signed by the node's key (?P<key>\S+)"), "note.verified"),
    (re.compile(r"the node is not registered \(edge-center node add\)"), "note.unregistered"),
    (re.compile(r"the signature does not match the manifest \(altered\)"), "note.altered"),
    (re.compile(r"signed by key (?P<key>\S+), not the node's registered key"), "note.other_key"),
    (re.compile(r"signed for event (?P<name>.+), not the event it was sent under"), "note.other_event"),
    (re.compile(r"signed for node (?P<name>.+), not the node it was sent under"), "note.other_node"),
    (re.compile(r"uploaded by (?P<who>.+)"), "note.uploaded"),
)


def trust_note(note: str | None, t) -> str:
    """A stored trust note in the viewer's language."""
    for pattern, key in TRUST_NOTES:
        m = pattern.fullmatch(note or "")
        if m:
            return t(key, **m.groupdict())
    return note or ""


TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # how every page (and notice) shows a time, in the center's zone


def local_text(t: dt.datetime, zone: str | ZoneInfo, fmt: str = TIME_FORMAT) -> str:
    """An aware time as the pages show it: in the center's zone (a name or a ZoneInfo)."""
    return t.astimezone(zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)).strftime(fmt)


@dataclass
class Row:
    case: Case
    building: str
    floor: str
    window: str
    cameras: str
    at: str
    with_: str
    waited: str


def rows(ctx: Context, cases: list[Case], t) -> list[Row]:
    zone, now = ZoneInfo(ctx.cfg.timezone), utcnow()
    out = []
    for c in cases:
        b = ctx.roster.buildings.get(c.building) if c.building else None
        first = c.events[0] if c.events else None
        out.append(
            Row(
                case=c,
                building=b.name if b else (c.building or t("none")),
                floor=str(c.floor) if c.floor is not None else t("none"),
                window=window_label(ctx, first),
                cameras=", ".join(f"{e.node}/{e.camera}" for e in c.events),
                at=local_text(c.alert_at, zone),
                with_=person_label(ctx, c.assignee, t),
                waited=duration(waited(c, now), t),
            )
        )
    return out


@dataclass
class EventView:
    event: Event
    facade: str | None
    origin: dict
    still: Evidence | None = None
    clip: Evidence | None = None
    original: Evidence | None = None
    manifest: Evidence | None = None
    signed_files: dict = field(default_factory=dict)  # name -> {sha256, bytes} as the node signed them
    files: list[Evidence] = field(default_factory=list)
    clip_late: bool = False  # no clip CLIP_LATE after the alert came
    node_offline: bool = False  # and its node says it is offline (it sends the clip once back)
    clock_offset: dt.timedelta | None = None  # the center's clock minus the node's, when it was off (center.clock)
    node_alert_at: dt.datetime | None = None  # the alert time as the node's clock told it


CLIP_LATE = dt.timedelta(minutes=5)  # a node sends its clip a minute or so after the alert, later in a burst


def event_views(ctx: Context, case: Case) -> list[EventView]:
    out = []
    s = object_session(case)
    for e in case.events:
        view = EventView(e, ctx.roster.facade_of(e.node, e.camera), origin_of(e), files=list(e.evidence))
        node = s.get(Node, e.node) if s is not None else None
        view.node_offline = node is not None and node.available == "offline"
        for item in e.evidence:  # the newest of each kind (a clip may come again, complete)
            attr = {"snapshot": "still", "clip": "clip", "original": "original", "manifest": "manifest"}.get(
                item.kind
            )
            if attr:
                setattr(view, attr, item)
        if view.manifest is not None:
            view.signed_files = _signed_files(ctx, view.manifest)
        view.clip_late = view.clip is None and e.received_at < utcnow() - CLIP_LATE
        # As ingest read it: a node whose clock was before 2000 (a dead RTC) sends no alert_utc, only queued_utc.
        view.node_alert_at = parse_time(e.body.get("alert_utc")) or parse_time(e.body.get("queued_utc"))
        view.clock_offset = told_offset(view.node_alert_at, e.alert_at)  # center.clock moved it
        out.append(view)
    return out


def _signed_files(ctx: Context, manifest: Evidence) -> dict:
    try:
        body = json.loads(ctx.files.path(manifest.path).read_bytes())["manifest"]
        return {str(k): v for k, v in body["files"].items() if isinstance(v, dict)}
    except (OSError, ValueError, KeyError, TypeError, OutsideDataDir):
        return {}


def case_mark(s: Session, case: Case) -> str:
    """What the case's page shows, in one token that moves when any of it does: its history, the alerts joined
    to it and their nodes' holds, its evidence and each file's trust, its notices and their states."""
    events = select(Event.id).where(Event.case_id == case.id)
    mine = Evidence.event_pk.in_(events) | (Evidence.case_id == case.id)
    held = func.sum(cast(Event.node_hold, Integer))
    queries = [
        select(func.max(History.id)).where(History.case_id == case.id),
        select(func.count(), func.count(Event.node_hold), held, func.max(Event.node_hold_at)).where(
            Event.case_id == case.id
        ),
        select(Evidence.trust, func.count(), func.max(Evidence.id)).where(mine).group_by(Evidence.trust),
        select(Job.state, func.count(), func.max(Job.id)).where(Job.case_id == case.id).group_by(Job.state),
    ]
    seen = [sorted(map(tuple, s.execute(q).all()), key=repr) for q in queries]  # groups come in any order
    return hashlib.sha256(repr(seen).encode()).hexdigest()[:16]


def photos_of(s: Session, case: Case) -> list[Evidence]:
    return list(s.scalars(select(Evidence).where(Evidence.case_id == case.id).order_by(Evidence.id)))


def notices_of(s: Session, case: Case) -> list[Job]:
    return list(s.scalars(select(Job).where(Job.case_id == case.id).order_by(Job.id)))


def allowed_actions(case: Case, who: Caller) -> list[Action]:
    """The loop's buttons this person may press on this case now (the loop refuses the rest anyway)."""
    state = CaseState(case.state)
    acts = [a for (a, before) in TRANSITIONS if before == state]
    if who.role == Role.GRID_WORKER:
        acts = [a for a in acts if a not in (Action.CONFIRM, Action.DISMISS)]
    return list(dict.fromkeys(acts))


def evidence_case(s: Session, item: Evidence) -> Case | None:
    """The case a file belongs to (through its event, or directly for a photo)."""
    if item.event_pk is not None:
        ev = s.get(Event, item.event_pk)
        return ev.case if ev else None
    return s.get(Case, item.case_id) if item.case_id else None


# -- node and camera health, as the nodes page shows it ----------------------------------------------------
# Status and stats are kept as each node sent them (valid JSON, nothing more): every value is checked for its
# type (`_num` above, `_text`), so one node's odd message shows as "—" instead of failing the page for every node.
def _text(x) -> str | None:
    return x[:200] if isinstance(x, str) else None


CAMERA_STATES = ("starting", "online", "offline", "ended")  # docs/schemas/status.schema.json


@dataclass
class NodeHealth:
    disk_free_gb: float | None
    disk_used_percent: float | None
    cpu_percent: float | None
    cameras: dict  # camera -> its part of the stats (a dict)


def node_health(node) -> NodeHealth:
    stats = node.stats if isinstance(node.stats, dict) else {}
    cams = stats.get("cameras")
    cams = {k: c for k, c in cams.items() if isinstance(c, dict)} if isinstance(cams, dict) else {}
    return NodeHealth(
        _num(stats.get("disk_free_gb")), _num(stats.get("disk_used_percent")), _num(stats.get("cpu_percent")), cams
    )


@dataclass
class CameraHealth:
    node: str
    camera: str
    state: str | None
    reason: str | None
    since: float | None  # Unix time of the last change of state
    fps: float | None
    dropped: float | None
    detect: bool  # detection on (a node that does not say is taken as on, its default)
    problems: list[str]  # camera problems still raised (covered, moved, ...), validated when they came


def camera_health(row, live: dict) -> CameraHealth:
    st = row.status if isinstance(row.status, dict) else {}
    fps = _num(live.get("fps"))
    dropped = _num(live.get("dropped"))
    return CameraHealth(
        row.node,
        row.camera,
        _text(st.get("state")) or row.state,
        _text(st.get("reason")),
        _num(st.get("since")),
        fps if fps is not None else _num(st.get("fps")),
        dropped if dropped is not None else _num(st.get("dropped")),
        live.get("detect") is not False,
        list((row.problems or {}).get("active", [])),
    )
