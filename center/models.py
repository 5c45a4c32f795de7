"""Typed values of the loop: case states, verdicts, roles, evidence trust; and the allowed transitions."""

from __future__ import annotations

from enum import StrEnum

MAX_FLOORS = 200  # storeys of any building (the tallest towers have ~160): a floor beyond is no floor


class CaseState(StrEnum):
    NEW = "new"  # received; a suspected alert waits here for a reviewer
    DISPATCHED = "dispatched"  # a person was told and must acknowledge
    ACKNOWLEDGED = "acknowledged"  # the person is on it
    CHECKED = "checked"  # someone was on site and gave a verdict
    RESOLVED = "resolved"  # closed


class Action(StrEnum):
    """What a person (or the center itself) can do to a case; each is one row of its history."""

    CREATED = "created"
    EVIDENCE = "evidence"  # a second camera's alert joined the case
    REVIEW = "review"  # a suspected alert sent to the office's dispatchers to confirm or dismiss
    REOPEN = "reopen"  # a dismissed alert that its node confirmed after all: open again, and dispatched
    CONFIRM = "confirm"
    DISMISS = "dismiss"
    DISPATCH = "dispatch"
    REASSIGN = "reassign"  # a dispatcher gave a dispatched case to someone else of the building's grid
    ESCALATE = "escalate"
    ACKNOWLEDGE = "acknowledge"
    CHECK = "check"
    RESOLVE = "resolve"
    PHOTO = "photo"
    HOLD = "hold"  # the nodes were told to keep the case's evidence past retention (a thrown object, an export)
    RELEASE = "release"  # the nodes were told its evidence may go with retention again (a hold released)


# (action, state before) -> state after. Anything else is refused with 409.
TRANSITIONS: dict[tuple[Action, CaseState], CaseState] = {
    (Action.CONFIRM, CaseState.NEW): CaseState.DISPATCHED,
    (Action.DISMISS, CaseState.NEW): CaseState.RESOLVED,
    (Action.ACKNOWLEDGE, CaseState.DISPATCHED): CaseState.ACKNOWLEDGED,
    (Action.CHECK, CaseState.DISPATCHED): CaseState.CHECKED,  # on site before anyone pressed "acknowledge"
    (Action.CHECK, CaseState.ACKNOWLEDGED): CaseState.CHECKED,
    (Action.RESOLVE, CaseState.CHECKED): CaseState.RESOLVED,
}


class Verdict(StrEnum):
    """What was found on site."""

    THROWN = "thrown"  # a thrown object
    FELL = "fell"  # fell by itself (a flowerpot, laundry)
    FALSE_ALARM = "false_alarm"  # nothing fell: a bird, a shadow
    NOT_FOUND = "not_found"  # nothing to be found


class Level(StrEnum):
    SUSPECTED = "suspected"
    CONFIRMED = "confirmed"


class Role(StrEnum):
    ADMIN = "admin"  # everything, including users
    DISPATCHER = "dispatcher"  # reviews suspected alerts, acts on any case
    GRID_WORKER = "grid_worker"  # sees and acts on the cases of their own buildings


class Trust(StrEnum):
    """How far a piece of evidence is vouched for by its node's signature."""

    VERIFIED = "verified"  # listed in a manifest signed by the node's registered key
    UNSIGNED = "unsigned"  # no manifest covering it has arrived (yet)
    UNTRUSTED = "untrusted"  # node not registered, signature bad, or signed by another key


class JobState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by an instance; back to pending if it dies (lease)
    SENT = "sent"
    FAILED = "failed"  # gave up after retry.max_attempts: shown in the API, never silent
