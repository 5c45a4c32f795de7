"""`edge-center`: the community center's command line (run, db upgrade, node add, user add, check)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from edge.config import EX_CONFIG, ConfigError
from edge.sdnotify import Notifier

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_OSERR, EX_TEMPFAIL = 0, 64, 65, 66, 71, 75


def _err(msg: str) -> None:
    print(f"edge-center: error: {msg}", file=sys.stderr)


def _load(args):
    from center.config import load_center_config
    from center.roster import Roster
    from center.yamlfile import load_model

    cfg = load_center_config(args.config)
    return cfg, load_model(cfg.roster, Roster)


def cmd_check(args) -> int:
    cfg, roster = _load(args)
    workers = sum(len(g.workers) for g in roster.grids.values())
    cams = sum(len(c) for b in roster.buildings.values() for c in b.facades.values())
    print(
        f"{args.config}: OK: {len(roster.buildings)} buildings, {cams} cameras, {len(roster.grids)} grids, "
        f"{workers} grid workers; database {cfg.database_url().split('@')[-1]}"
    )
    return EX_OK


def cmd_db_upgrade(args) -> int:
    from center.config import load_center_config
    from center.migrate import current, upgrade

    cfg = load_center_config(args.config)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(cfg.database_url())
    print(f"database at revision {current(cfg.database_url())}")
    return EX_OK


def _sessions(cfg):
    from center.db import make_engine, make_sessions
    from center.service import ensure_schema

    ensure_schema(cfg.database_url())
    return make_sessions(make_engine(cfg.database_url()))


def cmd_node_add(args) -> int:
    from center.config import load_center_config
    from center.db import Node, utcnow
    from center.files import EvidenceFiles
    from center.trust import reverify
    from edge.publish.manifest import parse_public_key
    from edge.publish.mqtt import valid_id

    cfg = load_center_config(args.config)
    if not valid_id(args.name):
        _err(f"{args.name!r} is not a node id")
        return EX_USAGE
    try:
        raw = parse_public_key(Path(args.key).read_text())
    except OSError as exc:
        _err(f"{args.key}: {exc.strerror}")
        return EX_NOINPUT
    except ValueError as exc:
        _err(f"{args.key}: {exc}")
        return EX_DATAERR
    import hashlib

    sessions = _sessions(cfg)
    with sessions.begin() as s:
        node = s.get(Node, args.name) or Node(name=args.name)
        node.public_key, node.key_id, node.registered_at = raw, hashlib.sha256(raw).hexdigest()[:16], utcnow()
        s.add(node)
    judged = reverify(sessions, EvidenceFiles(cfg.data_dir), args.name)
    again = f"; {judged} manifests already received judged again" if judged else ""
    print(f"node {args.name} registered with key {node.key_id}{again}")
    return EX_OK


def cmd_user_add(args) -> int:
    from center.auth import add_user
    from center.config import load_center_config
    from center.models import Role

    cfg = load_center_config(args.config)
    role = Role(args.role)
    if role == Role.GRID_WORKER:
        _, roster = _load(args)
        if roster.person(f"worker:{args.worker}") is None:
            _err(f"--worker {args.worker!r} is not a worker id in {cfg.roster}")
            return EX_USAGE
    password = _password(args.password_file) if args.password_file else None
    if isinstance(password, int):
        return password
    try:
        with _sessions(cfg).begin() as s:
            token = add_user(s, args.name, role, args.worker)
            if password is not None:
                from sqlalchemy import select

                from center.db import User
                from center.web.security import set_password

                s.flush()
                set_password(s, s.scalar(select(User).where(User.name == args.name)), password)
    except ValueError as exc:
        _err(str(exc))
        return EX_USAGE
    print(token)
    return EX_OK


def _password(path: str) -> str | int:
    """The first line of a password file ('-': standard input), or an exit status after saying why not."""
    try:
        text = sys.stdin.readline() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _err(f"{path}: {getattr(exc, 'strerror', None) or exc}")
        return EX_NOINPUT
    lines = text.splitlines()
    return lines[0] if lines else ""


def cmd_user_password(args) -> int:
    """Set or change a user's password for the web pages (their open sessions end)."""
    from sqlalchemy import select

    from center.config import load_center_config
    from center.db import User
    from center.web.security import set_password

    cfg = load_center_config(args.config)
    password = _password(args.password_file)
    if isinstance(password, int):
        return password
    try:
        with _sessions(cfg).begin() as s:
            user = s.scalar(select(User).where(User.name == args.name))
            if user is None:
                _err(f"no user {args.name!r}")
                return EX_USAGE
            set_password(s, user, password)
    except ValueError as exc:
        _err(str(exc))
        return EX_USAGE
    print(f"password of {args.name} set")
    return EX_OK


