"""The center's retention, on SQLite and PostgreSQL: a closed case's files go `retention.evidence_days` after it
closed, never while it is held or open; its rows stay, and its history says when its files went and how many."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import logging
import os
import shutil
import threading
from types import SimpleNamespace

import pytest
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from centerkit import CenterProcess, run_cli, write_center
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parts import alert, context_of, make_parts, send
from sqlalchemy import select, update
from support.disk import small_disk
from support.servers import wait_for

from center.db import Case, Event, Evidence, History, make_engine, make_sessions, utcnow
from center.files import EvidenceFiles
from center.models import Action, CaseState, Verdict
from center.photos import keep_photo
from center.retention import RETENTION, DiskState, Retention
from edge.publish.manifest import write_manifest

DAYS = 180
JPEG = b"\xff\xd8\xff\xe0" + b"still" * 200
PHOTO = b"\xff\xd8\xff\xe1" + b"photo" * 400
CLIP = os.urandom(40_000)


@pytest.fixture
def parts(tmp_path, db_url):
    p = make_parts(tmp_path, db_url, retention={"evidence_days": DAYS})
    yield p
    p.engine.dispose()


def _retention(parts, **cfg) -> Retention:
    return Retention(parts.cfg.retention.model_copy(update=cfg), parts.sessions, parts.files)


def _case(parts, tmp_path, event_id: str, minutes_ago: int) -> int:
    """A dispatched case with a still, a clip in chunks, a signed manifest and an on-site photo."""
    at = utcnow() - dt.timedelta(minutes=minutes_ago)  # a minute apart: each alert a throw of its own
    send(parts, alert(event_id=event_id, at=at))
    _send_files(parts, tmp_path, event_id)
    with parts.sessions.begin() as s:
        case = s.scalar(select(Case).join(Event).where(Event.event_id == event_id))
        keep_photo(parts.files, parts.loop, s, case, PHOTO, "zhang")
        return case.id


def _send_files(parts, tmp_path, event_id: str) -> None:
    """What a node sends of an event besides its alert: a still, a clip in chunks and a signed manifest."""
    parts.ingest.handle(f"edge/garden3-east/events/{event_id}/snapshot", JPEG)
    parts.ingest.handle(f"edge/garden3-east/events/{event_id}/clip", _chunk(event_id))
    folder = tmp_path / f"node-{event_id}"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(CLIP)
    manifest = write_manifest(folder, ["clip.mp4"], {"node": "garden3-east"}, Ed25519PrivateKey.generate())
    parts.ingest.handle(f"edge/garden3-east/events/{event_id}/manifest", manifest.read_bytes())


def _chunk(event_id: str) -> bytes:
    from edge.publish.mqtt import chunk_payloads

    (one,) = chunk_payloads(CLIP, {"event": event_id, "node": "garden3-east", "file": "clip"}, 64 * 1024)
    return one


def _close(parts, case_id: int, closed_at: dt.datetime, resolve: bool = True) -> None:
    with parts.sessions.begin() as s:
        case = s.get(Case, case_id)
        parts.loop.act(s, case, Action.CHECK, "zhang", Verdict.FELL)
        if resolve:
            parts.loop.act(s, case, Action.RESOLVE, "zhang")
            case.resolved_at = closed_at


def _files(parts, case_id: int) -> dict[str, bool]:
    """kind -> whether its file is on disk, for every Evidence row of the case (none is ever deleted)."""
    with parts.sessions() as s:
        rows = s.scalars(
            select(Evidence)
            .outerjoin(Event, Evidence.event_pk == Event.id)
            .where((Event.case_id == case_id) | (Evidence.case_id == case_id))
        ).all()
    return {e.kind: parts.files.path(e.path).is_file() for e in rows}


def _swept(parts, case_id: int) -> list[History]:
    with parts.sessions() as s:
        q = select(History).where(History.case_id == case_id, History.action == RETENTION).order_by(History.id)
        return list(s.scalars(q))


ALL_THERE = {"snapshot": True, "clip": True, "manifest": True, "photo": True}
GONE = {"snapshot": False, "clip": False, "manifest": True, "photo": False}  # the signed manifest stays


def test_an_old_closed_case_loses_its_files_but_not_its_rows_and_its_history_says_so(parts, tmp_path):
    old, recent = _case(parts, tmp_path, "ev-old", 3), _case(parts, tmp_path, "ev-recent", 2)
    now = utcnow()  # after the files came: a sweep covers the files received before it
    _close(parts, old, now - dt.timedelta(days=DAYS + 1))
    _close(parts, recent, now - dt.timedelta(days=DAYS - 1))
    assert _files(parts, old) == ALL_THERE
    with parts.sessions() as s:
        before = {(e.kind, e.sha256, e.bytes) for e in s.scalars(select(Evidence))}

    done = _retention(parts).sweep(now)

    assert (done.cases, done.files, done.bytes) == (1, 3, len(JPEG) + len(CLIP) + len(PHOTO))
    assert _files(parts, old) == GONE
    assert _files(parts, recent) == ALL_THERE  # positive control: closed 179 days ago
    (entry,) = _swept(parts, old)
    assert (entry.actor, entry.detail) == (
        "center",
        {"files": 3, "bytes": done.bytes, "already_missing": 0, "evidence_days": DAYS},
    )
    with parts.sessions() as s:
        assert {(e.kind, e.sha256, e.bytes) for e in s.scalars(select(Evidence))} == before  # every digest kept
        case = s.get(Case, old)
        assert (case.state, case.verdict) == (CaseState.RESOLVED, Verdict.FELL)
        assert [h.action for h in case.history][-3:] == ["check", "resolve", RETENTION]
    assert _swept(parts, recent) == []


def test_a_case_closed_exactly_evidence_days_ago_is_kept_and_a_second_later_it_goes(parts, tmp_path):
    case = _case(parts, tmp_path, "ev-edge", 1)
    now = utcnow()
    _close(parts, case, now - dt.timedelta(days=DAYS))
    assert _retention(parts).sweep(now).cases == 0
    assert _files(parts, case) == ALL_THERE
    assert _retention(parts).sweep(now + dt.timedelta(seconds=1)).cases == 1
    assert _files(parts, case) == GONE


def test_a_held_case_and_an_open_one_keep_their_files_and_a_released_one_loses_them(parts, tmp_path):
    held, released, checked, dispatched = (_case(parts, tmp_path, f"ev-{n}", n) for n in range(4))
    now = utcnow()
    long_ago = now - dt.timedelta(days=DAYS * 3)
    for case in (held, released):
        _close(parts, case, long_ago)
    _close(parts, checked, long_ago, resolve=False)  # checked on site, never resolved: still open
    with parts.sessions.begin() as s:
        parts.loop.set_hold(s, s.get(Case, held), True, "desk", "")
        parts.loop.set_hold(s, s.get(Case, released), True, "desk", "")
    with parts.sessions.begin() as s:
        parts.loop.set_hold(s, s.get(Case, released), False, "desk", "the police took a copy")
        s.execute(update(Case).values(created_at=long_ago, alert_at=long_ago))  # open for years

    assert _retention(parts).sweep(now).cases == 1

    for case in (held, checked, dispatched):
        assert _files(parts, case) == ALL_THERE and _swept(parts, case) == []
    assert _files(parts, released) == GONE  # positive control: its hold was released


def test_a_second_sweep_does_nothing_and_a_file_that_came_after_goes_at_the_next(parts, tmp_path):
    case = _case(parts, tmp_path, "ev-twice", 1)
    now = utcnow()
    _close(parts, case, now - dt.timedelta(days=DAYS + 1))
    retention = _retention(parts)
    assert retention.sweep(now).cases == 1
    assert retention.sweep(now + dt.timedelta(minutes=10)).cases == 0  # nothing more to do, nothing recorded
    assert len(_swept(parts, case)) == 1

    parts.ingest.handle("edge/garden3-east/events/ev-twice/snapshot", JPEG + b"late")  # a node's outbox, late
    assert _files(parts, case)["snapshot"] is True
    done = retention.sweep(utcnow() + dt.timedelta(seconds=1))
    assert (done.cases, done.files) == (1, 1)
    assert [h.detail["files"] for h in _swept(parts, case)] == [3, 1]
    assert not any(_files(parts, case)[k] for k in ("snapshot", "clip", "photo"))


def test_a_file_already_gone_is_counted_and_does_not_stop_the_sweep(parts, tmp_path):
    first, second = _case(parts, tmp_path, "ev-a", 2), _case(parts, tmp_path, "ev-b", 1)
    now = utcnow()
    for case in (first, second):
        _close(parts, case, now - dt.timedelta(days=DAYS + 1))
    with parts.sessions() as s:
        clip = s.scalar(select(Evidence).join(Event).where(Event.case_id == first, Evidence.kind == "clip"))
    parts.files.path(clip.path).unlink()  # deleted by hand, or lost

    done = _retention(parts).sweep(now)

    assert (done.cases, done.files, done.missing) == (2, 5, 1)
    assert _swept(parts, first)[0].detail == {
        "files": 2,
        "bytes": len(JPEG) + len(PHOTO),
        "already_missing": 1,
        "evidence_days": DAYS,
    }
    assert _files(parts, first) == GONE and _files(parts, second) == GONE


def test_a_path_that_leaves_data_dir_is_never_deleted_and_its_case_is_tried_again_a_day_later(parts, tmp_path):
    bad, good = _case(parts, tmp_path, "ev-bad", 2), _case(parts, tmp_path, "ev-good", 1)
    now = utcnow()
    for case in (bad, good):
        _close(parts, case, now - dt.timedelta(days=DAYS + 1))
    outside = tmp_path / "precious.txt"
    outside.write_text("not evidence")
    with parts.sessions.begin() as s:  # a row altered by hand, or by a bug
        still = s.scalar(select(Evidence).join(Event).where(Event.case_id == bad, Evidence.kind == "snapshot"))
        still.path = "../precious.txt"

    retention = _retention(parts)
    done = retention.sweep(now)

    assert outside.read_text() == "not evidence"
    assert (done.cases, done.failed) == (1, 1)
    assert _files(parts, good) == GONE  # the other case went on
    # What did go of the failing case is in its history, and what did not is named as not deleted.
    [record] = [h.detail for h in _swept(parts, bad)]
    with parts.sessions() as s:
        went = s.scalars(
            select(Evidence.bytes)
            .outerjoin(Event, Evidence.event_pk == Event.id)
            .where((Event.case_id == bad) | (Evidence.case_id == bad), Evidence.kind.in_(("clip", "photo")))
        ).all()
    assert record == {
        "files": 2,
        "bytes": sum(went),
        "already_missing": 0,
        "evidence_days": DAYS,
        "not_deleted": 1,
    }
    assert retention.sweep(now + dt.timedelta(minutes=10)).failed == 0  # not at every round: it would crowd out
    assert retention.sweep(now + dt.timedelta(hours=25)).failed == 1  # a day later, tried again
    assert outside.read_text() == "not evidence"


def test_evidence_days_null_keeps_everything(parts, tmp_path):
    case = _case(parts, tmp_path, "ev-forever", 1)
    now = utcnow()
    _close(parts, case, now - dt.timedelta(days=3000))
    assert _retention(parts, evidence_days=None).sweep(now).cases == 0
    assert _files(parts, case) == ALL_THERE
    assert _retention(parts).sweep(now).cases == 1  # positive control


def _two_instances_sweep(parts, now: dt.datetime) -> list:
    """What two center instances on the one database, sweeping at the same moment, each did."""
    other = make_engine(parts.cfg.database_url())
    instances = [_retention(parts), Retention(parts.cfg.retention, make_sessions(other), parts.files)]
    start = threading.Barrier(2)
    results: list = []

    def run(r):
        start.wait()
        results.append(r.sweep(now))

    threads = [threading.Thread(target=run, args=(r,)) for r in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.dispose()
    return results


def test_two_instances_sweeping_at_once_sweep_each_case_once(parts, tmp_path):
    cases = [_case(parts, tmp_path, f"ev-{n}", n + 1) for n in range(6)]
    now = utcnow()
    for case in cases:
        _close(parts, case, now - dt.timedelta(days=DAYS + 1))
    results = _two_instances_sweep(parts, now)

    assert sum(r.cases for r in results) == len(cases)
    assert sum(r.missing for r in results) == 0  # no case's files were looked at twice
    assert all(len(_swept(parts, c)) == 1 for c in cases)


def test_a_backlog_is_swept_a_bounded_round_at_a_time(parts, tmp_path, monkeypatch):
    monkeypatch.setattr("center.retention.CASES_PER_ROUND", 2)
    cases = [_case(parts, tmp_path, f"ev-{n}", n + 1) for n in range(3)]
    now = utcnow()
    for case in cases:
        _close(parts, case, now - dt.timedelta(days=DAYS + 1))
    retention = _retention(parts)
    first = retention.sweep(now)
    assert (first.cases, first.more) == (2, True)
    second = retention.sweep(now)
    assert (second.cases, second.more) == (1, False)


def _usage(free: int, total: int = 1000):
    return lambda _path: SimpleNamespace(total=total, free=free)


def test_a_disk_running_low_is_warned_once_until_it_recovers(parts, caplog):
    caplog.set_level(logging.INFO, logger="center.retention")
    usage = {"now": _usage(50)}
    retention = Retention(parts.cfg.retention, parts.sessions, parts.files, lambda p: usage["now"](p))
    now = utcnow()
    assert retention.check_disk(now) == DiskState(0.05, True)
    assert retention.check_disk(now + dt.timedelta(minutes=10)).low  # still low: not said again so soon
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "only 5.0% of its disk is free" in warnings[0].getMessage()
    assert retention.check_disk(now + dt.timedelta(hours=7)).low
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # reminded hours later
    usage["now"] = _usage(500)
    caplog.clear()
    assert retention.check_disk(now + dt.timedelta(hours=8)) == DiskState(0.5, False)
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # positive control: "free again", no warning


def test_a_clock_set_back_does_not_stop_the_sweep_and_the_disk_check_until_it_catches_up(parts, tmp_path):
    """A center that ran with its clock a week ahead (a bad time server) until NTP set it back: rounds are due by
    the time that passed, not by the wall clock, or neither files nor the disk's free space would be looked at
    for a week while the disk fills."""
    measured: list[str] = []

    def usage(_path):
        measured.append("disk")
        return SimpleNamespace(total=1000, free=500)

    mono = [1000.0]
    retention = Retention(parts.cfg.retention, parts.sessions, parts.files, usage, monotonic=lambda: mono[0])
    ahead = utcnow() + dt.timedelta(days=7)
    retention.tick(ahead)
    assert measured == ["disk"]
    mono[0] += 60.0
    retention.tick(ahead + dt.timedelta(minutes=1))
    assert measured == ["disk"]  # the control: not due again a minute later
    case = _case(parts, tmp_path, "ev-after-the-step", 1)
    _close(parts, case, utcnow() - dt.timedelta(days=DAYS + 1))
    mono[0] += 600.0  # ten minutes on, the clock a week earlier than at the last round
    retention.tick(utcnow())
    assert measured == ["disk", "disk"] and _files(parts, case) == GONE


def test_a_clock_stepped_ahead_while_the_center_runs_deletes_no_files_before_their_days(parts, tmp_path, caplog):
    """A bad time server steps the center's clock two months ahead: a case closed 150 days ago must keep its
    files its 180 days of time that really passed, not lose them at the next round."""
    mono = [1000.0]
    retention = Retention(parts.cfg.retention, parts.sessions, parts.files, _usage(500), monotonic=lambda: mono[0])
    real = utcnow()
    young, old = _case(parts, tmp_path, "ev-150-days", 2), _case(parts, tmp_path, "ev-180-days", 1)
    _close(parts, young, real - dt.timedelta(days=150))
    _close(parts, old, real + dt.timedelta(minutes=5) - dt.timedelta(days=DAYS))  # 180 days in 5 minutes
    retention.tick(real)
    assert _files(parts, young) == ALL_THERE and _files(parts, old) == ALL_THERE
    mono[0] += 600.0
    retention.tick(real + dt.timedelta(days=60))  # ten minutes later, by a clock stepped two months ahead
    assert _files(parts, young) == ALL_THERE and "wall clock is 60.0 days ahead" in caplog.text
    assert _files(parts, old) == GONE  # the control: 180 days and 5 minutes of time that passed, it goes
    # A restart believes the clock again (as the node does): then it goes.
    fresh = Retention(parts.cfg.retention, parts.sessions, parts.files, _usage(500), monotonic=lambda: mono[0])
    fresh.tick(real + dt.timedelta(days=60))
    assert _files(parts, young) == GONE


@pytest.mark.parametrize(
    ("section", "why"),
    [
        ({"evidence_days": 0}, "retention.evidence_days: Input should be greater than or equal to 1"),
        ({"evidence_days": 4000}, "retention.evidence_days: Input should be less than or equal to 3650"),
        ({"disk_warn_free_share": 1.5}, "retention.disk_warn_free_share: Input should be less than or equal"),
        ({"keep_days": 30}, "retention.keep_days: "),
    ],
)
def test_retention_settings_out_of_bounds_are_refused_with_exit_78(tmp_path, section, why):
    r = run_cli("check", "--config", str(write_center(tmp_path, retention=section)))
    assert r.returncode == 78 and why in r.stderr, r.stderr
    good = write_center(tmp_path, retention={"evidence_days": None, "disk_warn_free_share": 0})
    assert run_cli("check", "--config", str(good)).returncode == 0  # positive control: null and 0 accepted


def test_the_running_center_sweeps_on_its_timer(tmp_path, db_url, broker):
    parts = make_parts(tmp_path, db_url, broker=broker, retention={"evidence_days": DAYS})
    case = _case(parts, tmp_path, "ev-run", 1)
    _close(parts, case, utcnow() - dt.timedelta(days=DAYS + 1))
    parts.engine.dispose()
    center = CenterProcess(tmp_path / "center-center-1.yaml").start()
    try:
        assert wait_for(lambda: _swept(parts, case), 30), center.output()[-2000:]
    finally:
        assert center.stop() == 0
    assert _files(parts, case) == GONE


def test_the_police_archive_says_a_file_was_deleted_by_retention_not_that_it_never_came(parts, tmp_path):
    import io
    import json
    import zipfile

    from center.web.export import archive

    case_id = _case(parts, tmp_path, "ev-archived", 3)
    _close(parts, case_id, utcnow() - dt.timedelta(days=DAYS + 1))
    ctx = context_of(parts)

    def clip_check() -> str:
        with parts.sessions() as s:
            data = archive(ctx, s, s.get(Case, case_id), "disp")
        (check,) = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("verification.json"))
        return check["files"]["clip.mp4"]

    assert clip_check() == "ok"  # control: before the sweep the clip is in the archive
    now = utcnow()
    _retention(parts).sweep(now)
    assert (
        clip_check() == f"received; gone from the center's disk since its retention sweep of "
        f"{now.isoformat(timespec='seconds')} (deleted by it, or already missing then)"
    )


def test_a_file_that_comes_again_after_its_case_was_swept_goes_at_the_next_sweep(parts, tmp_path):
    case_id = _case(parts, tmp_path, "ev-again", 3)
    _close(parts, case_id, utcnow() - dt.timedelta(days=DAYS + 1))
    _retention(parts).sweep(utcnow())
    assert _files(parts, case_id) == GONE
    parts.ingest.handle("edge/garden3-east/events/ev-again/clip", _chunk("ev-again"))  # the same clip, again
    assert _files(parts, case_id)["clip"]  # back on the disk: a QoS 1 repeat, or asked for again
    _retention(parts).sweep(utcnow())
    assert _files(parts, case_id) == GONE
    assert len(_swept(parts, case_id)) == 2


# -- files of events that never got a case -----------------------------------------------------------------
def _caseless(parts, tmp_path, event_id: str, days_ago: float) -> None:
    """Files of an event whose alert never came (lost, or made up by a misbehaving node): a still, a clip in
    chunks and a signed manifest, the event first seen `days_ago`."""
    _send_files(parts, tmp_path, event_id)
    with parts.sessions.begin() as s:
        ev = s.scalar(select(Event).where(Event.event_id == event_id))
        assert ev.case_id is None
        ev.received_at = utcnow() - dt.timedelta(days=days_ago)
        for item in ev.evidence:
            item.received_at = ev.received_at


def _event_files(parts, event_id: str) -> dict[str, bool]:
    """kind -> whether its file is on disk, for every Evidence row of the event."""
    with parts.sessions() as s:
        rows = s.scalars(select(Evidence).join(Event).where(Event.event_id == event_id)).all()
    return {e.kind: parts.files.path(e.path).is_file() for e in rows}


EVENT_THERE = {"snapshot": True, "clip": True, "manifest": True}
EVENT_GONE = {"snapshot": False, "clip": False, "manifest": True}


def test_an_old_event_without_a_case_loses_its_files_but_not_its_rows(parts, tmp_path):
    _caseless(parts, tmp_path, "ev-orphan", DAYS + 1)
    _caseless(parts, tmp_path, "ev-young", DAYS - 1)
    with parts.sessions() as s:
        before = {(e.kind, e.sha256, e.bytes) for e in s.scalars(select(Evidence))}

    done = _retention(parts).sweep(utcnow())

    assert (done.events, done.event_files, done.event_bytes, done.cases) == (1, 2, len(JPEG) + len(CLIP), 0)
    assert _event_files(parts, "ev-orphan") == EVENT_GONE  # the signed manifest stays
    assert _event_files(parts, "ev-young") == EVENT_THERE  # positive control: first seen 179 days ago
    with parts.sessions() as s:
        assert {(e.kind, e.sha256, e.bytes) for e in s.scalars(select(Evidence))} == before  # every digest kept
        assert {e.event_id for e in s.scalars(select(Event))} == {"ev-orphan", "ev-young"}


def test_the_round_logs_how_many_files_of_events_without_a_case_went(parts, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="center.retention")
    _caseless(parts, tmp_path, "ev-logged", DAYS + 1)
    _retention(parts).tick(utcnow())
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "files of 1 events without a case deleted (2 files, 0.0 MB; 0 already gone)" in line, line
    assert _event_files(parts, "ev-logged") == EVENT_GONE


def test_an_event_with_a_case_is_left_to_the_case_sweep(parts, tmp_path):
    case = _case(parts, tmp_path, "ev-cased", 1)  # open: its files stay whatever its age
    _caseless(parts, tmp_path, "ev-orphan", DAYS + 1)
    with parts.sessions.begin() as s:
        s.execute(update(Event).where(Event.case_id == case).values(received_at=utcnow() - dt.timedelta(days=999)))

    done = _retention(parts).sweep(utcnow())

    assert (done.events, done.cases) == (1, 0)
    assert _files(parts, case) == ALL_THERE
    assert _event_files(parts, "ev-orphan") == EVENT_GONE  # positive control: the caseless one went
    _close(parts, case, utcnow() - dt.timedelta(days=DAYS + 1))
    done = _retention(parts).sweep(utcnow())
    assert (done.events, done.cases) == (0, 1)  # the case sweep took it, with its history entry
    assert _files(parts, case) == GONE and len(_swept(parts, case)) == 1


def test_a_late_file_of_a_swept_event_without_a_case_goes_at_a_later_round(parts, tmp_path):
    _caseless(parts, tmp_path, "ev-late", DAYS + 1)
    retention = _retention(parts)
    assert retention.sweep(utcnow()).events == 1
    again = retention.sweep(utcnow() + dt.timedelta(minutes=10))
    assert (again.events, again.event_files, again.event_missing) == (0, 0, 0)  # never the same files twice

    parts.ingest.handle("edge/garden3-east/events/ev-late/snapshot", JPEG + b"late")  # a node's outbox, late
    parts.ingest.handle("edge/garden3-east/events/ev-late/clip", _chunk("ev-late"))  # the same clip, again
    assert _event_files(parts, "ev-late") == {"snapshot": True, "clip": True, "manifest": True}
    done = retention.sweep(utcnow() + dt.timedelta(seconds=1))
    assert (done.events, done.event_files, done.event_missing) == (1, 2, 0)
    assert _event_files(parts, "ev-late") == EVENT_GONE


def test_an_alert_that_attaches_the_event_before_the_sweeps_lock_keeps_its_files(parts, tmp_path, monkeypatch):
    _caseless(parts, tmp_path, "ev-rescued", DAYS + 1)
    _caseless(parts, tmp_path, "ev-lost", DAYS + 1)
    sweep_event = Retention._sweep_event

    def alert_first(self, event_pk, *args):
        with parts.sessions() as s:
            name = s.get(Event, event_pk).event_id
        if name == "ev-rescued":  # chosen by the round, attached before its lock
            send(parts, alert(event_id="ev-rescued"))
        return sweep_event(self, event_pk, *args)

    monkeypatch.setattr(Retention, "_sweep_event", alert_first)
    done = _retention(parts).sweep(utcnow())

    assert done.events == 1
    assert _event_files(parts, "ev-rescued") == EVENT_THERE
    assert _event_files(parts, "ev-lost") == EVENT_GONE  # positive control: the one without an alert went
    with parts.sessions() as s:
        assert s.scalar(select(Event.case_id).where(Event.event_id == "ev-rescued")) is not None


def test_a_case_whose_event_was_swept_without_a_case_does_not_count_those_files_again(parts, tmp_path):
    _caseless(parts, tmp_path, "ev-swept-first", DAYS + 1)
    assert _retention(parts).sweep(utcnow()).events == 1
    send(parts, alert(event_id="ev-swept-first"))  # the alert, at last
    parts.ingest.handle("edge/garden3-east/events/ev-swept-first/snapshot", JPEG + b"new")
    with parts.sessions() as s:
        case = s.scalar(select(Event.case_id).where(Event.event_id == "ev-swept-first"))
    _close(parts, case, utcnow() - dt.timedelta(days=DAYS + 1))
    done = _retention(parts).sweep(utcnow() + dt.timedelta(seconds=1))
    assert (done.cases, done.files, done.missing, done.events) == (1, 1, 0, 0)  # only the still that came since
    assert _swept(parts, case)[0].detail["already_missing"] == 0


def test_two_instances_sweep_each_event_without_a_case_once(parts, tmp_path):
    for n in range(6):
        _caseless(parts, tmp_path, f"ev-{n}", DAYS + 1)
    results = _two_instances_sweep(parts, utcnow())

    assert sum(r.events for r in results) == 6
    assert sum(r.event_files for r in results) == 12
    assert sum(r.event_missing for r in results) == 0  # no event's files were looked at twice
    assert all(_event_files(parts, f"ev-{n}") == EVENT_GONE for n in range(6))


def test_a_backlog_of_events_without_a_case_is_swept_a_bounded_round_at_a_time(parts, tmp_path, monkeypatch):
    monkeypatch.setattr("center.retention.EVENTS_PER_ROUND", 2)
    for n in range(3):
        _caseless(parts, tmp_path, f"ev-{n}", DAYS + 1)
    retention = _retention(parts)
    first = retention.sweep(utcnow())
    assert (first.events, first.more) == (2, True)
    second = retention.sweep(utcnow())
    assert (second.events, second.more) == (1, False)


def _archived_clip(parts, event_id: str) -> str:
    """What the police archive of the event's case says of its clip."""
    import io
    import json
    import zipfile

    from center.web.export import archive

    with parts.sessions() as s:
        case = s.get(Case, s.scalar(select(Event.case_id).where(Event.event_id == event_id)))
        data = archive(context_of(parts), s, case, "disp")
    checks = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("verification.json"))
    (check,) = [c for c in checks if c["event"] == event_id]
    return check["files"]["clip.mp4"]


