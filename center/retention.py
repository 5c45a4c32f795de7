"""The center's retention: a closed case's evidence files are deleted `retention.evidence_days` after it closed.

Only files go. The case, its events, its history, its verdict and every Evidence row (with each file's SHA-256)
stay, and so does each event's signed manifest: a few KB that still prove, signed by the node, what the
deleted files were. A case that is open (not resolved or dismissed) or whose evidence is held (its last
hold/release is a hold, center.loop.Loop.held) keeps everything. Each case swept gets one history row,
`retention`, saying how many files went, how many bytes, and how many were already gone.

An event that never got a case (its files came, its alert never did: lost, or made up by a misbehaving node)
loses its files, the manifest kept, `evidence_days` after the center first heard of it; its rows stay too. An
alert that attaches it to a case before the sweep locks it wins: the case keeps its files, for the case sweep.

Each Evidence row whose file a sweep deleted (or found already gone) is marked with the sweep's time
(`Evidence.swept_at`); a row not marked is still to be swept. The mark is the row's own, never a comparison of
times: a file whose row was stamped before a sweep but committed after it (a node's outbox delivering while the
sweep runs, another instance's ingest) is unmarked, and goes at the next round.

Several instances sharing one PostgreSQL database (and one data_dir) never sweep a case (or event) twice: each is
taken with a row lock that the others skip (SKIP LOCKED), and is checked again once locked, so a hold given at
that moment, or another instance's sweep just committed, is seen. SQLite's BEGIN IMMEDIATE serialises the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from center.config import RetentionConfig
from center.db import Case, Event, Evidence, History, utcnow
from center.files import EvidenceFiles, OutsideDataDir
from center.loop import SYSTEM
from center.models import Action, CaseState

log = logging.getLogger(__name__)

RETENTION = "retention"  # the history action of a sweep (History.action; not a person's Action)
KEPT_KINDS = ("manifest",)  # the node's signed list of the files and their digests: tiny, and the proof
SWEEP_EVERY_S = 600.0  # a case is due days after it closed: ten minutes late is nothing, and costs one query
CASES_PER_ROUND = 50  # the timer thread also escalates every second: a round stays short; a backlog goes on
# at the next tick
EVENTS_PER_ROUND = 50  # events without a case, bounded apart from the cases: a node sending files for made-up
# event ids must neither stretch a round nor starve the cases' sweep
FAILED_RETRY_S = 24 * 3600.0  # a case whose files could not all be deleted (logged) is tried again a day later:
# retried at every round, enough of them would fill every round and stop the sweep of the others
DISK_WARN_EVERY_S = 6 * 3600.0  # while the disk stays low, the warning is repeated this often (not every round)
CLOCK_AHEAD_WARN_S = 3600.0  # the wall clock this far ahead of the time seen passing is said in the log (once):
# less is NTP settling after a start, not a step worth a line


@dataclass
class Swept:
    """What one round did."""

    cases: int = 0
    files: int = 0
    bytes: int = 0
    missing: int = 0  # files of a swept case already gone from disk
    failed: int = 0  # files that could not be deleted (logged; their case is tried again after FAILED_RETRY_S)
    more: bool = False  # the round stopped at CASES_PER_ROUND or EVENTS_PER_ROUND: more are due now
    events: int = 0  # events without a case whose files went
    event_files: int = 0
    event_bytes: int = 0
    event_missing: int = 0


@dataclass
class Deleted:
    """The files of one case or event that one sweep deleted."""

    files: int = 0
    bytes: int = 0
    missing: int = 0
    failed: int = 0


class Usage(Protocol):
    """What shutil.disk_usage answers (a test gives its own)."""

    total: int
    free: int


@dataclass
class DiskState:
    """data_dir's disk as last measured."""

    free_share: float
    low: bool


