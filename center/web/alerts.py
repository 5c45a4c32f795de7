"""The alert pages: the live list (server-sent events), one alert with its evidence, and the loop's forms.

Actions go through center.loop.Loop.act in a transaction holding the case's row, exactly as the JSON API's
POST /api/cases/{id}/{action} does."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from center.api import RowId
from center.db import Case, Evidence, History
from center.files import OutsideDataDir, media_type
from center.loop import HOLD_WHYS, Refused, release_needs_admin
from center.models import Action, CaseState, Level, Trust, Verdict
from center.photos import MAX_PHOTO_BYTES, is_jpeg, keep_photo
from center.web import charts, views
from center.web.app import (
    MAX_STREAMS_PER_USER,
    PageError,
    Viewer,
    audit,
    audit_now,
    check_csrf,
    need_staff,
    refused,
    viewer,
    web_of,
)
from center.web.security import COOKIE, session_of

router = APIRouter(include_in_schema=False)
Who = Annotated[Viewer, Depends(viewer)]
POLL_S = 1.0  # the list's stream looks for new cases and history this often (works across instances)
PING_S = 15  # keeps proxies from closing an idle stream


def _filters(
    state: str | None = None,
    building: str | None = None,
    level: str | None = None,
    since: str | None = None,
    until: str | None = None,
    page: str | None = None,
) -> views.Filters:
    """Filters from the query string; an unknown value is ignored (the list shows everything for it)."""

    def day(text: str | None) -> dt.date | None:
        try:
            d = dt.date.fromisoformat(text) if text else None
        except ValueError:
            return None
        return d if d is None or d.year in views.YEARS else None

    return views.Filters(
        state=CaseState(state) if state in CaseState.__members__.values() else None,
        building=building or None,
        level=level if level in Level.__members__.values() else None,
        since=day(since),
        until=day(until),
        page=int(page) if page and re.fullmatch(r"[0-9]{1,6}", page) and 0 < int(page) <= views.MAX_PAGE else 1,
    )


Filtered = Annotated[views.Filters, Depends(_filters)]


@router.get("/alerts", response_class=HTMLResponse)
def alert_list(request: Request, v: Who, f: Filtered):
    web = web_of(request)
    with web.ctx.readers() as s:  # one more than a page: whether there is an older page
        cases = views.visible_cases(s, v.caller, f, web.ctx.cfg.timezone, views.LIST_LIMIT + 1)
        found = views.rows(web.ctx, cases[: views.LIST_LIMIT], v.t)
    buildings = {
        bid: b.name
        for bid, b in web.ctx.roster.buildings.items()
        if v.caller.buildings is None or bid in v.caller.buildings
    }
    return web.render(
        request,
        v,
        "alerts.html",
        rows=found,
        f=f,
        buildings=buildings,
        states=list(CaseState),
        levels=list(Level),
        older=len(cases) > views.LIST_LIMIT,
        page_link=lambda n: "/alerts?" + urlencode({**request.query_params, "page": n}),
    )


@router.get("/alerts/rows", response_class=HTMLResponse)
def alert_rows(request: Request, v: Who, f: Filtered):
    """The list's rows alone (of the page shown): what the page fetches when the stream says something changed."""
    web = web_of(request)
    with web.ctx.readers() as s:
        cases = views.visible_cases(s, v.caller, f, web.ctx.cfg.timezone, views.LIST_LIMIT)
        found = views.rows(web.ctx, cases, v.t)
    return web.render(request, v, "_rows.html", rows=found)


class CountedStream(EventSourceResponse):
    """An event stream that gives its place back however it ends (the client gone, logged out, shutdown)."""

    def __init__(self, *args, release: Callable[[], None], **kw):
        super().__init__(*args, **kw)
        self.release = release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


@router.get("/alerts/stream")
async def alert_stream(request: Request, v: Who):
    """Server-sent events: `change` whenever a case the viewer may see is made or moves (`new`: a new case)."""
    web = web_of(request)
    ctx = web.ctx
    cookie = request.cookies.get(COOKIE)
    if not web.open_stream(v.user_id):
        raise PageError(429, "too_many_streams", n=MAX_STREAMS_PER_USER)

    def mark() -> tuple[int, int] | None:
        """The list's mark, or None once the session has ended (logged out elsewhere, user removed)."""
        with ctx.readers() as s:
            return views.latest_mark(s, v.caller) if session_of(s, cookie) else None

    async def changes():
        last = await run_in_threadpool(mark)
        yield {"event": "hello", "data": json.dumps({"case": last[0] if last else 0})}
        while last is not None:
            await asyncio.sleep(POLL_S)
            now = await run_in_threadpool(mark)
            if now is None:
                yield {"event": "ended", "data": "{}"}
                return
            if now != last:
                yield {"event": "change", "data": json.dumps({"new": now[0] > last[0], "case": now[0]})}
                last = now

    return CountedStream(changes(), ping=PING_S, release=lambda: web.close_stream(v.user_id))


