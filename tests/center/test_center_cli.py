"""`edge-center` on the command line: config and roster checked like the node's (exit 78 with file:line:
key.path), database migrations, node keys, users."""

from __future__ import annotations

import copy
import re

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from centerkit import REPO, ROSTER, run_cli, write_center
from sqlalchemy import text

from center.db import make_engine
from center.migrate import current, head, upgrade
from edge.publish.manifest import load_or_create_key


def test_the_shipped_examples_are_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("CENTER_MQTT_PASSWORD", "x")
    r = run_cli("check", "--config", str(REPO / "configs" / "center" / "center.example.yaml"))
    assert r.returncode == 0, r.stderr
    assert "1 buildings, 2 cameras, 1 grids, 2 grid workers" in r.stdout


def _broken(**edits):
    roster = copy.deepcopy(ROSTER)
    for path, value in edits.items():
        node = roster
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return roster


@pytest.mark.parametrize(
    "roster, where, why",
    [
        (_broken(**{"buildings.b3.grid": "g9"}), "buildings.b3.grid", "no grid 'g9'"),
        (_broken(**{"buildings.b3.floors": 0}), "buildings.b3.floors", "greater than or equal to 1"),
        (_broken(**{"buildings.b3.lift": True}), "buildings.b3.lift", "unknown key"),
        (_broken(**{"grids.g1.workers.zhang.duty": ["8:00-20:00"]}), "grids.g1.workers.zhang.duty", "HH:MM-HH:MM"),
        (
            _broken(**{"buildings.b5.facades": {"south": [{"node": "garden3-east", "camera": "east"}]}}),
            "buildings.b5.facades.south[0]",
            "already at b3.facades.east",
        ),
        (_broken(**{"grids.g2.workers": {"zhang": {"name": "again"}}}), "grids.g2.workers.zhang", "ids name one"),
    ],
)
def test_a_bad_roster_is_refused_with_its_line_and_key_path(tmp_path, roster, where, why):
    config = write_center(tmp_path, roster=roster)
    r = run_cli("check", "--config", str(config))
    assert r.returncode == 78
    m = re.search(r"roster\.yaml:(\d+): (\S+): ", r.stderr)
    assert m and m[2] == where and why in r.stderr, r.stderr
    named = (tmp_path / "roster.yaml").read_text().splitlines()[int(m[1]) - 1]
    assert where.split(".")[-1].split("[")[0] in named or named.lstrip().startswith("- ")  # the line of that key
    good = write_center(tmp_path)  # positive control
    assert run_cli("check", "--config", str(good)).returncode == 0


def test_a_bad_center_config_is_refused_with_its_line_and_key_path(tmp_path):
    config = write_center(tmp_path, escalate_after_min=-5)
    r = run_cli("check", "--config", str(config))
    assert r.returncode == 78
    assert "escalate_after_min: Input should be greater than 0 (got -5)" in r.stderr
    config = write_center(tmp_path, mqtt={"share_group": "a/b"})
    r = run_cli("check", "--config", str(config))
    assert r.returncode == 78 and re.search(r"center-center-1\.yaml:\d+: mqtt\.share_group: ", r.stderr), r.stderr
    config = write_center(tmp_path, mqtt={"password": "${CENTER_TEST_UNSET}"})
    r = run_cli("check", "--config", str(config))
    assert r.returncode == 78 and "environment variable CENTER_TEST_UNSET is not set" in r.stderr
    assert run_cli("check", "--config", str(write_center(tmp_path))).returncode == 0