def test_the_archive_of_a_case_whose_event_was_swept_before_its_alert_says_retention_deleted_it(parts, tmp_path):
    _caseless(parts, tmp_path, "ev-swept-early", DAYS + 1)
    _caseless(parts, tmp_path, "ev-kept", DAYS - 1)
    swept = utcnow()
    _retention(parts).sweep(swept)
    send(parts, alert(event_id="ev-swept-early"))  # the alert, at last
    send(parts, alert(event_id="ev-kept", floor=20))  # another throw: a case of its own
    assert _archived_clip(parts, "ev-kept") == "ok"  # control: a file not swept is in the archive
    assert _archived_clip(parts, "ev-swept-early") == (
        "received; gone from the center's disk since its retention sweep of "
        f"{swept.isoformat(timespec='seconds')} (deleted by it, or already missing then), before the event's "
        "alert came"
    )


def test_the_archive_gives_each_file_its_own_deletion_time_and_says_a_case_sweep_was_after_the_alert(
    parts, tmp_path
):
    _caseless(parts, tmp_path, "ev-both", DAYS + 1)
    early = utcnow() - dt.timedelta(minutes=5)
    _retention(parts).sweep(early)  # the clip goes while the event has no case
    send(parts, alert(event_id="ev-both"))
    parts.ingest.handle("edge/garden3-east/events/ev-both/clip", _chunk("ev-both"))  # asked for again: back
    assert _archived_clip(parts, "ev-both") == "ok"  # control: received again, it is in the archive
    with parts.sessions() as s:
        case = s.scalar(select(Event.case_id).where(Event.event_id == "ev-both"))
    _close(parts, case, utcnow() - dt.timedelta(days=DAYS + 1))
    later = utcnow() + dt.timedelta(seconds=1)
    assert _retention(parts).sweep(later).files == 1  # the case's sweep, long after the alert joined it
    assert _archived_clip(parts, "ev-both") == (
        "received; gone from the center's disk since its retention sweep of "
        f"{later.isoformat(timespec='seconds')} (deleted by it, or already missing then)"
    )


