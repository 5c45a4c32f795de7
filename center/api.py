"""The JSON API (FastAPI; its OpenAPI schema at /openapi.json): cases and their loop, roster, nodes, stats.

Every call needs `Authorization: Bearer <token>` (edge-center user add). Roles: admin, dispatcher, grid worker;
a grid worker sees and acts on the cases of their own buildings only.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from center.auth import user_of
from center.config import CenterConfig
from center.counters import Drops
from center.db import Camera, Case, Event, Evidence, Job, Node, User, write_audit
from center.files import EvidenceFiles, OutsideDataDir, media_type
from center.loop import Loop, Refused
from center.models import Action, CaseState, JobState, Level, Role, Trust, Verdict
from center.photos import MAX_PHOTO_BYTES, is_jpeg, keep_photo
from center.queries import CaseQuery, cases_seen
from center.retention import DiskState
from center.roster import Roster
from center.stats import Stats, stats_of

MAX_PAGE = 500  # cases in one answer
MAX_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL): a larger one in an address is no row,
# and handed to the database it is an overflow (a 500), so it is refused as malformed (422) first
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


@dataclass
class Context:
    cfg: CenterConfig
    roster: Roster
    sessions: sessionmaker
    readers: sessionmaker  # make_sessions(readonly=True): queries that never hold SQLite's write lock
    loop: Loop
    files: EvidenceFiles
    drops: Drops
    publish: Callable[[str, bytes], None] | None = None  # MQTT to nodes (the pages' detection switch)
    disk: Callable[[], DiskState | None] | None = None  # data_dir's disk as the retention guard last measured it


@dataclass
class Caller:
    name: str
    role: Role
    buildings: set[str] | None  # None: every building

    @property
    def staff(self) -> bool:
        """A dispatcher or an admin: the office, who act on every building and see how notices went."""
        return self.role != Role.GRID_WORKER

    def may_see(self, case: Case) -> bool:
        return self.buildings is None or case.building in self.buildings

    @classmethod
    def of(cls, user: User, roster: Roster) -> "Caller":
        """The user as the API and the pages see them: a grid worker sees their own buildings only."""
        role = Role(user.role)
        return cls(
            user.name, role, roster.buildings_of_worker(user.worker or "") if role == Role.GRID_WORKER else None
        )


# -- response models (the OpenAPI schema the pages are built on) -------------------------------------------
class EvidenceOut(BaseModel):
    id: int
    kind: str = Field(description="snapshot | clip | original | manifest | photo")
    sha256: str
    bytes: int
    trust: Trust
    trust_note: str | None
    received_at: dt.datetime
    url: str


class EventOut(BaseModel):
    node: str
    event_id: str
    camera: str | None
    level: str | None
    score: float | None
    floor: int | None
    alert_at: dt.datetime | None
    node_registered: bool = Field(description="false: the node's key is not registered; its evidence is untrusted")
    node_hold: bool | None = Field(
        description="what the node last said of its evidence hold (events/<id>/hold/state): true kept past "
        "retention, false not, null not asked or not answered yet"
    )
    node_hold_at: dt.datetime | None = Field(description="when the center heard that answer")
    evidence: list[EvidenceOut]


class HistoryOut(BaseModel):
    action: str
    actor: str
    at: dt.datetime
    detail: dict | None


class CaseOut(BaseModel):
    id: int
    state: CaseState
    level: str
    building: str | None
    building_name: str | None
    floor: int | None
    alert_at: dt.datetime
    created_at: dt.datetime
    assignee: str | None = Field(
        description="who must act now: 'worker:<id>', 'leader:<grid>' or 'office' (a suspected alert to review,"
        " or the last escalation step); it follows every escalation"
    )
    escalation: int = Field(
        description="0 the worker on duty (for a suspected alert: the office's review), 1 the grid leader, "
        "2 the office"
    )
    dispatched_at: dt.datetime | None = Field(None, description="when it was (last) dispatched")
    escalate_at: dt.datetime | None = Field(
        None, description="when it escalates unless acknowledged (dispatched) or reviewed (new)"
    )
    acknowledged_by: str | None
    acknowledged_at: dt.datetime | None
    checked_by: str | None
    checked_at: dt.datetime | None
    resolved_by: str | None
    resolved_at: dt.datetime | None
    verdict: Verdict | None
    note: str | None
    cameras: list[str] = Field(description="node/camera of every alert in the case")


class JobOut(BaseModel):
    id: int
    case_id: int | None
    channel: str
    target: str | None = Field(description="where it went; null in a grid worker's copy")
    state: JobState
    attempts: int
    due_at: dt.datetime
    last_error: str | None
    done_at: dt.datetime | None


def notice_out(job, staff: bool) -> JobOut:
    """A case's notice; a grid worker's copy leaves out where it went (others' e-mail addresses, phone numbers)
    and the sender's error, which are for the office to act on."""
    out = JobOut.model_validate(job, from_attributes=True)
    return out if staff else out.model_copy(update={"target": None, "last_error": None})


class CaseDetail(CaseOut):
    events: list[EventOut]
    photos: list[EvidenceOut]
    history: list[HistoryOut]
    notices: list[JobOut]
    held: bool = Field(description="the nodes keep this case's evidence past retention (released: false)")


class ActionIn(BaseModel):
    verdict: Verdict | None = Field(None, description="check, resolve: what was found on site")
    note: str | None = Field(None, max_length=2000)

    @field_validator("note")
    @classmethod
    def _no_nul(cls, note: str | None) -> str | None:
        return note.replace("\x00", "") if note else note  # PostgreSQL keeps no NUL in text


class HoldIn(ActionIn):
    hold: bool = Field(description="true: keep the evidence at the nodes past retention; false: release it")


class ReassignIn(BaseModel):
    to: str = Field(max_length=80, description="worker:<id>, leader:<grid> or office (GET the case's grid first)")


class CameraOut(BaseModel):
    camera: str
    state: str | None
    status: dict | None
    updated_at: dt.datetime
    problems: dict | None = Field(
        None, description="camera problems still raised: {active: [covered, ...], at_s}; null until reported"
    )


class NodeOut(BaseModel):
    name: str
    registered: bool
    key_id: str | None
    available: str | None
    last_seen: dt.datetime | None
    stats: dict | None
    stats_at: dt.datetime | None
    storage: dict | None = Field(None, description="the node's latest storage level (storage.schema.json)")
    cameras: list[CameraOut]


class FeedbackOut(BaseModel):
    node: str
    event_id: str
    camera: str | None
    case: int
    verdict: Verdict
    score: float | None
    floor: int | None
    alert_at: dt.datetime | None


class Me(BaseModel):
    name: str
    role: Role
    buildings: list[str] | None


def create_app(ctx: Context) -> FastAPI:
    app = FastAPI(
        title="edge-center",
        version="1",
        description="The community center's API: alerts of thrown objects, their dispatch and the closed loop.",
    )
    bearer = HTTPBearer(auto_error=False)

    def db():
        with ctx.readers() as s:
            yield s

    def caller(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)], s: Annotated[Session, Depends(db)]
    ) -> Caller:
        user = user_of(s, creds.credentials) if creds else None
        if user is None:
            raise HTTPException(401, "a valid bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
        return Caller.of(user, ctx.roster)

    def staff(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.staff:
            raise HTTPException(403, "for dispatchers and admins")
        return who

    def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role != Role.ADMIN:
            raise HTTPException(403, "for admins")
        return who

    Db = Annotated[Session, Depends(db)]
    Who = Annotated[Caller, Depends(caller)]
    Staff = Annotated[Caller, Depends(staff)]
    Admin = Annotated[Caller, Depends(admin)]

    def audit(s: Session, request: Request, who: Caller, action: str, case_id: int, detail: dict) -> None:
        # The same log as the pages write, in the change's own transaction: who changed a case matters to
        # the police whichever way it was done.
        address = request.client.host if request.client else None
        write_audit(s, who.name, action, f"case:{case_id}", detail, address)

    def visible(s: Session, case_id: int, who: Caller, lock: bool = False) -> Case:
        # `lock` before changing a case: the row stays locked to the end of the transaction, so two people (or
        # an instance folding in a node's update) acting at once take turns instead of both dispatching it.
        case = s.get(Case, case_id, with_for_update=lock)
        if case is None:
            raise HTTPException(404, "no such case")
        if not who.may_see(case):  # case ids count up: hiding that one exists would hide nothing
            raise HTTPException(403, "this case is in a building of another micro-grid")
        return case

    def ev_out(item: Evidence) -> EvidenceOut:
        return EvidenceOut(
            id=item.id,
            kind=item.kind,
            sha256=item.sha256,
            bytes=item.bytes,
            trust=item.trust,
            trust_note=item.trust_note,
            received_at=item.received_at,
            url=f"/api/evidence/{item.id}",
        )

    def case_out(case: Case, cls=CaseOut, **extra) -> CaseOut:
        b = ctx.roster.buildings.get(case.building) if case.building else None
        fields = {k: getattr(case, k) for k in CaseOut.model_fields if hasattr(case, k)}
        fields.update(building_name=b.name if b else None, cameras=[f"{e.node}/{e.camera}" for e in case.events])
        return cls(**fields, **extra)

    @app.get("/api/me", response_model=Me, tags=["people"])
    def me(who: Who):
        return Me(
            name=who.name, role=who.role, buildings=sorted(who.buildings) if who.buildings is not None else None
        )

    @app.get("/api/cases", response_model=list[CaseOut], tags=["cases"])
    def cases(
        s: Db,
        who: Who,
        state: CaseState | None = None,
        building: str | None = None,
        level: Level | None = None,
        verdict: Verdict | None = None,
        assignee: Annotated[str | None, Query(description="'worker:<id>', 'leader:<grid>' or 'office'")] = None,
        since: Annotated[dt.datetime | None, Query(description="alerts at or after (ISO time)")] = None,
        until: Annotated[dt.datetime | None, Query(description="alerts before (ISO time)")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,  # more cases than ids there are not: and past
        # 64 bits the database cannot take it (a 500), so it is refused as malformed (422) first
    ):
        """Cases, newest alert first, with filters; a grid worker gets their buildings' cases only."""
        query = CaseQuery(state, building, level, verdict, assignee, _aware(since), _aware(until))
        rows = s.scalars(cases_seen(query, who.buildings).limit(limit).offset(offset)).all()
        return [case_out(c) for c in rows]

    @app.get("/api/cases/{case_id}", response_model=CaseDetail, tags=["cases"])
    def case(case_id: RowId, s: Db, who: Who):
        """One case: its alerts with their evidence (and its trust), on-site photos, history and notices."""
        c = visible(s, case_id, who)
        events = [
            EventOut(
                node=e.node,
                event_id=e.event_id,
                camera=e.camera,
                level=e.level,
                score=e.score,
                floor=e.floor,
                alert_at=e.alert_at,
                node_registered=e.node_registered,
                node_hold=e.node_hold,
                node_hold_at=e.node_hold_at,
                evidence=[ev_out(x) for x in e.evidence],
            )
            for e in c.events
        ]
        photos = s.scalars(select(Evidence).where(Evidence.case_id == c.id).order_by(Evidence.id)).all()
        jobs = s.scalars(select(Job).where(Job.case_id == c.id).order_by(Job.id)).all()
        return case_out(
            c,
            CaseDetail,
            events=events,
            photos=[ev_out(p) for p in photos],
            history=[HistoryOut(action=h.action, actor=h.actor, at=h.at, detail=h.detail) for h in c.history],
            notices=[notice_out(j, who.staff) for j in jobs],
            held=ctx.loop.held(s, c),
        )

    @app.post("/api/cases/{case_id}/photos", response_model=EvidenceOut, tags=["cases"], status_code=201)
    async def photo(case_id: RowId, request: Request, who: Who):
        """An on-site photo: the request body is the JPEG itself (Content-Type: image/jpeg)."""
        with ctx.readers() as s:
            visible(s, case_id, who)  # before reading a body of megabytes from someone who may not add it
        buf = bytearray()
        async for part in request.stream():
            buf += part
            if len(buf) > MAX_PHOTO_BYTES:
                raise HTTPException(413, f"a photo may be at most {MAX_PHOTO_BYTES} bytes")
        data = bytes(buf)
        if not is_jpeg(data):
            raise HTTPException(415, "send the photo as JPEG")
        with ctx.sessions.begin() as s:
            c = visible(s, case_id, who)
            item = keep_photo(ctx.files, ctx.loop, s, c, data, who.name)
            audit(s, request, who, "photo", case_id, {"bytes": len(data)})
            return ev_out(item)

    @app.post("/api/cases/{case_id}/hold", response_model=CaseOut, tags=["cases"])
    def hold(case_id: RowId, body: HoldIn, request: Request, who: Staff):
        """Keep the case's evidence at its nodes past retention, or release it (a release needs a note: why)."""
        note = (body.note or "").strip()
        with ctx.sessions.begin() as s:
            c = visible(s, case_id, who, lock=True)
            try:
                ctx.loop.change_hold(s, c, body.hold, who.name, note, who.role == Role.ADMIN)
            except Refused as exc:
                raise HTTPException(exc.status, str(exc)) from None
            audit(s, request, who, "hold" if body.hold else "release", case_id, {"note": note})
            return case_out(c)

    @app.post("/api/cases/{case_id}/reassign", response_model=CaseOut, tags=["cases"])
    def reassign(case_id: RowId, body: ReassignIn, request: Request, who: Staff):
        """Give a dispatched or acknowledged case to another worker of its grid, the grid leader or the office."""
        with ctx.sessions.begin() as s:
            c = visible(s, case_id, who, lock=True)
            try:
                ctx.loop.reassign(s, c, body.to, who.name)
            except Refused as exc:
                raise HTTPException(exc.status, str(exc)) from None
            audit(s, request, who, "reassign", case_id, {"to": body.to})
            return case_out(c)

    @app.post("/api/cases/{case_id}/{action}", response_model=CaseOut, tags=["cases"])
    def act(case_id: RowId, action: Action, body: ActionIn, request: Request, who: Who):
        """confirm / dismiss (dispatchers: a suspected alert), acknowledge, check (with a verdict), resolve."""
        if action not in (Action.CONFIRM, Action.DISMISS, Action.ACKNOWLEDGE, Action.CHECK, Action.RESOLVE):
            raise HTTPException(404, f"no action {action}")
        if action in (Action.CONFIRM, Action.DISMISS) and who.role == Role.GRID_WORKER:
            raise HTTPException(403, "reviewing suspected alerts is for dispatchers")
        with ctx.sessions.begin() as s:
            c = visible(s, case_id, who, lock=True)
            if action == Action.RESOLVE and body.verdict is None and c.verdict is None:
                raise HTTPException(422, "resolve needs a verdict when no check gave one")
            try:
                ctx.loop.act(s, c, action, who.name, body.verdict, body.note)
            except Refused as exc:
                raise HTTPException(exc.status, str(exc)) from None
            audit(s, request, who, str(action), case_id, {"verdict": body.verdict, "photo": False})
            return case_out(c)

    @app.get("/api/evidence/{evidence_id}", tags=["cases"], response_class=FileResponse)
    def evidence(evidence_id: RowId, s: Db, who: Who):
        """The file itself (still, clip, original, manifest, photo)."""
        item = s.get(Evidence, evidence_id)
        if item is None:
            raise HTTPException(404, "no such evidence")
        case_id = item.case_id
        if item.event_pk is not None:
            case_id = s.get(Event, item.event_pk).case_id
        if who.buildings is not None and (case_id is None or not who.may_see(s.get(Case, case_id))):
            raise HTTPException(403, "this evidence is not of your buildings")
        try:
            path = ctx.files.path(item.path)
        except OutsideDataDir:
            raise HTTPException(404, "the file is not under the evidence folder") from None
        if not path.is_file():
            raise HTTPException(404, "the file is no longer on the center's disk")
        return FileResponse(path, media_type=media_type(item.kind, path))

    @app.get("/api/roster", tags=["people"])
    def roster(who: Staff) -> dict:
        """The roster as loaded (buildings, grids, workers with duty hours, the office): staff only, since it
        holds every building and everyone's phone, e-mail and WeCom id."""
        return ctx.roster.model_dump(mode="json")

    @app.get("/api/nodes", response_model=list[NodeOut], tags=["nodes"])
    def nodes(s: Db, who: Staff):
        """Node health: registered key, online/offline, last stats, every camera's status."""
        cams: dict[str, list[CameraOut]] = {}
        for c in s.scalars(select(Camera).order_by(Camera.node, Camera.camera)):
            cams.setdefault(c.node, []).append(CameraOut.model_validate(c, from_attributes=True))
        return [
            NodeOut(
                name=n.name,
                registered=n.public_key is not None,
                key_id=n.key_id,
                available=n.available,
                last_seen=n.last_seen,
                stats=n.stats,
                stats_at=n.stats_at,
                cameras=cams.get(n.name, []),
            )
            for n in s.scalars(select(Node).order_by(Node.name))
        ]

    @app.get("/api/stats", response_model=Stats, tags=["statistics"])
    def stats(s: Db, who: Who, since: dt.datetime | None = None, until: dt.datetime | None = None):
        """Alerts by building, floor and hour; false-alarm share; median times to acknowledge and resolve."""
        query = cases_seen(CaseQuery(since=_aware(since), until=_aware(until)), who.buildings, with_events=False)
        return stats_of(s, query, ctx.cfg.timezone)

    @app.get("/api/feedback", response_model=list[FeedbackOut], tags=["statistics"])
    def feedback(
        s: Db,
        who: Who,
        verdict: Verdict | None = None,
        building: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ):
        """Alerts with an on-site verdict (false alarms for tuning: ?verdict=false_alarm); a grid worker gets
        their buildings' only, and 403 for another's `building`."""
        if building and who.buildings is not None and building not in who.buildings:
            raise HTTPException(403, "this building is in another micro-grid")
        q = select(Event, Case).join(Case, Event.case_id == Case.id).where(Case.verdict.is_not(None))
        if verdict:
            q = q.where(Case.verdict == verdict)
        if building:
            q = q.where(Case.building == building)
        if who.buildings is not None:
            q = q.where(Case.building.in_(sorted(who.buildings)))
        rows = s.execute(q.order_by(Case.alert_at.desc()).limit(limit)).all()
        return [
            FeedbackOut(
                node=e.node,
                event_id=e.event_id,
                camera=e.camera,
                case=c.id,
                verdict=c.verdict,
                score=e.score,
                floor=e.floor,
                alert_at=e.alert_at,
            )
            for e, c in rows
        ]

    @app.get("/api/notices", response_model=list[JobOut], tags=["nodes"])
    def notices(
        s: Db, who: Staff, state: JobState | None = None, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
    ):
        """Notices and feedback in the queue; ?state=failed shows what could not be delivered."""
        q = select(Job)
        if state:
            q = q.where(Job.state == state)
        return [
            JobOut.model_validate(j, from_attributes=True)
            for j in s.scalars(q.order_by(Job.id.desc()).limit(limit))
        ]

    @app.get("/api/ingest", tags=["nodes"])
    def ingest(who: Admin) -> dict:
        """This instance's counters of refused input, by reason."""
        return {"instance": ctx.cfg.instance, "dropped": ctx.drops.snapshot()}

    from center.web.app import mount  # the server-rendered pages for people, on the same app and rights

    mount(app, ctx)
    return app


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    """A query string's time as UTC (one without an offset is UTC already). A time whose UTC instant is
    outside the calendar (year 1 at +14:00, 9999-12-31 at -14:00) is refused as malformed (422): the
    database's conversion to UTC would overflow (a 500)."""
    if t is None:
        return None
    try:
        return t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC)
    except OverflowError:
        raise HTTPException(422, f"{t.isoformat()} is outside the calendar in UTC") from None
