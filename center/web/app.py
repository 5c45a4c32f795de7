"""The pages' wiring: who is looking (session cookie), CSRF on every form, errors as pages, security headers,
and the audit log. `mount(app, ctx)` adds everything to the API's FastAPI app."""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException

from center.api import Caller, Context
from center.db import write_audit
from center.loop import Refused
from center.models import Role
from center.photos import MAX_PHOTO_BYTES
from center.web import i18n
from center.web.security import COOKIE, HEADERS, LoginLimiter, same_token, session_of

HERE = Path(__file__).parent
MAX_BODY = MAX_PHOTO_BYTES + (1 << 20)  # the largest request: a photo and its form (a roster is 256 KiB)
MAX_STREAMS_PER_USER = 8  # open alert lists of one person (tabs, a wall screen): each asks the database once a
# second, so one login cannot open thousands and take every connection and worker thread
UNGUARDED = ("/docs", "/redoc")  # Swagger UI's page loads its own inline script and CDN files
log = logging.getLogger(__name__)


class LoginNeeded(Exception):
    """No live session: the browser is sent to the login page."""


class Word(str):
    """A field of a message that is itself a key of the catalogue (a state, an action): translated too."""


class PageError(Exception):
    """An error shown as a page in the viewer's language: `key` is a message of the catalogue (center/web/i18n)."""

    def __init__(self, status: int, key: str, retry_after_s: float | None = None, **fields):
        super().__init__(key)
        self.status, self.key, self.fields = status, key, fields
        self.retry_after_s = retry_after_s  # when asking again may succeed: sent as Retry-After (RFC 9110)

    def text(self, t: Callable[..., str]) -> str:
        return t(self.key, **{k: t(f) if isinstance(f, Word) else f for k, f in self.fields.items()})


def refused(exc: Refused) -> PageError:
    """The loop's refusal as a page in the viewer's language (the API answers with its English)."""
    fields: dict = dict(exc.fields)
    if "action" in fields:
        fields["action"] = Word(fields["action"])  # the button's name: what was pressed
    if "state" in fields:
        fields["state"] = Word(f"state.{fields['state']}")
    return PageError(exc.status, f"refused.{exc.key}", **fields)


@dataclass
class Viewer:
    """The person behind a request: their rights (the API's Caller), session CSRF token and language."""

    caller: Caller
    user_id: int
    csrf: str
    lang: str
    t: Callable[..., str]

    @property
    def staff(self) -> bool:
        return self.caller.staff

    @property
    def admin(self) -> bool:
        return self.caller.role == Role.ADMIN


@dataclass
class Web:
    """What every page handler needs; one per app (app.state.web)."""

    ctx: Context
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    streams: Counter = field(default_factory=Counter)  # user id -> their open alert-list streams here
    _streams_lock: threading.Lock = field(default_factory=threading.Lock)

    def open_stream(self, user_id: int) -> bool:
        """Count one more open stream of the user; False (and not counted) when they have the most allowed."""
        with self._streams_lock:
            if self.streams[user_id] >= MAX_STREAMS_PER_USER:
                return False
            self.streams[user_id] += 1
            return True

    def close_stream(self, user_id: int) -> None:
        with self._streams_lock:
            self.streams[user_id] -= 1
            if self.streams[user_id] <= 0:
                del self.streams[user_id]

    templates: Jinja2Templates = field(default_factory=lambda: Jinja2Templates(directory=HERE / "templates"))

    def render(self, request: Request, v: Viewer | None, name: str, status: int = 200, **values) -> HTMLResponse:
        lang = v.lang if v else i18n.pick(request.cookies.get(i18n.COOKIE))
        disk = self.ctx.disk() if v and v.staff and self.ctx.disk else None
        values.update(v=v, t=v.t if v else i18n.translator(lang), lang=lang, path=request.url.path, disk=disk)
        return self.templates.TemplateResponse(request, name, values, status_code=status)


def web_of(request: Request) -> Web:
    return request.app.state.web