def test_smtp_with_both_implicit_tls_and_starttls_or_an_unreadable_ca_is_refused(tmp_path):
    smtp = {"host": "smtp.qq.com", "port": 465, "sender": "c@x.org", "implicit_tls": True}
    assert run_cli("check", "--config", str(write_center(tmp_path, notify={"smtp": smtp}))).returncode == 0
    r = run_cli("check", "--config", str(write_center(tmp_path, notify={"smtp": smtp | {"starttls": True}})))
    assert r.returncode == 78 and "notify.smtp: " in r.stderr and "exclude each other" in r.stderr, r.stderr
    unreadable = smtp | {"ca_file": str(tmp_path / "no-such-ca.crt")}
    r = run_cli("check", "--config", str(write_center(tmp_path, notify={"smtp": unreadable})))
    assert r.returncode == 78 and "notify.smtp.ca_file: " in r.stderr and "cannot read it" in r.stderr, r.stderr


def test_a_database_that_cannot_be_reached_is_one_clear_line_and_exit_75(tmp_path):
    config = write_center(tmp_path, "postgresql+psycopg://c:secret-pw@127.0.0.1:1/c")
    for command in (("run",), ("db", "upgrade")):
        r = run_cli(*command, "--config", str(config))
        assert r.returncode == 75, (command, r.stderr)
        assert "the database cannot be used: " in r.stderr and "127.0.0.1" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "secret-pw" not in r.stderr, r.stderr


