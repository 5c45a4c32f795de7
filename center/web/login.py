"""Logging in and out, and the language switch."""

from __future__ import annotations

import math
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse

from center.auth import MAX_USER_NAME
from center.web import i18n
from center.web.app import PageError, Viewer, audit, check_csrf, viewer, web_of
from center.web.security import (
    COOKIE,
    DEVICE_DAYS,
    HASH_WAIT_S,
    LOGIN_CSRF_COOKIE,
    SESSION_HOURS,
    HashingBusy,
    check_password,
    close_session,
    device_cookie,
    known_device,
    open_session,
    same_token,
)

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path of this site: `next` comes from the address bar and must not send anyone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/alerts"
    return target


def _cookie(response, name: str, value: str, max_age: int | None = None, path: str = "/") -> None:
    # Secure: browsers send it only over HTTPS (the reverse proxy) or to this machine itself (localhost).
    # Lax, not Strict: a link to an alert in a WeCom message opens logged in; forms carry CSRF tokens anyway.
    response.set_cookie(name, value, max_age=max_age, httponly=True, secure=True, samesite="lax", path=path)


@router.get("/")
def home():
    return RedirectResponse("/alerts", status_code=303)


LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # what secrets.token_urlsafe(32) makes


@router.get("/login")
def login_page(request: Request, next: str | None = None, error: str | None = None):
    # The browser's token, when it has one, is kept: each open alert list reloads to this page when the session
    # ends, and a new token for each would refuse every form but the last one loaded (and, after a login, the
    # others). The token only proves the form came from this site; it is no secret between the tabs.
    held = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = held if LOGIN_TOKEN.fullmatch(held) else secrets.token_urlsafe(32)
    page = web_of(request).render(request, None, "login.html", next=safe_next(next), csrf=token, error=error)
    _cookie(page, LOGIN_CSRF_COOKIE, token)
    return page


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=MAX_USER_NAME)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/alerts",
):
    web = web_of(request)
    if not same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        raise PageError(403, "csrf_refused")
    address = request.client.host if request.client else "?"
    with web.ctx.readers() as s:
        device = known_device(s, name, request.cookies)  # a browser this person logged in from: counted apart
    wait, ticket = web.limiter.attempt(address, name, device)  # counted as a failure until it succeeds
    if wait > 0:
        raise PageError(429, "login_wait", retry_after_s=wait, minutes=math.ceil(wait / 60))
    try:
        checked = check_password(web.ctx.readers, web.ctx.sessions, name, password)  # argon2: no connection held
    except HashingBusy:
        web.limiter.unchecked(address, name, ticket, device)
        raise PageError(503, "login_busy", retry_after_s=HASH_WAIT_S) from None
    with web.ctx.sessions.begin() as s:
        token = open_session(s, checked) if checked else None  # None: the password changed meanwhile
        known = device_cookie(s, checked.user) if checked and token else None
        shown = name.replace("\x00", "")[:MAX_USER_NAME] or "?"  # PostgreSQL keeps no NUL in text
        audit(s, request, shown, "login" if token else "login_failed", "session")
    if token is None or known is None:  # known is None exactly when token is
        return web.render(request, None, "login.html", status=401, next=safe_next(next), csrf=csrf, error=True)
    web.limiter.succeeded(address, name, ticket, device)
    done = RedirectResponse(safe_next(next), status_code=303)
    _cookie(done, COOKIE, token, max_age=SESSION_HOURS * 3600)
    _cookie(done, *known, max_age=DEVICE_DAYS * 86400, path="/login")  # sent with logins only
    return done


@router.post("/logout")
def logout(request: Request, v: Annotated[Viewer, Depends(viewer)], csrf: Annotated[str, Form()] = ""):
    check_csrf(v, csrf)
    with web_of(request).ctx.sessions.begin() as s:
        close_session(s, request.cookies.get(COOKIE))
        audit(s, request, v.caller.name, "logout", "session")
    done = RedirectResponse("/login", status_code=303)
    done.delete_cookie(COOKIE, path="/")
    return done


@router.get("/lang/{lang}")
def language(lang: str, next: str | None = None):
    """Switch the pages' language (a cookie; Chinese unless English is chosen)."""
    done = RedirectResponse(safe_next(next), status_code=303)
    done.set_cookie(i18n.COOKIE, i18n.pick(lang), max_age=365 * 86400, samesite="lax", path="/")
    return done