def _stamped(parts, monkeypatch, topic: str, payload: bytes, at: dt.datetime) -> str:
    """A file whose row is stamped `at` but committed now: a node's outbox delivering while a sweep runs (the
    row written after the sweep read the case), or another center instance whose ingest ran slow. Its path."""
    with monkeypatch.context() as m:
        m.setattr("center.ingest.utcnow", lambda: at)
        parts.ingest.handle(topic, payload)
    with parts.sessions() as s:
        path = s.scalar(select(Evidence.path).where(Evidence.sha256 == hashlib.sha256(payload).hexdigest()))
    assert parts.files.path(path).is_file()
    return path


def test_a_file_committed_after_its_cases_sweep_but_stamped_before_it_goes_at_the_next_round(
    parts, tmp_path, monkeypatch
):
    case = _case(parts, tmp_path, "ev-race", 1)
    now = utcnow()
    _close(parts, case, now - dt.timedelta(days=DAYS + 1))
    retention = _retention(parts)
    assert retention.sweep(now).cases == 1
    topic = "edge/garden3-east/events/ev-race/snapshot"
    raced = _stamped(parts, monkeypatch, topic, JPEG + b"raced", now - dt.timedelta(seconds=1))  # before the sweep
    late = _stamped(parts, monkeypatch, topic, JPEG + b"late", now + dt.timedelta(minutes=1))  # control: after

    done = retention.sweep(now + dt.timedelta(minutes=10))

    assert not parts.files.path(late).is_file()
    assert not parts.files.path(raced).is_file()  # not left on the disk for ever
    assert (done.cases, done.files, done.missing) == (1, 2, 0)
    assert [h.detail["files"] for h in _swept(parts, case)] == [3, 2]


