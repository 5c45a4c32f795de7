"""The closed loop: cases made from alerts (one per throw), dispatch, the actions of people, escalation.

Every function here works inside the caller's transaction: the case, its history and the notices it causes
are committed together or not at all (the notices are rows of the durable job queue, sent by center.notify).
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from center.config import CenterConfig
from center.db import Audit, Case, Event, Evidence, History, Job, utcnow
from center.models import TRANSITIONS, Action, CaseState, JobState, Level, Verdict
from center.roster import Roster

SYSTEM = "center"  # the actor of what the center does by itself
LEVEL_RANK = {Level.SUSPECTED: 0, Level.CONFIRMED: 1}
OFFICE_LEVEL = 2  # escalation steps: 0 the worker on duty (or, for a suspected alert, the office's review),
# 1 the grid leader, 2 the office
OFFICE = "office"  # the assignee and notice target that is the community office (its dispatchers)
REASSIGNABLE = (CaseState.DISPATCHED, CaseState.ACKNOWLEDGED)  # someone has it, and nobody has checked yet
VERDICT_STEPS = (Action.CHECK, Action.RESOLVE)  # the steps that say what was found on site
HOLD_CHANNELS = ("hold", "release")  # evidence hold ON and OFF, both sent by notify.HoldNotifier
HOLD_WHYS = ("thrown", "exported", "by_hand")  # why a case's evidence was held (its history's "why")
ADMIN_RELEASE_WHYS = ("thrown", "exported")  # why only an admin may release a case's hold (release_needs_admin)


def release_needs_admin(s: Session, case: Case) -> str | None:
    """Why only an admin may release the case's evidence hold (of ADMIN_RELEASE_WHYS), or None when staff may.

    A thrown object is a crime, and evidence exported was given to someone (the police) who may ask for the
    original long after: neither is a dispatcher's alone to let go. Every export is in the audit log, also
    one of a case that was held already (which adds no hold to its history)."""
    if case.verdict == Verdict.THROWN or _said_thrown(s, case):
        return "thrown"
    exported = select(Audit.id).where(Audit.action == "export", Audit.target == f"case:{case.id}").limit(1)
    return "exported" if s.scalar(exported) is not None else None


def _said_thrown(s: Session, case: Case) -> bool:
    """Whether any on-site step of the case said thrown: a later resolve with another verdict corrects the case,
    but does not make a crime's evidence a dispatcher's to let go. A case's history is a few dozen rows."""
    steps = select(History.detail).where(History.case_id == case.id, History.action.in_(VERDICT_STEPS))
    return any(isinstance(d, dict) and d.get("verdict") == Verdict.THROWN for d in s.scalars(steps))


def dismissed(case: Case) -> bool:
    """A case a dispatcher closed as a false alarm without dispatching it (a dismissed suspected alert)."""
    return case.state == CaseState.RESOLVED and case.dispatched_at is None


class Refused(Exception):
    """An action that the case's state or the actor's role does not allow (HTTP 409/403).

    `why` is the API's English; `key` and `fields` name the same message in the pages' catalogue
    (center/web/i18n.py: `refused.<key>`), whose fields `action` and `state` are translated there too."""

    def __init__(self, why: str, status: int = 409, key: str = "step", **fields: str):
        super().__init__(why)
        self.status, self.key, self.fields = status, key, fields