@router.get("/alerts/{case_id}/mark")
def alert_mark(request: Request, case_id: RowId, v: Who) -> dict:
    """The case page's mark (views.case_mark): the open page asks now and then whether it is out of date."""
    with web_of(request).ctx.readers() as s:
        return {"mark": views.case_mark(s, _case_for(s, case_id, v))}


def _case_for(s: Session, case_id: int, v: Viewer, lock: bool = False) -> Case:
    case = s.get(Case, case_id, with_for_update=lock)
    if case is None:
        raise PageError(404, "not_found")
    if not v.caller.may_see(case):  # another micro-grid's case: forbidden, and said so
        raise PageError(403, "forbidden")
    return case


@router.get("/alerts/{case_id}", response_class=HTMLResponse)
def alert_page(request: Request, case_id: RowId, v: Who, asked: str | None = None):
    web = web_of(request)
    ctx = web.ctx
    with ctx.readers() as s:
        case = _case_for(s, case_id, v)
        # The mark first, the case read again after it: what the page shows is then at least as new as the mark
        # (PostgreSQL reads each statement afresh), so a change in between brings a needless notice, never none.
        mark = views.case_mark(s, case)
        s.refresh(case)
        page = dict(
            case=case,
            row=views.rows(ctx, [case], v.t)[0],
            events=views.event_views(ctx, case),
            photos=views.photos_of(s, case),
            history=list(case.history),
            seen=max((h.id for h in case.history), default=0),
            mark=mark,
            notices=views.notices_of(s, case),
            actions=views.allowed_actions(case, v.caller),
            verdicts=list(Verdict),
            targets=ctx.loop.reassign_targets(case) if v.staff else [],
            person=lambda ref: views.person_label(ctx, ref, v.t),
            actor={a: views.actor_label(ctx, s, a, v.t) for a in {h.actor for h in case.history}}.get,
            note=lambda text: views.trust_note(text, v.t),
            local=lambda t: views.local_text(t, ctx.cfg.timezone),
            span=lambda d: views.duration(abs(d), v.t),
            Trust=Trust,
            asked=bool(asked),
            held=(held := ctx.loop.held(s, case)),
            admin_releases=release_needs_admin(s, case) if held else None,
            HOLD_WHYS=HOLD_WHYS,
            max_photo=MAX_PHOTO_BYTES,
        )
    audit_now(request, v.caller.name, "view", f"case:{case_id}")
    return web.render(request, v, "alert.html", **page)


@router.get("/alerts/{case_id}/elevation.svg")
def elevation(request: Request, case_id: RowId, v: Who):
    ctx = web_of(request).ctx
    with ctx.readers() as s:
        case = _case_for(s, case_id, v)
        building = ctx.roster.buildings.get(case.building) if case.building else None
        origins = [views.drawn_origin(views.origin_of(e)) for e in case.events]
        facades = {ctx.roster.facade_of(e.node, e.camera) for e in case.events} - {None}
    floors = building.floors if building else max([o.floor or 1 for o in origins] + [10])
    title = f"{building.name if building else case.building or ''} {' / '.join(sorted(facades))}"
    return Response(charts.elevation(floors, origins, title), media_type="image/svg+xml")


async def _read_photo(photo: UploadFile | None) -> bytes | None:
    if photo is None or not photo.filename:
        return None
    data = await photo.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise PageError(413, "photo_too_big", mb=MAX_PHOTO_BYTES >> 20)
    if not is_jpeg(data):
        raise PageError(415, "photo_not_jpeg")
    return data


