"""Pages for staff: nodes and cameras (with the detection switch), the month report, the roster and users,
and the evidence export for the police."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from center.api import RowId
from center.auth import MAX_USER_NAME, add_user
from center.db import Audit, Camera, Event, Evidence, Node, User, utcnow
from center.models import Role
from center.roster import Roster
from center.web import report as month_report
from center.web import views
from center.web.alerts import _case_for
from center.web.app import PageError, Viewer, audit, audit_now, check_csrf, need_admin, need_staff, viewer, web_of
from center.web.export import archive
from center.web.security import MAX_PASSWORD, MIN_PASSWORD, set_password
from center.web.tables import WebLogin, WebSession
from center.web.views import duration
from center.yamlfile import parse_file_text
from edge.config import ConfigError
from edge.publish.mqtt import valid_id

router = APIRouter(include_in_schema=False)
Who = Annotated[Viewer, Depends(viewer)]
AUDIT_ROWS = 200  # the newest audit lines on the users page


# -- nodes and cameras -------------------------------------------------------------------------------------
@router.get("/nodes", response_class=HTMLResponse)
def nodes(request: Request, v: Who, sent: str | None = None):
    need_staff(v)
    web = web_of(request)
    with web.ctx.readers() as s:
        node_rows = list(s.scalars(select(Node).order_by(Node.name)))
        cams = list(s.scalars(select(Camera).order_by(Camera.node, Camera.camera)))
        last = dict(
            ((n, c), t)
            for n, c, t in s.execute(
                select(Event.node, Event.camera, func.max(Event.alert_at)).group_by(Event.node, Event.camera)
            )
        )
        stills = dict(
            ((n, c), i)
            for n, c, i in s.execute(
                select(Event.node, Event.camera, func.max(Evidence.id))
                .join(Evidence, Evidence.event_pk == Event.id)
                .where(Evidence.kind == "snapshot")
                .group_by(Event.node, Event.camera)
            )
        )
    zone = web.ctx.cfg.timezone

    def local(t):
        if isinstance(t, int | float) and not isinstance(t, bool):
            try:
                t = dt.datetime.fromtimestamp(t, dt.UTC)
            except (OverflowError, OSError, ValueError):  # a node's clock (or message) out of this world
                t = None
        if not isinstance(t, dt.datetime):
            return v.t("none")
        return views.local_text(t, zone)

    health = {n.name: views.node_health(n) for n in node_rows}
    rows = [
        views.camera_health(c, health[c.node].cameras.get(c.camera, {}) if c.node in health else {}) for c in cams
    ]
    return web.render(
        request,
        v,
        "nodes.html",
        nodes=node_rows,
        health=health,
        cams=rows,
        camstates=views.CAMERA_STATES,
        last=last,
        stills=stills,
        local=local,
        sent=sent,
    )


@router.post("/nodes/{node}/{camera}/detect")
def detect_switch(
    request: Request,
    node: str,
    camera: str,
    v: Who,
    state: Annotated[str, Form(max_length=3)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """Switch a camera's detection on or off: the node's own command topic (it answers on detect/state)."""
    check_csrf(v, csrf)
    need_staff(v)
    web = web_of(request)
    if state not in ("ON", "OFF") or not (valid_id(node) and valid_id(camera)):
        raise PageError(422, "bad_request")
    with web.ctx.readers() as s:
        if s.get(Camera, (node, camera)) is None:
            raise PageError(404, "not_found")
    if web.ctx.publish is None:
        raise PageError(503, "no_broker")
    try:
        web.ctx.publish(f"{web.ctx.cfg.mqtt.topic_prefix}/{node}/{camera}/detect/set", state.encode())
    except (ConnectionError, TimeoutError) as exc:
        raise PageError(503, "broker_refused", why=str(exc)) from None
    with web.ctx.sessions.begin() as s:
        audit(s, request, v.caller.name, "detect", f"camera:{node}/{camera}", {"state": state})
    return RedirectResponse(f"/nodes?sent={node}/{camera}", status_code=303)


# -- month report ------------------------------------------------------------------------------------------
@router.get("/report", response_class=HTMLResponse)
def report_page(request: Request, v: Who, month: str | None = None):
    need_staff(v)
    web = web_of(request)
    first = month_report.month_of(month, web.ctx.cfg.timezone)
    with web.ctx.readers() as s:
        cases = month_report.month_cases(s, v.caller, first, web.ctx.cfg.timezone)
        built = month_report.build(web.ctx, cases, first, v.t)
    return web.render(request, v, "report.html", r=built, duration=duration)


@router.get("/report.csv")
def report_csv(request: Request, v: Who, month: str | None = None):
    need_staff(v)
    web = web_of(request)
    first = month_report.month_of(month, web.ctx.cfg.timezone)
    with web.ctx.readers() as s:
        text = month_report.to_csv(
            web.ctx, month_report.month_cases(s, v.caller, first, web.ctx.cfg.timezone), v.t
        )
    audit_now(request, v.caller.name, "export", f"report:{first:%Y-%m}")
    return Response(
        "\ufeff" + text,  # the BOM makes Excel read the Chinese names as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="alerts-{first:%Y-%m}.csv"'},
    )


# -- evidence export ---------------------------------------------------------------------------------------
@router.post("/alerts/{case_id}/export.zip")
def export(request: Request, case_id: RowId, v: Who, csrf: Annotated[str, Form(max_length=100)] = ""):
    """The case's evidence in one archive for the police; every export is in the audit log.

    A form with the session's CSRF token, not a link: an export is a change (the audit line saying who gave the
    evidence away, and a hold only an admin may release), which a link elsewhere must not make in a
    dispatcher's name (the Lax session cookie goes with a top-level GET from any site)."""
    check_csrf(v, csrf)
    need_staff(v)
    web = web_of(request)
    # Evidence given to the police must outlive the nodes' retention and the center's: the hold is taken, the case
    # locked, before the archive is read, so no sweep (center.retention) takes a file out of it meanwhile. The
    # export's audit line commits with the hold: it is what makes the hold an admin's to release
    # (center.loop.release_needs_admin).
    with web.ctx.sessions.begin() as s:
        case = _case_for(s, case_id, v, lock=True)
        web.ctx.loop.hold(s, case, v.caller.name, utcnow(), "exported")
        data = archive(web.ctx, s, case, v.caller.name)
        audit(s, request, v.caller.name, "export", f"case:{case_id}", {"bytes": len(data)})
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="case-{case_id}-evidence.zip"'},
    )