def viewer(request: Request) -> Viewer:
    """The logged-in viewer of a page (a FastAPI dependency); without a live session, off to the login page."""
    web = web_of(request)
    with web.ctx.readers() as s:
        found = session_of(s, request.cookies.get(COOKIE))
    if found is None:
        raise LoginNeeded()
    row, user = found
    lang = i18n.pick(request.cookies.get(i18n.COOKIE))
    return Viewer(Caller.of(user, web.ctx.roster), user.id, row.csrf, lang, i18n.translator(lang))


def check_csrf(v: Viewer, token: str | None) -> None:
    """Every form that changes something carries the session's CSRF token; one without it is refused."""
    if not same_token(v.csrf, token):
        raise PageError(403, "csrf_refused")


def need_staff(v: Viewer) -> None:
    if not v.staff:
        raise PageError(403, "forbidden")


def need_admin(v: Viewer) -> None:
    if not v.admin:
        raise PageError(403, "forbidden")


def audit(s: Session, request: Request, actor: str, action: str, target: str, detail: dict | None = None) -> None:
    """One line of the audit log, in the caller's transaction (a change and its record commit together)."""
    write_audit(s, actor, action, target, detail, request.client.host if request.client else None)


def audit_now(request: Request, actor: str, action: str, target: str, detail: dict | None = None) -> None:
    """An audit line of its own (a view or an export: nothing else to commit with it)."""
    with web_of(request).ctx.sessions.begin() as s:
        audit(s, request, actor, action, target, detail)


class SecurityHeaders:
    """ASGI middleware: the security headers on every response but Swagger's pages; pages are not cached."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(UNGUARDED):
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith("/static/")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, val in HEADERS.items():
                    headers.setdefault(k, val)
                if not cacheable:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused (413) as it comes, before any route parses
    it: forms and JSON are read whole before a route's login check runs, so without this anyone could make
    the center spool gigabytes to disk or hold them in memory."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self.refusal(scope)(scope, receive, send)
            return
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # chunked, or more than it declared
                raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, bounded, send)

    def refusal(self, scope) -> Response:
        """The API's callers read English; a page's (a worker's phone photo too large) reads their language."""
        if scope["path"].startswith("/api/"):
            return PlainTextResponse("request body too large", status_code=413)
        request = Request(scope)
        t = i18n.translator(i18n.pick(request.cookies.get(i18n.COOKIE)))
        text = t("too_big", mb=self.limit >> 20, photo=MAX_PHOTO_BYTES >> 20)
        return web_of(request).render(request, None, "error.html", status=413, message=text)


class NoNulInQuery:
    """ASGI middleware: a query string with a NUL character (%00) is refused (400). PostgreSQL keeps no NUL in
    text, so a filter such as ?building=%00 would be a database error (a 500) on every page and API call."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and b"%00" in scope.get("query_string", b""):
            await PlainTextResponse("NUL in the query string", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def mount(app: FastAPI, ctx: Context) -> None:
    """Add the pages, their static files and the security headers to the API's app."""
    from center.web import admin, alerts, login

    app.state.web = Web(ctx)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (login, alerts, admin):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(NoNulInQuery)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(LoginNeeded)
    async def _login(request: Request, exc: LoginNeeded) -> Response:
        if "application/json" in request.headers.get("accept", ""):  # a page's script asking: not a login page
            return JSONResponse({"detail": "login needed"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        """A malformed address or form on a page (`/alerts/abc`, a note too long) is a page, not the API's JSON."""
        if request.url.path.startswith("/api/"):
            return await request_validation_exception_handler(request, exc)
        t = i18n.translator(i18n.pick(request.cookies.get(i18n.COOKIE)))
        return web_of(request).render(request, None, "error.html", status=422, message=t("bad_request"))

    @app.exception_handler(PageError)
    async def _error(request: Request, exc: PageError) -> Response:
        web = web_of(request)
        t = i18n.translator(i18n.pick(request.cookies.get(i18n.COOKIE)))
        page = web.render(request, None, "error.html", status=exc.status, message=exc.text(t))
        if exc.retry_after_s is not None:
            page.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return page


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