def test_db_upgrade_brings_sqlite_and_postgresql_to_the_newest_schema(tmp_path, db_url):
    config = write_center(tmp_path, db_url)
    assert current(db_url) is None
    r = run_cli("db", "upgrade", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert current(db_url) == head()
    assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0  # again: nothing to do


def test_a_postgresql_center_refuses_to_run_on_an_old_schema(tmp_path, pg_cluster):
    config = write_center(tmp_path, pg_cluster.new_database())
    r = run_cli("run", "--config", str(config))
    assert r.returncode == 75 and "edge-center db upgrade" in r.stderr


def test_a_database_migrated_by_a_newer_center_is_refused_with_the_reason(tmp_path, db_url):
    """After going back to an older package (an upgrade undone), the database is at a revision this code does
    not know: every command says so, and exits 78 (systemd does not restart it in a loop), no traceback."""
    config = write_center(tmp_path, db_url)
    assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    for command in (("run",), ("db", "upgrade"), ("user", "add", "desk", "--role", "dispatcher")):
        r = run_cli(*command, "--config", str(config))
        assert r.returncode == 78, (command, r.returncode, r.stderr[-800:])
        assert "Traceback" not in r.stderr
        assert f"the database is at revision 0099, newer than this edge-center's {head()}" in r.stderr
    assert current(db_url) == "0099"  # left as it was


def test_a_sqlite_database_is_copied_before_start_up_migrates_it(tmp_path):
    """`run` migrates SQLite by itself on start: the database as it was is kept beside it, so going back to the
    package before the upgrade has a database it can use (a copy taken by SQLite's backup, WAL included)."""
    config = write_center(tmp_path)
    url = f"sqlite:///{tmp_path / 'data' / 'center.db'}"
    upgrade(url, "0004")  # as the previous package left it
    engine = make_engine(url)
    with engine.begin() as conn:
        row = "('desk', 'dispatcher', 'x', '2026-05-01 00:00:00.000000')"
        conn.execute(text(f"INSERT INTO users (name, role, token_sha256, created_at) VALUES {row}"))
    engine.dispose()
    r = run_cli("user", "add", "zhang2", "--role", "dispatcher", "--config", str(config))  # migrates on start
    assert r.returncode == 0, r.stderr
    assert current(url) == head()
    (kept,) = (tmp_path / "data").glob("center.db.at-0004.*")
    old = f"sqlite:///{kept}"
    assert current(old) == "0004"
    engine = make_engine(old)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["desk"]
    engine.dispose()
    assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0  # at the newest: nothing copied
    assert len(list((tmp_path / "data").glob("center.db.at-*"))) == 1


def test_node_add_registers_the_nodes_public_key(tmp_path):
    config = write_center(tmp_path)
    load_or_create_key(tmp_path / "keys")
    r = run_cli(
        "node",
        "add",
        "garden3-east",
        "--key",
        str(tmp_path / "keys" / "node_ed25519.pub"),
        "--config",
        str(config),
    )
    assert r.returncode == 0, r.stderr
    assert "node garden3-east registered with key" in r.stdout
    (tmp_path / "bad.pub").write_text("not a key\n")
    r = run_cli("node", "add", "garden3-east", "--key", str(tmp_path / "bad.pub"), "--config", str(config))
    assert r.returncode == 65 and "not base64" in r.stderr
    r = run_cli(
        "node", "add", "../etc", "--key", str(tmp_path / "keys" / "node_ed25519.pub"), "--config", str(config)
    )
    assert r.returncode == 64


def test_a_grid_worker_user_must_be_a_worker_of_the_roster(tmp_path):
    config = write_center(tmp_path)
    r = run_cli("user", "add", "x", "--role", "grid_worker", "--worker", "nobody", "--config", str(config))
    assert r.returncode == 64 and "not a worker id" in r.stderr
    r = run_cli("user", "add", "z", "--role", "grid_worker", "--worker", "zhang", "--config", str(config))
    assert r.returncode == 0 and r.stdout.startswith("ec_")


@pytest.mark.parametrize("name", ["desk a", "a/b", "王芳", "..", "d" * 81])
def test_a_user_name_the_pages_would_refuse_is_refused_by_user_add_too(tmp_path, name):
    config = write_center(tmp_path)
    r = run_cli("user", "add", name, "--role", "dispatcher", "--config", str(config))
    assert r.returncode == 64 and "letters, digits" in r.stderr
    r = run_cli("user", "add", "desk-a", "--role", "dispatcher", "--config", str(config))  # the control
    assert r.returncode == 0 and r.stdout.startswith("ec_")


def test_the_examples_commented_out_in_center_example_are_valid_once_put_in(tmp_path, monkeypatch):
    """An installer uncomments them: `${NAME}` inside {...} must be quoted, or the file is not YAML."""
    from center.config import load_center_config

    for name in ("CENTER_MQTT_PASSWORD", "PG_PASSWORD", "WEBHOOK_SECRET", "WECOM_KEY", "SMTP_PASSWORD"):
        monkeypatch.setenv(name, "x")
    (tmp_path / "ca.crt").write_text("a CA\n")
    lines = []
    for line in (REPO / "configs" / "center" / "center.example.yaml").read_text().splitlines():
        listed = re.fullmatch(r"(\s*\w+: )\[\]\s+# (\[.*\])", line)  # `webhooks: []  # [{...}]`
        m = listed or re.fullmatch(r"(\s*)# (\w+: \{.*\})(\s+#.*)?", line)  # `# smtp: {...}`
        if m:
            line = m[1] + m[2]
        lines.append(line.replace("/etc/edge-center/ca.crt", str(tmp_path / "ca.crt")))
    text = "\n".join(lines) + "\n"
    (tmp_path / "center.yaml").write_text(text)
    roster = REPO / "configs" / "center" / "roster.example.yaml"
    (tmp_path / "roster.example.yaml").write_text(roster.read_text())
    cfg = load_center_config(tmp_path / "center.yaml")
    assert cfg.database.url and cfg.mqtt.tls and cfg.notify.smtp
    assert cfg.notify.webhooks[0].secret.get_secret_value() == "x" and cfg.notify.wecom


@pytest.mark.parametrize(
    "flags, level", [([], "WARNING"), (["-v"], "INFO"), (["-vv"], "DEBUG"), (["-v", "-v"], "DEBUG")]
)
def test_verbose_once_logs_info_and_twice_debug_as_its_help_says(flags, level):
    import logging

    from center import cli

    args = cli.build_parser().parse_args([*flags, "check", "--config", "center.yaml"])
    assert logging.getLevelName(cli.log_level(args.verbose)) == level