# -- roster ------------------------------------------------------------------------------------------------
@router.get("/roster", response_class=HTMLResponse)
def roster_page(request: Request, v: Who):
    need_staff(v)
    web = web_of(request)
    text = web.ctx.cfg.roster.read_text(encoding="utf-8")
    return web.render(request, v, "roster.html", roster=web.ctx.roster, text=text, problem=None, saved=False)


@router.post("/roster", response_class=HTMLResponse)
def roster_save(
    request: Request,
    v: Who,
    text: Annotated[str, Form(max_length=1 << 20)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """Replace the roster: validated as at start (a mistake is shown with its line, nothing is written), then
    written atomically and used at once by this instance (others read it at their next start)."""
    check_csrf(v, csrf)
    need_admin(v)
    web = web_of(request)
    path = web.ctx.cfg.roster
    try:
        # No ${NAME} from the page: it would show the center's secrets (its environment) to every dispatcher.
        new = parse_file_text(text, path.name, Roster, environment=False)
    except ConfigError as exc:
        return web.render(
            request, v, "roster.html", status=422, roster=web.ctx.roster, text=text, problem=str(exc), saved=False
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)  # one per save
    os.chmod(tmp, path.stat().st_mode & 0o777)  # as readable as the roster it replaces
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # the roster in use is on disk before it replaces the old one
    os.replace(tmp, path)
    web.ctx.roster = new
    web.ctx.loop.roster = new
    with web.ctx.sessions.begin() as s:
        audit(s, request, v.caller.name, "roster", str(path.name), {"bytes": len(text.encode())})
    return web.render(request, v, "roster.html", roster=new, text=text, problem=None, saved=True)


# -- users -------------------------------------------------------------------------------------------------
def _users_page(request: Request, v: Viewer, status: int = 200, **extra):
    web = web_of(request)
    with web.ctx.readers() as s:
        users = list(s.scalars(select(User).order_by(User.name)))
        logins = set(s.scalars(select(WebLogin.user_id)))
        log = list(s.scalars(select(Audit).order_by(Audit.id.desc()).limit(AUDIT_ROWS)))
    workers = [(wid, w.name) for g in web.ctx.roster.grids.values() for wid, w in g.workers.items()]
    zone = web.ctx.cfg.timezone
    values = dict(users=users, logins=logins, log=log, roles=list(Role), workers=workers, token=None, problem=None)
    values.update(extra, local=lambda t, fmt=views.TIME_FORMAT: views.local_text(t, zone, fmt))
    return web.render(request, v, "users.html", status=status, **values)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, v: Who):
    need_admin(v)
    return _users_page(request, v)


@router.post("/users", response_class=HTMLResponse)
def user_add(
    request: Request,
    v: Who,
    name: Annotated[str, Form(max_length=80)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    worker: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """A new user with a password for the pages; their API token is shown once, here."""
    check_csrf(v, csrf)
    need_admin(v)
    web = web_of(request)
    try:
        if role not in Role.__members__.values():
            raise PageError(422, "user.bad_role")
        chosen = Role(role)
        if not valid_id(name) or len(name) > MAX_USER_NAME:  # a longer one could never log in
            raise PageError(422, "user.bad_name", name=name)
        if chosen == Role.GRID_WORKER and web.ctx.roster.person(f"worker:{worker}") is None:
            raise PageError(422, "user.bad_worker", worker=worker)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise PageError(422, "user.password_length", min=MIN_PASSWORD, max=MAX_PASSWORD)
        with web.ctx.sessions.begin() as s:
            if s.scalar(select(User).where(User.name == name)) is not None:
                raise PageError(422, "user.exists", name=name)
            token = add_user(s, name, chosen, worker or None if chosen == Role.GRID_WORKER else None)
            try:
                s.flush()  # the unique name decides when two admins add the same name at once
            except IntegrityError:
                raise PageError(422, "user.exists", name=name) from None
            set_password(s, s.scalar(select(User).where(User.name == name)), password)
            audit(s, request, v.caller.name, "user_add", f"user:{name}", {"role": chosen})
    except PageError as exc:
        return _users_page(request, v, status=exc.status, problem=exc.text(v.t))
    return _users_page(request, v, token=(name, token))


@router.post("/alerts/{case_id}/original")
def ask_original(request: Request, case_id: RowId, v: Who, csrf: Annotated[str, Form(max_length=100)] = ""):
    """Ask each node of the case for its original evidence clip (events/<id>/original/get): the police archive
    holds it once it has come (the node sends it in chunks, like the annotated clip)."""
    check_csrf(v, csrf)
    need_staff(v)
    web = web_of(request)
    with web.ctx.readers() as s:
        events = [(e.node, e.event_id) for e in _case_for(s, case_id, v).events]
    if web.ctx.publish is None:
        raise PageError(503, "no_broker")
    prefix = web.ctx.cfg.mqtt.topic_prefix
    try:
        for node, event_id in events:
            if valid_id(node) and valid_id(event_id):
                web.ctx.publish(f"{prefix}/{node}/events/{event_id}/original/get", b"")
    except (ConnectionError, TimeoutError) as exc:
        raise PageError(503, "broker_refused", why=str(exc)) from None
    with web.ctx.sessions.begin() as s:
        audit(s, request, v.caller.name, "original_get", f"case:{case_id}", {"events": len(events)})
    return RedirectResponse(f"/alerts/{case_id}?asked=1", status_code=303)


@router.post("/users/{user_id}/remove", response_class=HTMLResponse)
def user_remove(request: Request, user_id: RowId, v: Who, csrf: Annotated[str, Form(max_length=100)] = ""):
    """Remove a user: their password, sessions and API token go at once (their names stay in case histories)."""
    check_csrf(v, csrf)
    need_admin(v)
    if user_id == v.user_id:
        return _users_page(request, v, status=422, problem=v.t("user.self"))
    web = web_of(request)
    with web.ctx.sessions.begin() as s:
        user = s.get(User, user_id)
        if user is None:
            raise PageError(404, "not_found")
        s.execute(delete(WebSession).where(WebSession.user_id == user_id))
        s.execute(delete(WebLogin).where(WebLogin.user_id == user_id))
        s.delete(user)
        audit(s, request, v.caller.name, "user_remove", f"user:{user.name}")
    return RedirectResponse("/users", status_code=303)
