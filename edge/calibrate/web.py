"""The local calibration page: FastAPI + Jinja2 + a little plain JavaScript, no front-end build.

Only whoever opens the URL printed at start (it carries a random key, kept in a SameSite cookie) can read
the still or save: the page writes the node's config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, FiniteFloat

from edge.calibrate import overlay, tracks, yamlio
from edge.calibrate.minute import MinuteBuffer, is_live
from edge.calibrate.propose import Grid, NotAFacade, detect_grid, line_of
from edge.calibrate.rules import Refused, check_facade, check_masks, pose_of, reprojection_errors
from edge.calibrate.still import Still, StillError, store_reference, take_still
from edge.capture.source import SourceOptions
from edge.config import CameraConfig, ConfigError, MasksConfig

HERE = Path(__file__).parent
COOKIE = "edge_calibrate_key"  # the prefix of each page's cookie name (cookie_name)
MAX_BODY = 512 * 1024  # a config is at most 256 KiB: a calibration sent as JSON is never near this
log = logging.getLogger(__name__)


@dataclass
class Session:
    """One camera being calibrated: its config file, the still and the proposal found in it."""

    config_path: Path
    camera: str
    cam: CameraConfig
    still: Still
    key: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    source: str = ""  # where replays read from: the --still file or the camera
    opts: SourceOptions = field(default_factory=SourceOptions)
    grid: Grid | None = None
    refusal: str | None = None
    jpeg: bytes = b""
    replay: tracks.ReplayJob | None = None
    buffer: MinuteBuffer | None = None  # a live camera's last minute, kept while the page is served
    # FastAPI runs these sync routes in a thread pool: one save or replay start at a time, each seeing the
    # camera config the last save left.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        ok, data = cv2.imencode(".jpg", self.still.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        self.jpeg = data.tobytes() if ok else b""
        try:
            self.grid = detect_grid(self.still.image, allow_weak=True)
            self.refusal = self.grid.weak
        except NotAFacade as exc:
            self.refusal = str(exc)
            try:  # no storeys, but perhaps the facade's plane: two floor lines marked by hand then do
                self.grid = detect_grid(self.still.image, geometry_only=True)
            except NotAFacade:
                self.grid = None

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.still.image.shape[:2]
        return w, h


class Placed(BaseModel):
    """A proposal point the installer dragged onto the floor line its number claims: the grid is re-fitted."""

    index: int = Field(ge=0, le=3)
    image: tuple[FiniteFloat, FiniteFloat]


class Mark(BaseModel):
    """A point the installer tapped on a floor line, with the number of the floor whose bottom it is."""

    image: tuple[FiniteFloat, FiniteFloat]
    floor: int = Field(ge=-5, le=200)


class ProposeIn(BaseModel):
    floor_height_m: float = Field(3.0, gt=1.5, le=10.0)
    lowest_floor: int = Field(1, ge=-5, le=200)
    bay_width_m: float | None = Field(None, ge=1.0, le=20.0)
    period_factor: float = Field(1.0, ge=0.2, le=5.0, description="storeys this many times as tall as found")
    placed: list[Placed] = Field(default_factory=list, max_length=8, description="points the installer dragged")
    marks: list[Mark] = Field(default_factory=list, max_length=8, description="floor lines the installer marked")


class CalibrationIn(BaseModel):
    # Plain mappings, not the config's models: check() validates them with check-config's rules and answers
    # a layout being edited (3 points, a mask out of the frame) with its reason, where a typed field would
    # give FastAPI's bare 422. What is saved is the validated model, never these.
    facade: dict
    masks: dict = Field(default_factory=lambda: {"shield": [], "privacy": []})


def cookie_name(key: str) -> str:
    """The name of the cookie holding this page's key. A browser keeps cookies per host, not per port: two
    pages open at once (two cameras, two ports) under one name would each take the other's key away."""
    return f"{COOKIE}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def has_key(request: Request, session: Session) -> bool:
    """Whether the request carries this page's key in its cookie."""
    key = request.cookies.get(cookie_name(session.key))
    return key is not None and secrets.compare_digest(key, session.key)


def _mask_lists(masks: MasksConfig) -> dict:
    """Masks as the config writes them: each polygon a bare list of [x, y] numbers."""
    return {kind: [p["points"] for p in polys] for kind, polys in masks.model_dump(mode="json").items()}


