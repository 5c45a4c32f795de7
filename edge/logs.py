"""Log lines for people and for machines, never with a password in them.

On a terminal a line reads `2026-11-29 12:00:00,123 WARNING edge.node: ...`; otherwise (journald, a log shipper,
a file) each record is one JSON object: time, level, logger, message, camera (when known), exception. Every
record first passes SecretFilter, which masks the secrets of the running config and the password of any URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from edge.config import EdgeConfig

FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# Shorter secrets are not masked as text: masking "ab" would garble every line, and a password that short falls to
# guessing anyway. Inside a URL's user info every password is masked, whatever its length.
MIN_SECRET_CHARS = 4
# scheme://user:password@ : the password runs to the authority's LAST `@`, as FFmpeg reads it (it may hold one)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)[^\s/]*@")
SECRET_WORDS = r"pass|pwd|token|secret|auth|key|sig|cred|session"  # a URL query parameter so named holds a secret
_SECRET_WORDS = SECRET_WORDS  # source.redact() reads a query with the same words
_SECRET_PARAM = re.compile(_SECRET_WORDS, re.IGNORECASE)
# ?token=... in a URL anywhere in a line: the name is kept, the value masked
_URL_SECRET_PARAM = re.compile(rf"([?&;][^=&;\s?#]*(?:{_SECRET_WORDS})[^=&;\s?#]*=)[^&;\s#]*", re.IGNORECASE)
# Threads named after their camera: the camera's worker, its capture and its packet reader.
_CAMERA_THREAD = re.compile(r"^(?:worker|capture|read)-(.+)$")
_CAMERA_MESSAGE = re.compile(r"^camera ([^\s:(]+)")
_ENV_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")  # as edge.config fills them

_secrets: set[str] = set()
_lock = threading.Lock()


def protect(config: EdgeConfig) -> None:
    """Add the secrets `config` holds (its SecretStr fields, the MQTT password file's content, the passwords and
    secret query values of camera URLs) to what every log record is masked of. Call it again after a reload."""
    found = set(_secret_fields(config))
    with contextlib.suppress(OSError):  # an unreadable password file: the node says so, and nothing is to mask
        found.add(config.mqtt.secret() or "")
    for cam in config.cameras.values():
        found.update(url_secrets(cam.source))
    found.update(_env_secrets(getattr(config, "_from_env", None) or []))
    # A password with an `@` (or an unencoded `/`) may be cut at it by whoever read the URL before the log did:
    # what follows each `@` is masked too.
    found |= {tail for s in found for tail in s.split("@")[1:]}
    found = {s for s in found if len(s) >= MIN_SECRET_CHARS}
    with _lock:
        _secrets.update(found)


def url_secrets(url: str) -> set[str]:
    """The password of a URL's user info and its secret-looking query values, as written and percent-decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    out = set()
    if "@" in parts.netloc:
        cred = parts.netloc.rsplit("@", 1)[0]
        out.add(cred.split(":", 1)[1] if ":" in cred else cred)  # a lone user info is often a token
    for pair in re.split(r"[&;]", parts.query):
        name, _, value = pair.partition("=")
        if value and _SECRET_PARAM.search(name):
            out.add(value)
    return {v for s in out for v in (s, unquote(s)) if v}


def _env_secrets(filled: list[tuple[tuple, str]]) -> set[str]:
    """Values the environment filled in where a secret goes: a password field, a URL's user info, or a variable
    named like one (CAM_PW, MQTT_TOKEN). A value that cannot be parsed back out of its URL (an unencoded `/`
    in a password) is masked whole this way too."""
    out = set()
    for path, written in filled:
        secret_field = bool(path) and _SECRET_PARAM.search(str(path[-1])) is not None
        for m in _ENV_NAME.finditer(written):
            in_userinfo = "://" in written[: m.start()] and "@" in written[m.end() :]
            if secret_field or in_userinfo or _SECRET_PARAM.search(m[1]):
                out.add(os.environ.get(m[1], m[2] or ""))
    return out


def _secret_fields(model: Any) -> list[str]:
    """The values of every SecretStr anywhere in a pydantic model."""
    if isinstance(model, SecretStr):
        return [model.get_secret_value()]
    if isinstance(model, BaseModel):
        return [s for name in type(model).model_fields for s in _secret_fields(getattr(model, name))]
    if isinstance(model, dict):
        return [s for v in model.values() for s in _secret_fields(v)]
    if isinstance(model, list | tuple):
        return [s for v in model for s in _secret_fields(v)]
    return []


def mask(text: str) -> str:
    """`text` with URL passwords and every protected secret replaced by ***."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # a secret holding another is masked whole
    for secret in secrets:  # first: a URL's password cut short by the pattern below would no longer match
        text = text.replace(secret, MASK)
    text = _URL_SECRET_PARAM.sub(lambda m: f"{m[1]}{MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m[1]}{MASK}@", text)


class SecretFilter(logging.Filter):
    """Masks secrets in a record's message and exception text, before any formatter or handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a log call whose arguments do not fit its format must not raise where it was made
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


def camera_of(record: logging.LogRecord) -> str | None:
    """The camera a record is about: given as extra={"camera": ...}, its thread's, or named by its message."""
    given = getattr(record, "camera", None)
    if given:
        return str(given)
    if m := _CAMERA_THREAD.match(record.threadName or ""):
        return m[1]
    m = _CAMERA_MESSAGE.match(record.getMessage())
    return m[1] if m else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message, camera, exception."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        camera = camera_of(record)
        if camera is not None:
            out["camera"] = camera
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        out["thread"] = record.threadName
        return json.dumps(out, ensure_ascii=False)


def json_wanted(choice: str, stream=None) -> bool:
    """Whether --log-format `choice` means JSON: `auto` is JSON unless the stream is a terminal."""
    if choice == "auto":
        stream = stream or sys.stderr
        return not (hasattr(stream, "isatty") and stream.isatty())
    return choice == "json"


def setup(choice: str = "auto", level: int = logging.WARNING, stream=None) -> logging.Handler:
    """Send every log record to stderr (or `stream`) through SecretFilter, as JSON or text lines; also uncaught
    exceptions of threads and of the main thread, which would otherwise bypass both."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_wanted(choice, stream) else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    threading.excepthook = _thread_died
    sys.excepthook = _main_died
    return handler


def _main_died(exc_type, exc_value, exc_traceback) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc_value, exc_traceback)  # Ctrl-C, at a terminal: Python's own way
        return
    exc_info = (exc_type, exc_value, exc_traceback)
    logging.getLogger("edge").critical("stopped by an unexpected error", exc_info=exc_info)


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as threading's own hook: a thread that exits on purpose is not an error
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("edge").error(
        "thread %s died", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def route_ffmpeg(level: int | None = None) -> None:
    """FFmpeg's own messages (a corrupt stream, a camera refusing a login) through Python logging, so that they
    are JSON lines too and pass SecretFilter, instead of FFmpeg's raw lines on stderr."""
    import av.logging  # local: only the commands that read video load PyAV

    av.logging.set_level(av.logging.ERROR if level is None else level)