def test_a_file_of_an_event_without_a_case_committed_after_its_sweep_but_stamped_before_goes_at_the_next_round(
    parts, tmp_path, monkeypatch
):
    _caseless(parts, tmp_path, "ev-race", DAYS + 1)
    retention = _retention(parts)
    now = utcnow()
    assert retention.sweep(now).events == 1
    with parts.sessions() as s:
        first = s.scalar(select(Event.received_at).where(Event.event_id == "ev-race"))
    topic = "edge/garden3-east/events/ev-race/snapshot"
    # Stamped before the files the sweep took (two of the node's files written at once, this one committed last).
    raced = _stamped(parts, monkeypatch, topic, JPEG + b"raced", first - dt.timedelta(seconds=1))
    late = _stamped(parts, monkeypatch, topic, JPEG + b"late", now)  # control: stamped after them

    done = retention.sweep(now + dt.timedelta(minutes=10))

    assert not parts.files.path(late).is_file()
    assert not parts.files.path(raced).is_file()  # not left on the disk for ever
    assert (done.events, done.event_files, done.event_missing) == (1, 2, 0)


def test_a_file_whose_sweep_time_was_never_kept_is_said_gone_after_its_old_mark_not_on_it(parts, tmp_path):
    """Revision 0008 gave a file an event sweep took before it only its event's old mark (the newest file taken);
    the archive must not give that as the day the file went."""
    _caseless(parts, tmp_path, "ev-upgraded", DAYS + 1)
    _retention(parts).sweep(utcnow())
    with parts.sessions.begin() as s:  # as revision 0008 left it
        clip = s.scalar(
            select(Evidence).join(Event).where(Event.event_id == "ev-upgraded", Evidence.kind == "clip")
        )
        clip.swept_at = mark = clip.received_at
    send(parts, alert(event_id="ev-upgraded"))
    assert _archived_clip(parts, "ev-upgraded") == (
        "received; gone from the center's disk since a retention sweep after "
        f"{mark.isoformat(timespec='seconds')} (deleted by it, or already missing then), before the event's "
        "alert came"
    )


@pytest.fixture
def small_data_dir(tmp_path):
    """A data_dir on a disk of 256 KiB (a tmpfs: needs root)."""
    with small_disk(tmp_path / "small", "256k") as data:
        yield data


def test_a_file_the_full_disk_cut_short_leaves_no_partial_file_behind(small_data_dir):
    """A clip that does not fit is refused (the broker gives it again later), and the part of it written must
    not stay: on a full disk it is the space the next alert's still needs, and no retention knows of it."""
    files = EvidenceFiles(small_data_dir)
    with pytest.raises(OSError) as why:
        files.write("garden3-east", "20261101T000000-east-0000001-1", "clip-0.mp4", os.urandom(400_000))
    assert why.value.errno == errno.ENOSPC
    left = [p for p in small_data_dir.rglob("*") if p.is_file()]
    assert left == [] and shutil.disk_usage(small_data_dir).used < 64_000
    # the control: a still that fits is kept
    rel = files.write("garden3-east", "20261101T000000-east-0000001-1", "snapshot-0.jpg", JPEG)
    assert files.path(rel).read_bytes() == JPEG