def _proposal(s: Session, answers: ProposeIn) -> dict:
    if s.grid is None:
        return {"ok": False, "message": s.refusal, "can_mark": False}
    lowest = answers.lowest_floor
    try:
        if answers.marks:  # the floor lines the installer marked decide the storeys and their numbers
            grid, lowest = s.grid.through([(m.image, m.floor) for m in answers.marks])
        elif not s.grid.storeys_found:
            return {"ok": False, "message": s.refusal, "can_mark": True}
        else:
            grid = s.grid
        grid = grid.rescaled(answers.period_factor)
    except NotAFacade as exc:
        return {"ok": False, "message": str(exc), "can_mark": True}
    prop = grid.calibration(answers.floor_height_m, lowest, answers.bay_width_m)
    if answers.placed:
        try:
            grid = grid.refit([(p.image, line_of(prop, p.index)) for p in answers.placed])
        except NotAFacade as exc:
            return {"ok": False, "message": str(exc)}
        prop = grid.calibration(answers.floor_height_m, lowest, answers.bay_width_m)
    lines = [{"floor": ln.floor, "a": list(ln.ends[0]), "b": list(ln.ends[1])} for ln in prop.floor_lines]
    block = prop.facade_block()
    roof = None
    if prop.top_floor is not None:  # drawn where the saved calibration will put it
        try:
            roof = overlay.draw(check_facade(block), s.size)["roof"]
        except Refused:
            roof = None
    return {
        "ok": True,
        "facade": block,
        "floors": lines,
        "roof": roof,
        "lowest_floor": lowest,
        "strength": round(s.grid.strength, 2),
        "period_factor": answers.period_factor,
        "weak": None if answers.marks else s.grid.weak,  # marked by the installer: no guess
    }


def _current(s: Session) -> dict | None:
    """The camera's calibration in the config, scaled to the still when measured at another size of its shape."""
    f = s.cam.facade
    if f is None:
        return None
    block = f.model_dump(mode="json", exclude_defaults=False)
    block.pop("outside_margin_m", None)
    block = {k: v for k, v in block.items() if v is not None}
    src = f.image_size or s.size
    sx, sy = s.size[0] / src[0], s.size[1] / src[1]
    if abs(sx / sy - 1) > 0.01:
        return None  # measured on another shape of image: nothing to show on this still
    for p in block["points"]:
        p["image"] = [round(p["image"][0] * sx, 1), round(p["image"][1] * sy, 1)]
    block["image_size"] = list(s.size)
    return block


def check(s: Session, body: CalibrationIn) -> dict:
    """check-config's rules on the page's calibration, the reprojection error per point, the overlay and where
    it puts the camera (None when it cannot place it)."""
    try:
        cfg = check_facade(body.facade)
        check_masks(body.masks)
    except Refused as exc:
        return {"ok": False, "message": str(exc), "errors": None, "overlay": None, "camera": None}
    pose = pose_of(cfg, s.size)
    return {
        "ok": True,
        "message": "",
        "errors": reprojection_errors(cfg),
        "overlay": overlay.draw(cfg, s.size),
        # An installer can check it against where the camera stands; origins' floors depend on it.
        "camera": None if pose is None else {k: round(v, 1) for k, v in vars(pose).items()},
    }


def _tidy(cfg, size: tuple[int, int]) -> dict:
    """The validated facade as the config writes it: floats rounded as measured, only the keys that are set."""
    block = {
        "floor_height_m": float(cfg.floor_height_m),
        "ground_floor": cfg.ground_floor,
        "image_size": list(size),
        "points": [
            {"image": [round(float(v), 1) for v in p.image], "facade": [round(float(v), 2) for v in p.facade]}
            for p in cfg.points
        ],
    }
    if cfg.top_floor is not None:
        block["top_floor"] = cfg.top_floor
    if cfg.extent_m is not None:
        block["extent_m"] = [round(float(v), 2) for v in cfg.extent_m]
    return block


def _why(exc: OSError) -> str:
    return f"cannot write {exc.filename}: {exc.strerror}" if exc.filename else f"cannot write: {exc}"