def cmd_run(args) -> int:
    from center.service import Center, ensure_schema

    cfg, roster = _load(args)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_schema(cfg.database_url())
    center = Center(cfg, roster)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    center.start()
    print(
        f"edge-center {cfg.instance}: {cfg.mqtt.host}:{cfg.mqtt.port} $share/{cfg.mqtt.share_group}/"
        f"{cfg.mqtt.topic_prefix}/#, API http://{cfg.api.host}:{cfg.api.port}/docs, "
        f"pages http://{cfg.api.host}:{cfg.api.port}/",
        flush=True,
    )
    # systemd's Type=notify (systemd/edge-center.service): started once the schema is current and the API
    # listens; the broker is connected to in the background. Nothing is sent outside systemd.
    notifier = Notifier()
    api = f"API on {cfg.api.host}:{cfg.api.port}" if cfg.api.enabled else "no API"
    notifier.ready(f"{cfg.instance}: {api}, broker {cfg.mqtt.host}:{cfg.mqtt.port}")
    done.wait()
    notifier.stopping()
    center.stop()
    notifier.close()
    return EX_OK


def cmd_bench(args) -> int:
    from center.bench import main as bench

    return bench(args)


def log_level(verbose: int) -> int:
    """-v: INFO, -vv: DEBUG, none: WARNING."""
    return logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-center", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="log at INFO (twice: DEBUG)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_config(s):
        s.add_argument("--config", required=True, help="center.yaml")
        return s

    s = with_config(sub.add_parser("run", help="receive, dispatch, notify and serve the API"))
    s.set_defaults(func=cmd_run)
    s = with_config(sub.add_parser("check", help="validate center.yaml and its roster"))
    s.set_defaults(func=cmd_check)
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    s = with_config(db.add_parser("upgrade", help="migrate the database to the newest schema (Alembic)"))
    s.set_defaults(func=cmd_db_upgrade)
    node = sub.add_parser("node", help="camera nodes").add_subparsers(dest="node_cmd", required=True)
    s = with_config(node.add_parser("add", help="register a node and its Ed25519 public key"))
    s.add_argument("name", help="node id (its MQTT user name)")
    s.add_argument("--key", required=True, help="the node's node_ed25519.pub (base64) or a PEM public key")
    s.set_defaults(func=cmd_node_add)
    user = sub.add_parser("user", help="API users").add_subparsers(dest="user_cmd", required=True)
    s = with_config(user.add_parser("add", help="create an API user; prints their token once"))
    s.add_argument("name")
    s.add_argument("--role", required=True, choices=["admin", "dispatcher", "grid_worker"])
    s.add_argument("--worker", help="a grid worker's id in the roster (sees that worker's buildings)")
    s.add_argument("--password-file", help="first line: their password for the web pages ('-': stdin)")
    s.set_defaults(func=cmd_user_add)
    s = with_config(user.add_parser("password", help="set a user's password for the web pages"))
    s.add_argument("name")
    s.add_argument("--password-file", required=True, help="first line: the password ('-': stdin)")
    s.set_defaults(func=cmd_user_password)
    s = sub.add_parser("bench", help="simulated nodes -> one Mosquitto -> several instances on PostgreSQL")
    s.add_argument("--nodes", type=int, default=200)
    s.add_argument("--instances", type=int, default=2, choices=[1, 2])
    s.add_argument("--seconds", type=float, default=120.0, help="length of the steady phase")
    s.add_argument("--alert-every-s", type=float, default=300.0, help="mean time between a node's alerts")
    s.add_argument("--burst", type=int, default=2000, help="alerts sent at once after the steady phase")
    s.add_argument("--database-url", help="PostgreSQL to use (default: a throwaway cluster in --workdir)")
    s.add_argument("--workdir", default="center-bench", help="broker, cluster and centers' files (emptied)")
    s.add_argument("--markdown", help="write the report here (docs/benchmarks/center.md)")
    s.add_argument("--append", metavar="TITLE", help="add to the report as a section with this title")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=log_level(args.verbose),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from sqlalchemy.exc import OperationalError

    from center.migrate import SchemaAhead
    from center.service import ApiUnavailable, SchemaBehind

    try:
        return args.func(args)
    except OperationalError as exc:  # PostgreSQL away, a data_dir it cannot write: 75, systemd tries again
        why = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc).strip() else type(exc).__name__
        _err(f"the database cannot be used: {why}")
        return EX_TEMPFAIL
    except ConfigError as exc:
        _err(str(exc))
        return EX_CONFIG
    except SchemaAhead as exc:  # exit 78: going again cannot help (systemd's RestartPreventExitStatus)
        _err(str(exc))
        return EX_CONFIG
    except SchemaBehind as exc:
        _err(str(exc))
        return EX_TEMPFAIL
    except ApiUnavailable as exc:
        _err(str(exc))
        return EX_OSERR