class Retention:
    """The sweep and the disk-space guard, driven by the center's timer thread (`tick`)."""

    def __init__(
        self,
        cfg: RetentionConfig,
        sessions: sessionmaker,
        files: EvidenceFiles,
        usage: Callable[[Path], Usage] = shutil.disk_usage,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.cfg, self.sessions, self.files, self.usage, self.monotonic = cfg, sessions, files, usage, monotonic
        self.disk: DiskState | None = None
        self._next_sweep = -math.inf  # on self.monotonic: a wall clock set back must not put the next round off
        self._failing: set[int] = set()  # cases left until the next retry of failed ones
        self._failing_events: set[int] = set()  # the same, for events without a case
        self._failing_since = 0.0
        self._disk_warned_at: float | None = None
        self.passed = PassedClock()

    def tick(self, now: dt.datetime | None = None) -> None:
        """A round when one is due (at once after a start, and again at the next tick while a backlog lasts)."""
        now = now or utcnow()
        t = self.monotonic()
        if t < self._next_sweep:
            return
        self._next_sweep = t + SWEEP_EVERY_S  # a round that fails is not tried at every tick
        self.check_disk(now)
        ahead = now - self.passed.believe(now, t)
        if ahead.total_seconds() > CLOCK_AHEAD_WARN_S and not self.passed.warned:
            self.passed.warned = True  # once per run: the clock stays held back until the center restarts
            log.warning(
                "retention: the wall clock is %.1f days ahead of the time seen passing since the center started; "
                "closed cases keep their files until evidence_days by the time seen passing (a restart believes "
                "the clock again)",
                ahead.total_seconds() / 86400,
            )
        done = self.sweep(now, ahead)
        if done.more:
            self._next_sweep = -math.inf
        if done.cases:
            log.info(
                "retention: files of %d closed cases deleted (%d files, %.1f MB; %d already gone)",
                done.cases,
                done.files,
                done.bytes / 1e6,
                done.missing,
            )
        if done.events:
            log.info(
                "retention: files of %d events without a case deleted (%d files, %.1f MB; %d already gone)",
                done.events,
                done.event_files,
                done.event_bytes / 1e6,
                done.event_missing,
            )

    # -- the sweep -----------------------------------------------------------------------------------------
    def sweep(self, now: dt.datetime | None = None, ahead: dt.timedelta = dt.timedelta(0)) -> Swept:
        """Delete the files of up to CASES_PER_ROUND cases closed more than evidence_days before `now`, and of up
        to EVENTS_PER_ROUND events without a case first heard of more than evidence_days before it. `ahead`: how
        far `now` is ahead of the time seen passing (PassedClock); the cutoff is held back by that much."""
        now = now or utcnow()
        done = Swept()
        if self.cfg.evidence_days is None:
            return done
        if not 0 <= now.timestamp() - self._failing_since < FAILED_RETRY_S:  # a day on, or the clock set back
            self._failing, self._failing_events, self._failing_since = set(), set(), now.timestamp()
        cutoff = now - ahead - dt.timedelta(days=self.cfg.evidence_days)
        query = due(cutoff).where(Case.id.not_in(self._failing)).order_by(Case.resolved_at, Case.id)
        caseless = caseless_due(cutoff).where(Event.id.not_in(self._failing_events))
        with self.sessions() as s:
            ids = list(s.scalars(query.limit(CASES_PER_ROUND)))
            event_ids = list(s.scalars(caseless.order_by(Event.received_at, Event.id).limit(EVENTS_PER_ROUND)))
        for case_id in ids:
            self._sweep_case(case_id, cutoff, now, done)
        for event_pk in event_ids:
            self._sweep_event(event_pk, cutoff, now, done)
        done.more = len(ids) == CASES_PER_ROUND or len(event_ids) == EVENTS_PER_ROUND
        return done

    def _sweep_case(self, case_id: int, cutoff: dt.datetime, now: dt.datetime, done: Swept) -> None:
        with self.sessions.begin() as s:
            locked = s.scalar(select(Case.id).where(Case.id == case_id).with_for_update(skip_locked=True))
            # Read again after the lock, in a statement of its own (PostgreSQL: a fresh snapshot): a hold given,
            # or another instance's sweep committed, while this one waited is seen.
            if locked is None or s.scalar(due(cutoff).where(Case.id == case_id)) is None:
                return
            gone = self._delete(self._unswept(s, unswept(case_id)), now, f"case {case_id}")
            done.files, done.bytes, done.missing = (
                done.files + gone.files,
                done.bytes + gone.bytes,
                done.missing + gone.missing,
            )
            if gone.failed:  # the files not deleted are tried again later; those gone are marked, and recorded
                done.failed += gone.failed
                self._failing.add(case_id)
                if not (gone.files or gone.missing):
                    return
            detail = {
                "files": gone.files,
                "bytes": gone.bytes,
                "already_missing": gone.missing,
                "evidence_days": self.cfg.evidence_days,
            }
            if gone.failed:
                detail["not_deleted"] = gone.failed
            s.add(History(case_id=case_id, action=RETENTION, actor=SYSTEM, at=now, detail=detail))
            done.cases += not gone.failed

    def _sweep_event(self, event_pk: int, cutoff: dt.datetime, now: dt.datetime, done: Swept) -> None:
        with self.sessions.begin() as s:
            locked = s.scalar(select(Event.id).where(Event.id == event_pk).with_for_update(skip_locked=True))
            # Read again once locked (as for a case): an alert that attached the event to a case meanwhile wins,
            # and so does another instance's sweep of it.
            if locked is None or s.scalar(caseless_due(cutoff).where(Event.id == event_pk)) is None:
                return
            query = select(Evidence).where(Event.id == event_pk, *_caseless_unswept()).order_by(Evidence.id)
            gone = self._delete(self._unswept(s, query), now, f"event {event_pk} (no case)")
            done.event_files, done.event_bytes, done.event_missing = (
                done.event_files + gone.files,
                done.event_bytes + gone.bytes,
                done.event_missing + gone.missing,
            )
            if gone.failed:  # the files not deleted are tried again later, as a case's are
                done.failed += gone.failed
                self._failing_events.add(event_pk)
                return
            done.events += 1

    @staticmethod
    def _unswept(s: Session, query: Select) -> list[Evidence]:
        """The Evidence rows of `query`, locked until the sweep commits: the same file received again meanwhile
        (center.ingest writes it back, then clears the row's mark) clears it after this sweep's mark, not
        before, so the file written back goes at the next round."""
        return list(s.scalars(query.with_for_update(of=Evidence)))

    def _delete(self, items: Iterable[Evidence], now: dt.datetime, whose: str) -> Deleted:
        """Delete the files of these Evidence rows (the rows stay), and mark each row whose file is gone."""
        gone = Deleted()
        for item in items:
            try:
                self.files.path(item.path).unlink()
            except FileNotFoundError:
                gone.missing += 1
            except (OSError, OutsideDataDir) as exc:
                log.error("retention: cannot delete %s of %s: %s", item.path, whose, exc)
                gone.failed += 1
                continue  # not marked: tried again at a later round
            else:
                gone.files, gone.bytes = gone.files + 1, gone.bytes + item.bytes
            item.swept_at = now
        return gone

    # -- the disk ------------------------------------------------------------------------------------------
    def check_disk(self, now: dt.datetime) -> DiskState:
        """Measure data_dir's disk; warn when less than disk_warn_free_share is free (again every few hours)."""
        usage = self.usage(self.files.data_dir)
        share = usage.free / usage.total if usage.total else 0.0
        low = share < self.cfg.disk_warn_free_share
        t = now.timestamp()
        if low and (self._disk_warned_at is None or t - self._disk_warned_at >= DISK_WARN_EVERY_S):
            log.warning(
                "data_dir %s: only %.1f%% of its disk is free (%.1f GB): new evidence may soon not fit; "
                "free space, or shorten retention.evidence_days",
                self.files.data_dir,
                share * 100,
                usage.free / 1e9,
                extra={"free_share": share},
            )
            self._disk_warned_at = t
        elif not low and self._disk_warned_at is not None:
            log.info("data_dir %s: %.1f%% of its disk is free again", self.files.data_dir, share * 100)
            self._disk_warned_at = None
        self.disk = DiskState(share, low)
        return self.disk


class PassedClock:
    """The wall clock as retention believes it: never further ahead of its last reading than the time (monotonic)
    seen passing since.

    A case's age is counted by the wall clock, and the wall clock can be stepped ahead while the center runs (a
    bad time server, a hand): by it alone, every case closed up to the step's length before evidence_days ago
    would lose its files at the next round, months early. So a step ahead ages nothing: the files are kept that
    much longer, until a restart believes the clock again. A step back is believed at once (files kept longer)."""

    def __init__(self):
        self._last: tuple[dt.datetime, float] | None = None  # (believed time, monotonic) at the last reading
        self.warned = False  # whether the clock's being held back was logged

    def believe(self, wall: dt.datetime, monotonic: float) -> dt.datetime:
        if self._last is not None:
            before, seen = self._last
            wall = min(wall, before + dt.timedelta(seconds=monotonic - seen))
        self._last = (wall, monotonic)
        return wall


def due(cutoff: dt.datetime) -> Select:
    """Ids of cases whose files may go: closed before `cutoff`, not held, with a file not yet swept."""
    return select(Case.id).where(
        Case.state == CaseState.RESOLVED,
        Case.resolved_at < cutoff,  # a case exactly evidence_days old is kept: older than that, it goes
        func.coalesce(_last_hold(), "") != Action.HOLD,
        exists(_unswept_of(Case.id).correlate(Case)),
    )


def unswept(case_id: int) -> Select:
    """The case's Evidence rows (its events' files and its photos) whose files no sweep has taken yet."""
    return select(Evidence).where(Evidence.id.in_(_unswept_of(case_id))).order_by(Evidence.id)


def _unswept_of(case_id) -> Select:
    # A file that came after the case's last sweep (a node's outbox delivered late) is swept at the next round;
    # files its event lost while it had no case (an alert late by evidence_days) are marked, not counted again.
    return (
        select(Evidence.id)
        .outerjoin(Event, Evidence.event_pk == Event.id)
        .where(or_(Event.case_id == case_id, Evidence.case_id == case_id))
        .where(*_not_swept())
    )


def caseless_due(cutoff: dt.datetime) -> Select:
    """Ids of events that never got a case, first heard of before `cutoff`, with a file not yet swept."""
    return select(Event.id).where(
        Event.case_id.is_(None),
        Event.received_at < cutoff,  # as for a case: exactly evidence_days old is kept
        exists(select(Evidence.id).where(*_caseless_unswept()).correlate(Event)),
    )


def _caseless_unswept() -> list[ColumnElement[bool]]:
    """Conditions on Evidence rows, with their event, whose files may still be swept while the event has no case:
    not the manifest, not swept yet."""
    return [Evidence.event_pk == Event.id, *_not_swept()]


def _not_swept() -> list[ColumnElement[bool]]:
    """Conditions on Evidence rows whose files a sweep may still take: not the manifest, not marked swept."""
    return [Evidence.kind.not_in(KEPT_KINDS), Evidence.swept_at.is_(None)]


def _last_hold():
    """The case's latest hold or release (as center.loop.Loop.held reads it), for a query over cases."""
    return (
        select(History.action)
        .where(History.case_id == Case.id, History.action.in_((Action.HOLD, Action.RELEASE)))
        .order_by(History.id.desc())
        .limit(1)
        .correlate(Case)
        .scalar_subquery()
    )