def _save(s: Session, body: CalibrationIn) -> JSONResponse:
    """Write the calibration into the config (the caller holds the session's lock)."""
    result = check(s, body)
    if not result["ok"]:
        return JSONResponse(result, status_code=422)
    facade = _tidy(check_facade(body.facade), s.size)
    try:
        saved = yamlio.save(s.config_path, s.camera, facade, _mask_lists(check_masks(body.masks)))
    except ConfigError as exc:
        return JSONResponse({**result, "ok": False, "message": f"check-config: {exc}"}, status_code=422)
    except OSError as exc:  # a read-only folder, a backup that may not be replaced: nothing was changed
        return JSONResponse({**result, "ok": False, "message": _why(exc)}, status_code=500)
    # From now on the page (a reload, the next save's masks) and replays start from the config as written.
    s.cam = saved.config.camera(s.camera)[1]
    unset = ", ".join(f"${{{name}}}" for name in saved.unset_env)
    note = f" ({unset} not set here: checked with a placeholder)" if unset else ""
    result["saved"] = str(saved.path)
    try:
        ref = store_reference(s.config_path, s.camera, s.still, facade)
    except (OSError, StillError) as exc:
        why = _why(exc) if isinstance(exc, OSError) else str(exc)
        result["reference_error"] = why
        result["message"] = (
            f"已保存 Saved {saved.path} — check-config OK{note}; but the reference still NOT stored "
            f"(参考图未保存): {why}; the camera-moved check needs it: save again once it can be written"
        )
        return JSONResponse(result)
    result["message"] = f"已保存 Saved {saved.path} — check-config OK{note}; reference still {ref.name}. {_APPLY}"
    return JSONResponse(result)


# A running node reads its config at start and on SIGHUP only: without this it goes on with the old calibration.
_APPLY = "运行中的节点需重新加载 A running node takes it with `systemctl reload edge`"