@dataclass
class Loop:
    cfg: CenterConfig
    roster: Roster

    # -- alerts to cases -----------------------------------------------------------------------------------
    def attach(self, s: Session, ev: Event, now: dt.datetime | None = None) -> Case:
        """Put an event into a case: the open case of the same throw (another camera, within dedup window and
        floors), or a new one. A confirmed case is dispatched at once; a suspected one waits for review."""
        now = now or utcnow()
        building = self.roster.building_of(ev.node, ev.camera)
        alert_at = ev.alert_at or now
        self._lock_place(s, building or f"node:{ev.node}")
        case = self._same_throw(s, ev, building, alert_at)
        if case is None:
            case = Case(
                state=CaseState.NEW,
                level=ev.level or Level.SUSPECTED,
                building=building,
                floor=ev.floor,
                alert_at=alert_at,
                created_at=now,
                escalation=0,
            )
            s.add(case)
            s.flush()
            self.record(s, case, Action.CREATED, SYSTEM, now, {"event": f"{ev.node}/{ev.event_id}"})
        else:
            self.record(s, case, Action.EVIDENCE, SYSTEM, now, {"event": f"{ev.node}/{ev.event_id}"})
            if self.held(s, case):  # an alert that came after the hold (a node's outbox late): kept like the rest
                payload = {"id": ev.event_id, "node": ev.node, "hold": True}
                self.queue(s, case.id, "hold", ev.node, payload, now)
        ev.case_id = case.id
        ev.case = case
        if case.verdict is not None:  # checked before this alert came (a node's outbox late): told it too
            by = case.checked_by or case.resolved_by or SYSTEM
            self.feedback(s, case, by, now, events=[ev], at=case.checked_at or case.resolved_at)
        self.level_changed(s, case, ev.level, now)
        if case.state == CaseState.NEW and case.assignee is None:  # a suspected alert, new: to the office
            self._ask_review(s, case, now)
        return case

    def level_changed(self, s: Session, case: Case, level: str | None, now: dt.datetime) -> None:
        """An alert of the case was raised (or joined) at `level`: a confirmed one is dispatched at once, and a
        dismissed one that its node confirmed after all is opened again and dispatched."""
        if level and LEVEL_RANK[Level(level)] > LEVEL_RANK[Level(case.level)]:
            case.level = level
        if case.level != Level.CONFIRMED:
            return
        if case.state == CaseState.NEW:
            self._dispatch(s, case, SYSTEM, now)
        elif dismissed(case):
            self._reopen(s, case, now)

    def _ask_review(self, s: Session, case: Case, now: dt.datetime) -> None:
        """A suspected alert goes to the office's dispatchers to confirm or dismiss; unreviewed, it escalates
        like an unacknowledged dispatch (grid leader, then the office again)."""
        case.assignee = OFFICE
        case.escalation = 0
        case.escalate_at = now + self._escalate_after()
        self.record(s, case, Action.REVIEW, SYSTEM, now, {"to": OFFICE})
        self.notify(s, case, "review", OFFICE, now)

    def _reopen(self, s: Session, case: Case, now: dt.datetime) -> None:
        """Open a dismissed case again: the node confirmed what a dispatcher had called a false alarm."""
        detail = {"level": case.level, "dismissed_by": case.resolved_by}
        case.verdict, case.resolved_by, case.resolved_at = None, None, None
        self.record(s, case, Action.REOPEN, SYSTEM, now, detail)
        self._dispatch(s, case, SYSTEM, now, reopened=True)
        self.feedback(s, case, SYSTEM, now)  # the node's kept 'false_alarm' is withdrawn: no verdict, dispatched

    def _same_throw(self, s: Session, ev: Event, building: str | None, alert_at: dt.datetime) -> Case | None:
        window = dt.timedelta(seconds=self.cfg.dedup.window_s)
        # A closed case (resolved, or dismissed) is never joined: a throw after it is a case of its own.
        q = select(Case).where(
            Case.alert_at.between(alert_at - window, alert_at + window), Case.state != CaseState.RESOLVED
        )
        if building is not None:
            q = q.where(Case.building == building)
        else:  # a camera the roster does not know: only the same node's other cameras
            q = q.join(Event, Event.case_id == Case.id).where(Case.building.is_(None), Event.node == ev.node)
        # Locked and read again: a dispatcher confirming this case at the same moment must finish first, or the
        # joining alert would see it still new and dispatch it a second time.
        q = q.with_for_update(of=Case).execution_options(populate_existing=True)
        for case in s.scalars(q.order_by(Case.id)).unique():
            if ev.floor is None or case.floor is None or abs(case.floor - ev.floor) <= self.cfg.dedup.floors:
                return case
        return None

    @staticmethod
    def _lock_place(s: Session, key: str) -> None:
        """Serialise case-making per building, so two instances cannot make two cases of one throw.
        PostgreSQL: a transaction advisory lock; SQLite: the write lock BEGIN IMMEDIATE already took."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode())})

    # -- dispatch and escalation ---------------------------------------------------------------------------
    def _dispatch(self, s: Session, case: Case, actor: str, now: dt.datetime, reopened: bool = False) -> None:
        local = now.astimezone(ZoneInfo(self.cfg.timezone)).time()
        level, who = self._first_recipient(case, local)
        case.state = CaseState.DISPATCHED
        case.assignee = who
        case.escalation = level
        case.dispatched_at = now
        case.escalate_at = now + self._escalate_after() if level < OFFICE_LEVEL else None
        self.record(s, case, Action.DISPATCH, actor, now, {"to": who})
        self.notify(s, case, "dispatch", who, now, reopened=reopened)

    def _first_recipient(self, case: Case, local: dt.time) -> tuple[int, str]:
        if case.building is None or case.building not in self.roster.buildings:
            return OFFICE_LEVEL, OFFICE  # nobody's building: the office sorts it out
        on_duty = self.roster.worker_on_duty(case.building, local)
        if on_duty:
            return 0, f"worker:{on_duty[0]}"
        return 1, f"leader:{self.roster.buildings[case.building].grid}"  # nobody on duty: straight to the leader

    def reassign_targets(self, case: Case) -> list[tuple[str, str]]:
        """(assignee, name) of everyone a case may be given to: its grid's workers, the grid leader, the office."""
        out: list[tuple[str, str]] = []
        building = self.roster.buildings.get(case.building) if case.building else None
        if building is not None:
            grid = self.roster.grids[building.grid]
            out += [(f"worker:{wid}", w.name) for wid, w in grid.workers.items()]
            out.append((f"leader:{building.grid}", grid.leader.name))
        out.append((OFFICE, self.roster.office.name))
        return out

    def reassign(self, s: Session, case: Case, to: str, actor: str, now: dt.datetime | None = None) -> Case:
        """Give a dispatched (or acknowledged) case to `to`, who is told as at a dispatch and must acknowledge."""
        now = now or utcnow()
        if CaseState(case.state) not in REASSIGNABLE:
            raise Refused(f"cannot reassign a case that is {case.state}", action="reassign", state=case.state)
        if to not in dict(self.reassign_targets(case)):
            raise Refused(f"{to!r} is not someone of this building's grid", 422, "target", to=to)
        step = 0 if to.startswith("worker:") else 1 if to.startswith("leader:") else OFFICE_LEVEL
        before = case.assignee
        case.assignee, case.escalation, case.state = to, step, CaseState.DISPATCHED
        case.acknowledged_by = case.acknowledged_at = None
        case.dispatched_at = now
        case.escalate_at = now + self._escalate_after() if step < OFFICE_LEVEL else None
        self.record(s, case, Action.REASSIGN, actor, now, {"from": before, "to": to})
        self.notify(s, case, "dispatch", to, now)
        return case

    def _escalate_after(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.cfg.escalate_after_min)

    def escalate_due(self, s: Session, now: dt.datetime | None = None) -> int:
        """Escalate every case left too long: a dispatch not acknowledged, or a suspected alert not reviewed.
        Worker (or the office's review) -> grid leader -> office; the assignee follows each step.

        The conditional UPDATE makes each step happen once even when several instances run this, and skips a
        case that someone moved meanwhile: reassigned (same state and step, but a new escalate_at), confirmed,
        acknowledged."""
        now = now or utcnow()
        done = 0
        waiting = (CaseState.DISPATCHED, CaseState.NEW)
        due = s.scalars(
            select(Case).where(Case.state.in_(waiting), Case.escalate_at <= now).order_by(Case.id)
        ).all()
        for case in due:
            step = case.escalation + 1
            if case.building in self.roster.buildings and step == 1:
                who = f"leader:{self.roster.buildings[case.building].grid}"
            else:
                step, who = OFFICE_LEVEL, OFFICE
            before = case.assignee
            nxt = now + self._escalate_after() if step < OFFICE_LEVEL else None
            won = s.execute(
                update(Case)
                .where(
                    Case.id == case.id,
                    Case.escalation == case.escalation,
                    Case.state == case.state,
                    Case.escalate_at <= now,
                )
                .values(escalation=step, escalate_at=nxt, assignee=who)
                .execution_options(synchronize_session=False)
            ).rowcount
            if won:
                s.refresh(case)
                self.record(s, case, Action.ESCALATE, SYSTEM, now, {"from": before, "to": who, "step": step})
                self.notify(s, case, "escalate", who, now)
                done += 1
        return done

    # -- what people do ------------------------------------------------------------------------------------
    def act(
        self,
        s: Session,
        case: Case,
        action: Action,
        actor: str,
        verdict: Verdict | None = None,
        note: str | None = None,
        now: dt.datetime | None = None,
    ) -> Case:
        """Apply a person's action to a case (confirm, dismiss, acknowledge, check, resolve)."""
        now = now or utcnow()
        after = TRANSITIONS.get((action, CaseState(case.state)))
        if after is None:
            raise Refused(f"cannot {action} a case that is {case.state}", action=action, state=case.state)
        if action == Action.CHECK and verdict is None:
            raise Refused("an on-site check needs a verdict", 422, "verdict")
        # A verdict is what someone found on site: said with an acknowledgement it would reach the node as the
        # truth of its alert (and hold or free its evidence) before anyone went there.
        dismissal = action == Action.DISMISS and verdict == Verdict.FALSE_ALARM  # what a dismissal says anyway
        if verdict is not None and action not in VERDICT_STEPS and not dismissal:
            raise Refused(f"{action} gives no verdict", 422, "verdict_step", action=action)
        detail: dict = {}
        if note:
            case.note = note
            detail["note"] = note
        if action == Action.CONFIRM:
            case.level = Level.CONFIRMED
            self.record(s, case, action, actor, now, detail or None)
            self._dispatch(s, case, actor, now)
            return case
        if action == Action.DISMISS:
            verdict = Verdict.FALSE_ALARM
        if action == Action.ACKNOWLEDGE:
            case.acknowledged_by, case.acknowledged_at = actor, now
        if action == Action.CHECK:
            case.checked_by, case.checked_at = actor, now
        if action in (Action.RESOLVE, Action.DISMISS):
            case.resolved_by, case.resolved_at = actor, now
        case.state = after
        case.escalate_at = None  # someone is on it: no further escalation
        if verdict is not None:
            case.verdict = verdict
            detail["verdict"] = verdict
        self.record(s, case, action, actor, now, detail or None)
        if verdict is not None:
            self.feedback(s, case, actor, now)
        if verdict == Verdict.THROWN:  # a crime: the police may ask for the original clip long after 30 days
            self.hold(s, case, actor, now, "thrown")
        return case

    @staticmethod
    def held(s: Session, case: Case) -> bool:
        """True while the case's evidence is held at its nodes: its last hold was not released."""
        last = s.scalar(
            select(History.action)
            .where(History.case_id == case.id, History.action.in_((Action.HOLD, Action.RELEASE)))
            .order_by(History.id.desc())
            .limit(1)
        )
        return last == Action.HOLD

    def hold(self, s: Session, case: Case, actor: str, now: dt.datetime, why: str, note: str = "") -> bool:
        """Tell every node of the case to keep its evidence past retention (<prefix>/<node>/events/<id>/hold ON,
        QoS 1). False when it is held already."""
        if self.held(s, case):
            return False
        self._set_hold(s, case, True, now)
        self.record(s, case, Action.HOLD, actor, now, {"why": why, **({"note": note} if note else {})})
        return True

    def release(self, s: Session, case: Case, actor: str, now: dt.datetime, note: str) -> bool:
        """Tell every node of the case its evidence may be deleted by retention again (hold OFF). False when it
        was not held. Staff only, with a reason (`note`, shown in the history): the evidence of a crime may be
        needed long after."""
        if not self.held(s, case):
            return False
        self._set_hold(s, case, False, now)
        self.record(s, case, Action.RELEASE, actor, now, {"note": note})
        return True

    def set_hold(self, s: Session, case: Case, on: bool, actor: str, note: str) -> bool:
        """Hold (on) or release the case's evidence now, by a person; False when it already was so."""
        now = utcnow()
        return self.hold(s, case, actor, now, "by_hand", note) if on else self.release(s, case, actor, now, note)

    def change_hold(self, s: Session, case: Case, on: bool, actor: str, note: str, admin: bool) -> None:
        """set_hold as a person asks it, on a page or through the API: Refused when the rules do not allow it
        (a release needs its reason, a thrown object's evidence is released by an admin) or nothing changes."""
        if not on and not note:
            raise Refused("say why the evidence may be deleted again (note)", 422, "release_note")
        if not on and not admin and (why := release_needs_admin(s, case)):
            what = {"thrown": "a thrown object", "exported": "a case exported"}[why]
            raise Refused(f"the evidence of {what} is released by an admin", 403, "release_admin")
        if not self.set_hold(s, case, on, actor, note):
            if on:
                raise Refused("the evidence is held already", 409, "held")
            raise Refused("the evidence is not held", 409, "not_held")

    def _set_hold(self, s: Session, case: Case, on: bool, now: dt.datetime) -> None:
        # An older command still waiting is not sent after this one: the job runner drops it when it claims it
        # (notify._superseded), whether it never went or failed and waits to be retried.
        channel = "hold" if on else "release"
        for ev in case.events:
            self.queue(s, case.id, channel, ev.node, {"id": ev.event_id, "node": ev.node, "hold": on}, now)

    # -- notices -------------------------------------------------------------------------------------------
    def notify(
        self, s: Session, case: Case, kind: str, who: str, now: dt.datetime, reopened: bool = False
    ) -> None:
        """Queue the notices of a review, dispatch or escalation: every webhook, every WeCom group, email to the
        person. `kind` is review (a suspected alert, to the office), dispatch or escalate."""
        person = self.roster.person(who)
        building = self.roster.buildings.get(case.building) if case.building else None
        payload = {
            "kind": kind,
            "case": case.id,
            "level": case.level,
            "state": case.state,  # 'new' in an escalation: a suspected alert nobody has reviewed yet
            "reopened": reopened,
            "building": case.building,
            "building_name": building.name if building else None,
            "address": building.address if building else None,
            "floor": case.floor,
            "alert_at": case.alert_at.isoformat(),
            "to": who,
            "person": person.model_dump() if person else None,
        }
        self.fan_out(s, case.id, payload, person.email if person else None, now)
        if kind in ("dispatch", "review"):  # a still that came before (a suspected alert confirmed later)
            still = s.scalar(
                select(Evidence)
                .join(Event, Evidence.event_pk == Event.id)
                .where(Event.case_id == case.id, Evidence.kind == "snapshot")
                .order_by(Evidence.id)
                .limit(1)
            )
            if still is not None:
                self._wecom_still(s, case, still, now)

    def fan_out(self, s: Session, case_id: int | None, payload: dict, email: str | None, now: dt.datetime) -> None:
        """One notice on every channel: each webhook, each WeCom group, and email to `email` when SMTP is set."""
        from center.notify import endpoint_keys  # here: center.notify imports this module

        notify = self.cfg.notify
        for key in endpoint_keys(notify.webhooks):  # each by its key: center.yaml may be reordered before it goes
            self.queue(s, case_id, "webhook", key, payload, now)
        for key in endpoint_keys(notify.wecom):
            self.queue(s, case_id, "wecom", key, payload, now)
        if notify.smtp and email:
            self.queue(s, case_id, "email", email, payload, now)

    def still_arrived(self, s: Session, ev: Event, still: Evidence, now: dt.datetime) -> None:
        """A still came after its case was sent for review or dispatched: WeCom groups get it as an image too."""
        case = ev.case
        if case is None or case.assignee is None or case.state == CaseState.RESOLVED:
            return
        first = s.scalar(
            select(Evidence.id)
            .join(Event, Evidence.event_pk == Event.id)
            .where(Event.case_id == case.id, Evidence.kind == "snapshot", Evidence.id != still.id)
            .limit(1)
        )
        if first is None:  # one still per case is enough for the group
            self._wecom_still(s, case, still, now)

    def _wecom_still(self, s: Session, case: Case, still: Evidence, now: dt.datetime) -> None:
        from center.notify import endpoint_keys  # here: center.notify imports this module

        wecom = self.cfg.notify.wecom
        for key, w in zip(endpoint_keys(wecom), wecom, strict=True):
            if w.send_still:
                payload = {"kind": "still", "case": case.id, "still": still.path}
                self.queue(s, case.id, "wecom", key, payload, now)

    def feedback(
        self,
        s: Session,
        case: Case,
        actor: str,
        now: dt.datetime,
        events: list[Event] | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        """Queue the verdict for every node whose alert is in the case (<prefix>/<node>/feedback, QoS 1), or for
        the nodes of `events` only (an alert that joined the case after its verdict was given `at`)."""
        for ev in case.events if events is None else events:
            body = {
                "v": 1,
                "msg_id": uuid.uuid4().hex,
                "id": ev.event_id,
                "node": ev.node,
                "camera": ev.camera,
                "case": case.id,
                "verdict": case.verdict,
                "state": case.state,
                "note": case.note,
                "by": actor,
                "at": (at or now).isoformat(),
            }
            self.queue(s, case.id, "feedback", ev.node, body, now)

    @staticmethod
    def queue(s: Session, case_id: int | None, channel: str, target: str, payload: dict, now: dt.datetime) -> None:
        """One notice (or a verdict for a node) in the durable job queue, sent by center.notify."""
        s.add(
            Job(
                case_id=case_id,
                channel=channel,
                target=target,
                payload=payload,
                state=JobState.PENDING,
                attempts=0,
                due_at=now,
                created_at=now,
            )
        )

    @staticmethod
    def record(s: Session, case: Case, action: Action, actor: str, now: dt.datetime, detail: dict | None):
        """One row of the case's history: who did what, when."""
        s.add(History(case_id=case.id, action=action, actor=actor, at=now, detail=detail))