@router.post("/alerts/{case_id}/act")
async def act(
    request: Request,
    case_id: RowId,
    v: Who,
    action: Annotated[str, Form(max_length=20)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    verdict: Annotated[str, Form(max_length=20)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    photo: Annotated[UploadFile | None, File()] = None,
    seen: Annotated[int | None, Form(ge=0, le=2**31 - 1)] = None,
):
    """One of the loop's buttons; a photo sent with it is kept in the same transaction."""
    check_csrf(v, csrf)
    if action not in {
        a.value for a in (Action.CONFIRM, Action.DISMISS, Action.ACKNOWLEDGE, Action.CHECK, Action.RESOLVE)
    }:
        raise PageError(404, "not_found")
    chosen = Verdict(verdict) if verdict in Verdict.__members__.values() else None
    data = await _read_photo(photo)
    note = note.replace("\x00", "").strip() or None  # PostgreSQL keeps no NUL in text
    await run_in_threadpool(_act, request, case_id, v, Action(action), chosen, note, data, seen)
    return RedirectResponse(f"/alerts/{case_id}", status_code=303)


def _act(request, case_id, v, action, verdict, note, photo, seen) -> None:
    web = web_of(request)
    if action in (Action.CONFIRM, Action.DISMISS) and not v.staff:
        raise PageError(403, "forbidden")
    with web.ctx.sessions.begin() as s:
        case = _case_for(s, case_id, v, lock=True)
        if action == Action.RESOLVE and verdict is None and case.verdict is None:
            raise PageError(422, "refused.resolve_verdict")
        try:
            web.ctx.loop.act(s, case, action, v.caller.name, verdict, note)
        except Refused as exc:
            if _done_since(s, case, _Press(action, verdict, note, photo, v.caller.name), seen):
                return  # the same press sent twice: answered as the first was, with the case's page
            raise refused(exc) from None
        if photo is not None:
            keep_photo(web.ctx.files, web.ctx.loop, s, case, photo, v.caller.name)
        audit(
            s, request, v.caller.name, str(action), f"case:{case_id}", {"verdict": verdict, "photo": bool(photo)}
        )


@dataclass(frozen=True)
class _Press:
    """One press of a loop button: what its form sent."""

    action: Action
    verdict: Verdict | None
    note: str | None
    photo: bytes | None
    actor: str


def _done_since(s: Session, case: Case, press: _Press, seen: int | None) -> bool:
    """Whether this very press (this person, action, verdict, note and photo) was done to the case after the page
    it came from was shown (`seen`: its newest history row). Two taps on a slow phone network send the form
    twice; the second must not tell the grid worker their verdict was refused when it was recorded. Someone
    else's press, another verdict, or another note or photo (which would be lost unsaid) is refused."""
    if seen is None:
        return False
    done = s.scalars(
        select(History).where(
            History.case_id == case.id,
            History.id > seen,
            History.action == press.action,
            History.actor == press.actor,
        )
    )
    same = any(
        (press.verdict is None or (h.detail or {}).get("verdict") == press.verdict)
        and (h.detail or {}).get("note") == press.note
        for h in done
    )
    if not same or press.photo is None:
        return same
    digest = hashlib.sha256(press.photo).hexdigest()
    kept = select(Evidence.id).where(Evidence.case_id == case.id, Evidence.kind == "photo")
    return s.scalar(kept.where(Evidence.sha256 == digest)) is not None


@router.post("/alerts/{case_id}/reassign")
def reassign_form(
    request: Request,
    case_id: RowId,
    v: Who,
    to: Annotated[str, Form(max_length=80)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """Dispatch the case to someone else of its building's grid, its leader or the office (dispatchers)."""
    check_csrf(v, csrf)
    need_staff(v)
    web = web_of(request)
    with web.ctx.sessions.begin() as s:
        case = _case_for(s, case_id, v, lock=True)
        try:
            web.ctx.loop.reassign(s, case, to, v.caller.name)
        except Refused as exc:
            raise refused(exc) from None
        audit(s, request, v.caller.name, "reassign", f"case:{case_id}", {"to": to})
    return RedirectResponse(f"/alerts/{case_id}", status_code=303)


@router.post("/alerts/{case_id}/hold")
def hold_form(
    request: Request,
    case_id: RowId,
    v: Who,
    hold: Annotated[str, Form(max_length=3)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """Keep the case's evidence at its nodes past retention (on), or release it with a reason (off); staff."""
    check_csrf(v, csrf)
    need_staff(v)
    if hold not in ("on", "off"):
        raise PageError(404, "not_found")
    note = note.replace("\x00", "").strip()
    web = web_of(request)
    with web.ctx.sessions.begin() as s:
        case = _case_for(s, case_id, v, lock=True)
        try:
            web.ctx.loop.change_hold(s, case, hold == "on", v.caller.name, note, v.admin)
        except Refused as exc:
            raise refused(exc) from None
        audit(s, request, v.caller.name, "hold" if hold == "on" else "release", f"case:{case_id}", {"note": note})
    return RedirectResponse(f"/alerts/{case_id}#actions", status_code=303)


@router.get("/evidence/{evidence_id}")
def evidence(request: Request, evidence_id: RowId, v: Who):
    """A still, clip, manifest or photo; clips answer HTTP range requests, so the player can seek."""
    ctx = web_of(request).ctx
    with ctx.readers() as s:
        item = s.get(Evidence, evidence_id)
        case = views.evidence_case(s, item) if item else None
        if item is None:
            raise PageError(404, "not_found")
        if case is None and not v.staff or case is not None and not v.caller.may_see(case):
            raise PageError(403, "forbidden")
        try:
            path = ctx.files.path(item.path)
        except OutsideDataDir:
            raise PageError(404, "not_found") from None
        if not path.is_file():  # removed from the disk by hand: said so, not a server error
            raise PageError(404, "not_found")
        kind, digest = item.kind, item.sha256
    if request.headers.get("range", "bytes=0-").startswith("bytes=0-"):  # one line per viewing, not per seek
        audit_now(request, v.caller.name, "view", f"evidence:{evidence_id}", {"kind": kind})
    media = media_type(kind, path)
    return FileResponse(path, media_type=media, headers={"ETag": f'"{digest}"'})