class _Gate:
    """Before any request body is read: no key, no reading (403); with the key, at most MAX_BODY bytes (413).

    FastAPI reads and parses a body before it checks a route's dependencies, so without this anyone who can
    reach the port had the node hold a body of any size in memory, key or not."""

    def __init__(self, app, session: Session):
        self.app, self.s = app, session

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not has_key(request, self.s):
            detail = "open the page from the link `edge calibrate` printed (it carries the key)"
            await JSONResponse({"detail": detail}, status_code=403, headers={"Connection": "close"})(
                scope, receive, send
            )
            return
        too_big = JSONResponse(
            {"ok": False, "message": f"request body larger than {MAX_BODY} bytes"},
            status_code=413,
            headers={"Connection": "close"},
        )
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > MAX_BODY):
            await too_big(scope, receive, send)
            return
        body = bytearray()
        while True:  # read here, bounded, and hand the app the whole body in one message
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await too_big(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay():
            nonlocal whole
            if whole is None:
                return await receive()
            message, whole = whole, None
            return message

        await self.app(scope, replay, send)


def create_app(s: Session) -> FastAPI:
    app = FastAPI(title="edge calibrate", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def authorised(request: Request) -> None:
        if not has_key(request, s):
            raise HTTPException(403, "open the page from the link `edge calibrate` printed (it carries the key)")

    guard = [Depends(authorised)]

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, key: str | None = None):
        if key is not None:
            if not secrets.compare_digest(key, s.key):
                raise HTTPException(403, "wrong key: open the link `edge calibrate` printed")
            resp = RedirectResponse("/", status_code=303)  # the key leaves the address bar and history
            resp.set_cookie(cookie_name(s.key), s.key, httponly=True, samesite="strict")
            return resp
        authorised(request)
        return templates.TemplateResponse(
            request, "calibrate.html", {"camera": s.camera, "config": s.config_path.name, "size": s.size}
        )

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/still.jpg", dependencies=guard)
    def still() -> Response:
        return Response(s.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/state", dependencies=guard)
    def state() -> dict:
        current = _current(s)
        answers = ProposeIn(floor_height_m=current["floor_height_m"] if current else 3.0)
        return {
            "camera": s.camera,
            "config": str(s.config_path),
            "source": s.still.source,
            "size": list(s.size),
            "current": current,
            "masks": _mask_lists(s.cam.masks),
            "proposal": _proposal(s, answers),
            "answers": answers.model_dump(),
        }

    @app.post("/api/propose", dependencies=guard)
    def propose(answers: ProposeIn) -> dict:
        return _proposal(s, answers)

    @app.post("/api/check", dependencies=guard)
    def check_route(body: CalibrationIn) -> dict:
        return check(s, body)

    @app.post("/api/save", dependencies=guard)
    def save(body: CalibrationIn) -> JSONResponse:
        with s.lock:
            return _save(s, body)

    @app.post("/api/replay", dependencies=guard)
    def replay_start(body: CalibrationIn) -> JSONResponse:
        result = check(s, body)
        if not result["ok"]:
            return JSONResponse(result, status_code=422)
        facade = _tidy(check_facade(body.facade), s.size)
        with s.lock:
            if s.replay is not None and s.replay.state == "running":
                return JSONResponse(s.replay.summary())
            if s.buffer is None:  # a file: its first minute
                s.replay = tracks.start(s.source, s.cam, facade, s.opts)
                return JSONResponse(s.replay.summary())
            packets = s.buffer.ring.last(time.time())  # the minute before the click, not what arrives after
            if not packets:
                why = s.buffer.error or "no picture has arrived since the page opened"
                return JSONResponse({"ok": False, "message": f"nothing to replay yet: {why}"}, status_code=409)
            s.replay = tracks.start_buffered(packets, s.cam, facade)
            return JSONResponse(s.replay.summary())

    @app.get("/api/buffer", dependencies=guard)
    def buffer_state() -> dict:
        """How much of a live camera's last minute the page holds (a file has no last minute)."""
        if s.buffer is None:
            return {"live": False, "seconds": 0.0, "error": ""}
        pkts = s.buffer.ring.last()
        span = pkts[-1].t - pkts[0].t if pkts else 0.0
        return {"live": True, "seconds": round(span, 1), "error": s.buffer.error}

    @app.get("/api/replay", dependencies=guard)
    def replay_state() -> dict:
        return s.replay.summary() if s.replay is not None else {"state": "none", "tracks": []}

    app.add_middleware(_Gate, session=s)
    return app


def _session(args) -> Session:
    path = Path(args.config)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, "", str(path), f"cannot read: {exc.strerror}") from None
    cfg, unset = yamlio.check_text(text, str(path))
    name, cam = cfg.camera(args.camera)
    opts = SourceOptions(
        transport=cam.capture.transport,
        open_timeout_s=cam.capture.open_timeout_s,
        read_timeout_s=cam.capture.stall_s,
        probe_s=cam.capture.probe_s,
    )
    if args.still:
        return Session(path, name, cam, take_still(args.still), source=args.still, opts=opts)
    try:
        return Session(path, name, cam, take_still(cam.source, opts), source=cam.source, opts=opts)
    except StillError as exc:
        hint = f"; ${{{unset[0]}}} is not set in this shell" if unset else ""
        raise StillError(f"camera {name}: {exc}{hint}; or calibrate on a file with --still", exc.offline) from None


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {listen}: give HOST:PORT, e.g. 127.0.0.1:8090")
    return host, int(port)


def serve(args) -> int:
    """Take the still, find the proposal, and serve the page until Ctrl-C."""
    import uvicorn

    from edge.calibrate.command import EX_NOINPUT, EX_UNAVAILABLE, EX_USAGE, _err

    try:
        host, port = _address(args.listen)
    except ValueError as exc:
        _err(str(exc))
        return EX_USAGE
    try:
        session = _session(args)
    except StillError as exc:
        _err(str(exc))
        return EX_UNAVAILABLE if exc.offline else EX_NOINPUT
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)  # connections made as soon as the link is printed wait for the server, not fail
    except OSError as exc:
        sock.close()
        _err(f"--listen {args.listen}: {exc.strerror}")
        return EX_USAGE
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{sock.getsockname()[1]}/?key={session.key}"
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:  # the address bound: `localhost` is too
        warn = "edge calibrate: warning: the page can be reached from the network: stop it when done"
        print(warn, file=sys.stderr)
    if session.refusal:
        what = "only a low-confidence proposal" if session.grid is not None else "no proposal"
        print(f"edge calibrate: {what} for this still: {session.refusal}", file=sys.stderr)
    print(f"calibration page for camera {session.camera}: {url}  (Ctrl-C to stop)", flush=True)
    if is_live(session.source):  # from now on the page can replay the minute before a click
        session.buffer = MinuteBuffer(session.source, session.opts, tracks.REPLAY_S).start()
    config = uvicorn.Config(create_app(session), log_level="warning", lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if session.buffer is not None:
            session.buffer.stop()
    return 0
