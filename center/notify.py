"""Notifiers behind one interface, fed from the durable job queue with retry and backoff.

A job is claimed with a lease (a conditional UPDATE, so two instances never send the same job at once; a job
whose instance died is taken again when its lease ends), sent, then marked sent, or rescheduled with a
doubling delay, or marked failed after retry.max_attempts: failures stay in the database and the API.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import smtplib
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol, TypeVar

import httpx
from sqlalchemy import or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from center.config import CenterConfig
from center.db import Event, Evidence, Job, utcnow
from center.files import EvidenceFiles, OutsideDataDir
from center.ingest import parse_time
from center.loop import HOLD_CHANNELS
from center.models import JobState
from center.web.i18n import DEFAULT, translator
from center.web.views import local_text
from edge.publish.mqtt import valid_id

log = logging.getLogger(__name__)


class _UrlsByHostOnly(logging.Filter):
    """httpx logs every request's URL at INFO (`edge-center -v`): a WeCom robot's URL carries its key (key=...),
    and a webhook's path or query may hold a token, either of which lets anyone post to that group. Its log
    lines name the endpoint by scheme and host only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                f"{a.scheme}://{a.netloc.decode('ascii', 'replace')}/..." if isinstance(a, httpx.URL) else a
                for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_UrlsByHostOnly())

LEASE_S = 120.0  # longer than any one send (HTTP and SMTP time out well before): a dead instance's job frees
SMTP_STEPS = 10  # an email waits on about this many server replies (greeting, EHLO, STARTTLS, EHLO, AUTH, MAIL,
# RCPT, DATA, end of data, QUIT): its lease grows with smtp.timeout_s, or another instance would send it again
WECOM_IMAGE_MAX = 2 << 20  # WeCom group robots refuse images over 2 MB
WECOM_TEXT_MAX = 2048  # bytes of UTF-8: WeCom group robots refuse a longer text, and the notice is lost
CUT = "…"  # ends a text cut to fit
SIGNATURE_HEADER = "X-Edge-Signature"  # sha256=<hex HMAC of "<timestamp>.<body>">
TIMESTAMP_HEADER = "X-Edge-Timestamp"  # the receiver refuses old timestamps: a captured call cannot be replayed


HEADS = {  # first words of a notice, by its kind
    "review": "【高空抛物·请审核】",  # a suspected alert for the office's dispatchers to confirm or dismiss
    "dispatch": "【高空抛物】",
    "escalate": "【高空抛物·升级】",
}


class SendError(Exception):
    """One attempt failed; the job is retried later."""


def endpoint_key(url: str) -> str:
    """The name a queued notice gives its webhook or WeCom group (Job.target): a digest of its URL, so it stays
    the same when center.yaml reorders, inserts or removes other endpoints. Never the URL itself: a WeCom
    robot's URL holds its key, and a webhook's may hold a token."""
    return "u" + hashlib.sha256(url.encode()).hexdigest()[:16]


def endpoint_keys(endpoints: Sequence) -> list[str]:
    """Each endpoint's key, in order. The same URL listed again (one receiver with two secrets, as a center
    before keys allowed) gets its key with the count of earlier ones: still an endpoint of its own."""
    keys, seen = [], Counter()
    for e in endpoints:
        base = endpoint_key(str(e.url))
        keys.append(base if not seen[base] else f"{base}-{seen[base] + 1}")
        seen[base] += 1
    return keys


Endpoint = TypeVar("Endpoint")


def endpoint_targets(endpoints: Sequence) -> dict[str, int]:
    """Every target a notice for one of `endpoints` (center.yaml's webhooks or wecom) may carry -> its index:
    its key, and its position, as a center before keys queued it. A position is read as before, and only while
    it is still in range: such a notice was queued before this center started, and its endpoint is taken to be
    where it was then (it is, unless center.yaml was changed in between)."""
    keys = {key: i for i, key in enumerate(endpoint_keys(endpoints))}
    return {**{str(i): i for i in range(len(endpoints))}, **keys}


def endpoint_of(endpoints: Sequence[Endpoint], targets: dict[str, int], job: Job) -> Endpoint:
    """The webhook or WeCom group a notice was queued for (`targets` from endpoint_targets)."""
    i = targets.get(job.target)
    if i is None:  # failed at start-up (JobRunner.fail_unconfigured) unless an instance queued it since
        raise SendError(f"its {job.channel} is no longer in center.yaml")
    return endpoints[i]


class Notifier(Protocol):
    """Sends one job's payload to its target; raises SendError (or any error) when it did not go."""

    def send(self, job: Job) -> None: ...


# Notices are written in the office's language, in the same words as its pages (one catalogue for both).
_OFFICE_WORDS = translator(DEFAULT)


def _problem_words(problem: object) -> str:
    """A camera problem as the pages name it ("摄像机被遮挡"); one they have no words for, by its own name."""
    key = f"problem.{problem}"
    words = _OFFICE_WORDS(key)
    return f"摄像机{problem}" if words == key else words


def local_time(value: object, zone: str) -> str:
    """An ISO time of a payload as the office reads it: in its own zone, to the second ('未知' if unreadable)."""
    t = parse_time(value)  # as intake reads a node's times: aware, within the years believed
    return local_text(t, zone) if t is not None else "未知"


def describe_camera_problem(p: dict, zone: str) -> str:
    """The text of a camera problem notice: which camera, what is wrong (or that it is back to normal)."""
    where = p.get("building_name") or p.get("building") or "未登记楼栋"
    what = _problem_words(p.get("problem"))
    head = f"【{what}】" if p.get("state") == "raised" else f"【摄像机恢复正常：此前{what}】"
    when = local_time(p.get("at"), zone)
    lines = [f"{head}{where} {p.get('node')}/{p.get('camera')}", f"时间 {when}", f"{p.get('reason')}"]
    if p.get("address"):
        lines.insert(1, f"地址 {p['address']}")
    if p.get("state") == "raised":
        lines.append("该摄像机无法发现高空抛物，请派人到现场检查")  # it catches no throw until someone fixes it
    return "\n".join(lines)


def describe(p: dict, zone: str) -> str:
    """The human text of a review, dispatch or escalation notice (Chinese first: it is read on a phone in the
    compound), its time in the office's `zone`. The level is always shown; an alert nobody has reviewed yet
    says so (待审核: to be reviewed). The payload itself keeps UTC, for machines."""
    if p.get("kind") == "camera_problem":
        return describe_camera_problem(p, zone)
    where = p.get("building_name") or p.get("building") or "未知楼栋"
    floor = f"{p['floor']}层" if p.get("floor") is not None else "楼层未知"
    level = "确认" if p.get("level") == "confirmed" else "疑似"
    person = p.get("person") or {}
    head = HEADS.get(p.get("kind"), HEADS["dispatch"])
    unreviewed = p.get("kind") == "review" or p.get("state") == "new"
    # Who must review it (the office), who is told it waits unreviewed (an escalation), or who must act on site.
    role = "审核人" if p.get("kind") == "review" else "通知" if unreviewed else "处置人"
    lines = [
        f"{head}{level}{'（待审核）' if unreviewed else ''} {where} {floor}",
        f"时间 {local_time(p.get('alert_at'), zone)}  案件 #{p.get('case')}",
        f"{role} {person.get('name', p.get('to'))} {person.get('phone') or ''}".rstrip(),
    ]
    if p.get("address"):
        lines.insert(1, f"地址 {p['address']}")
    if p.get("reopened"):
        lines.append("此前已被驳回为误报，节点随后确认：重新派发")  # dismissed before; the node has confirmed it
    return "\n".join(lines)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """A generic webhook: the JSON payload, HMAC-SHA256 signed over timestamp and body."""

    def __init__(self, cfg: CenterConfig, http: httpx.Client):
        self.hooks = cfg.notify.webhooks
        self.targets = endpoint_targets(self.hooks)
        self.http = http
        self.zone = cfg.timezone

    def send(self, job: Job) -> None:
        hook = endpoint_of(self.hooks, self.targets, job)
        body = json.dumps({**job.payload, "text": describe(job.payload, self.zone)}, ensure_ascii=False).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: signature(hook.secret.get_secret_value(), ts, body),
        }
        r = self.http.post(str(hook.url), content=body, headers=headers)
        if r.status_code >= 300:
            raise SendError(f"HTTP {r.status_code}")


class WecomNotifier:
    """A WeCom group robot: the text with the person @-mentioned; the still as an image message."""

    def __init__(self, cfg: CenterConfig, http: httpx.Client, files: EvidenceFiles):
        self.robots = cfg.notify.wecom
        self.targets = endpoint_targets(self.robots)
        self.http = http
        self.zone = cfg.timezone
        self.files = files

    def send(self, job: Job) -> None:
        robot = endpoint_of(self.robots, self.targets, job)
        p = job.payload
        if p.get("kind") == "still":
            data = self.files.path(p["still"]).read_bytes()
            if len(data) > WECOM_IMAGE_MAX:
                raise SendError(f"still of {len(data)} bytes is over WeCom's 2 MB")
            msg = {
                "msgtype": "image",
                "image": {"base64": base64.b64encode(data).decode(), "md5": hashlib.md5(data).hexdigest()},
            }
        else:
            msg = {"msgtype": "text", "text": wecom_text(p, self.zone)}
        r = self.http.post(str(robot.url), json=msg)
        if r.status_code >= 300:
            raise SendError(f"HTTP {r.status_code}")
        answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if answer.get("errcode", 0) != 0:  # WeCom answers 200 with an error code
            raise SendError(f"WeCom errcode {answer.get('errcode')}: {str(answer.get('errmsg'))[:200]}")


def wecom_text(p: dict, zone: str) -> dict:
    """A WeCom robot's text message of a notice: within WeCom's size, its person @-mentioned."""
    content = describe(p, zone)
    over = len(content.encode()) - WECOM_TEXT_MAX
    if over > 0 and isinstance(p.get("reason"), str):  # a node's reason: 500 characters may be 2,000 bytes
        # Shortened itself, so the notice keeps its last line (send someone to the camera).
        content = describe({**p, "reason": _cut(p["reason"], len(p["reason"].encode()) - over)}, zone)
    if len(content.encode()) > WECOM_TEXT_MAX:
        content = _cut(content, WECOM_TEXT_MAX)
    text: dict = {"content": content}
    person = p.get("person") or {}
    if person.get("wecom_user"):
        text["mentioned_list"] = [person["wecom_user"]]
    if person.get("phone"):
        # WeCom matches the number as the member registered it: digits, no country code, no spaces or dashes.
        digits = re.sub(r"\D", "", person["phone"])
        for country in ("0086", "86"):  # China's code, written as +86 or 0086 before an 11-digit number
            if len(digits) == len(country) + 11 and digits.startswith(country):
                digits = digits[len(country) :]
        if digits:
            text["mentioned_mobile_list"] = [digits]
    return text


def _cut(text: str, max_bytes: int) -> str:
    """`text` within `max_bytes` of UTF-8, ending in CUT when shortened, never splitting a character."""
    if len(text.encode()) <= max_bytes:
        return text
    return text.encode()[: max(0, max_bytes - len(CUT.encode()))].decode(errors="ignore") + CUT


class EmailNotifier:
    """Email over SMTP (implicit TLS or STARTTLS when configured), the still attached when there is one."""

    def __init__(self, cfg: CenterConfig, sessions: sessionmaker, files: EvidenceFiles):
        self.smtp = cfg.notify.smtp
        self.zone = cfg.timezone
        self.sessions = sessions
        self.files = files

    def send(self, job: Job) -> None:
        p = job.payload
        msg = EmailMessage()
        msg["From"] = self.smtp.sender
        msg["To"] = job.target
        text = describe(p, self.zone)
        msg["Subject"] = text.splitlines()[0]
        msg.set_content(text)
        still = self._still(job.case_id)
        if still is not None:
            msg.add_attachment(still, maintype="image", subtype="jpeg", filename="still.jpg")
        with self._connect() as smtp:
            if self.smtp.username:
                smtp.login(self.smtp.username, self.smtp.password.get_secret_value() if self.smtp.password else "")
            smtp.send_message(msg)

    def _still(self, case_id: int | None) -> bytes | None:
        """The case's still to attach, or None. The text is what a worker must get: a still gone from the disk
        (retention took the files of an event whose alert came late, or the disk lost it) is left out, never a
        reason for the notice to fail at every attempt and never reach them."""
        path = still_of(self.sessions, case_id)
        if path is None:
            return None
        try:
            return self.files.path(path).read_bytes()
        except (OSError, OutsideDataDir) as exc:
            log.warning("case %s: email sent without its still, which cannot be read: %s", case_id, exc)
            return None

    def _connect(self) -> smtplib.SMTP:
        """A connection to the server, TLS (implicit or STARTTLS) verified against ca_file or the system's CAs."""
        cfg = self.smtp
        context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        if cfg.implicit_tls:
            return smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, context=context)
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
        if cfg.starttls:
            try:
                smtp.starttls(context=context)
            except BaseException:
                smtp.close()
                raise
        return smtp


class FeedbackNotifier:
    """The verdict back to the node, on <prefix>/<node>/feedback at QoS 1."""

    def __init__(self, prefix: str, publish: Callable[[str, bytes], None]):
        self.prefix = prefix
        self.publish = publish

    def send(self, job: Job) -> None:
        self.publish(f"{self.prefix}/{job.target}/feedback", json.dumps(job.payload, ensure_ascii=False).encode())


class HoldNotifier:
    """Keep an event's evidence past retention, or release it: ON or OFF to <prefix>/<node>/events/<id>/hold at
    QoS 1 (the node answers on the retained .../hold/state)."""

    def __init__(self, prefix: str, publish: Callable[[str, bytes], None]):
        self.prefix = prefix
        self.publish = publish

    def send(self, job: Job) -> None:
        event_id = job.payload["id"]
        if not valid_id(event_id) or not valid_id(job.target):  # written by this center, but a topic is a path
            raise SendError(f"not an event or node id: {event_id!r} of {job.target!r}")
        command = b"ON" if job.payload["hold"] else b"OFF"
        self.publish(f"{self.prefix}/{job.target}/events/{event_id}/hold", command)


def still_of(sessions: sessionmaker, case_id: int | None) -> str | None:
    """The path of the first still of a case's alerts, if one has come."""
    if case_id is None:
        return None
    with sessions() as s:
        return s.scalar(
            select(Evidence.path)
            .join(Event, Evidence.event_pk == Event.id)
            .where(Event.case_id == case_id, Evidence.kind == "snapshot")
            .order_by(Evidence.id)
            .limit(1)
        )


@dataclass(frozen=True)
class Lane:
    """The jobs of one endpoint: its channels, and its target (None: any). Each lane is sent by a thread of its
    own (center.service), so an endpoint that is down or hangs delays only its own notices."""

    channels: tuple[str, ...]
    target: str | None = None

    def __str__(self) -> str:
        return "+".join(self.channels) + (f":{self.target}" if self.target is not None else "")


def lane_of(channel: str, target: str) -> Lane:
    """A webhook and a WeCom group are one endpoint each; all email goes through the one SMTP server, and
    verdicts and holds through the one broker."""
    if channel in ("webhook", "wecom"):
        return Lane((channel,), target)
    if channel in ("feedback", *HOLD_CHANNELS):
        return Lane(("feedback", *HOLD_CHANNELS))
    return Lane((channel,))


def _claimable(now: dt.datetime):
    """A job no instance holds: pending, or being sent by one whose lease ran out (it died sending)."""
    return or_(Job.state == JobState.PENDING, (Job.state == JobState.SENDING) & (Job.lease_until < now))


class JobRunner:
    """Claims due jobs, sends each through its channel's notifier, records the outcome."""

    def __init__(self, cfg: CenterConfig, sessions: sessionmaker, notifiers: dict[str, Notifier], owner: str):
        self.retry = cfg.notify.retry
        smtp = cfg.notify.smtp  # only email's claim grows: a crashed instance's WeCom notice is not held longer
        self.email_lease_s = max(LEASE_S, SMTP_STEPS * smtp.timeout_s) if smtp is not None else LEASE_S
        self.sessions = sessions
        self.notifiers = notifiers
        self.owner = owner
        # Each webhook and WeCom group's targets (its key, its old position) -> its lane, keyed by its key.
        self.endpoints: dict[tuple[str, str], Lane] = {}
        self.known: dict[str, list[str]] = {}  # channel -> every target this instance sends to
        for channel, endpoints in (("webhook", cfg.notify.webhooks), ("wecom", cfg.notify.wecom)):
            if channel not in notifiers:
                continue
            targets, keys = endpoint_targets(endpoints), endpoint_keys(endpoints)
            self.known[channel] = list(targets)
            for target, i in targets.items():
                self.endpoints[channel, target] = Lane((channel,), keys[i])
        lanes = list(self.endpoints.values()) + [lane_of(c, "") for c in notifiers if c not in self.known]
        self.lanes = list(dict.fromkeys(lanes))  # every endpoint this instance sends to, once
        self.lane_targets: dict[Lane, list[str]] = {}  # its key, and its position as an older center queued it
        for (_, target), lane in self.endpoints.items():
            self.lane_targets.setdefault(lane, []).append(target)

    def lease_s(self, channel: str) -> float:
        """How long a claim on a notice of `channel` holds before another instance may send it."""
        return self.email_lease_s if channel == "email" else LEASE_S

    def _lane_of(self, channel: str, target: str) -> Lane:
        return self.endpoints.get((channel, target)) or lane_of(channel, target)

    def fail_unconfigured(self, now: dt.datetime | None = None) -> int:
        """Mark failed every webhook or WeCom notice waiting for an endpoint that center.yaml no longer has
        (removed while its notices waited), and every email waiting when it has no smtp: no lane would ever
        send it, and smtp added back months later would mail workers long-closed throws. Run at start-up, when
        this instance takes up its center.yaml; returns how many. Each is taken as a claim is (a conditional
        UPDATE), so one another instance is sending now is left to it."""
        now = now or utcnow()
        done = 0
        unsent = {channel: Job.target.not_in(known) for channel, known in self.known.items()}
        if "email" not in self.notifiers:  # smtp: removed, so its queued mail would wait (unseen) for ever
            unsent["email"] = true()
        for channel, gone in unsent.items():
            endpoint = "smtp" if channel == "email" else channel
            claimable = _claimable(now)
            with self.sessions() as s:
                stale = s.scalars(select(Job.id).where(Job.channel == channel, gone, claimable)).all()
            for job_id in stale:
                with self.sessions.begin() as s:
                    won = s.execute(
                        update(Job)
                        .where(Job.id == job_id, claimable)
                        .values(
                            state=JobState.FAILED,
                            done_at=now,
                            lease_until=None,
                            last_error=f"its {endpoint} is no longer in center.yaml",
                        )
                    ).rowcount
                if won:
                    log.error("%s notice %d failed: its %s is no longer in center.yaml", channel, job_id, endpoint)
                    done += 1
        return done

    def run_due(self, now: dt.datetime | None = None, limit: int = 50, lane: Lane | None = None) -> int:
        """Send every job due now (at most `limit`; of `lane` only, when given); returns how many were attempted.

        Once an endpoint fails, its other jobs wait for the next round: one that is down or hangs costs one
        timeout a round, not one per queued notice. Each job's lease starts when it is claimed, not when the
        batch began: a lease dated from the batch's start could expire before its job is even tried, letting
        another instance send it too. (`now` fixes the clock, for tests.)"""
        fixed = now
        now = now or utcnow()
        channels = [c for c in (lane.channels if lane else self.notifiers) if c in self.notifiers]
        query = select(Job.id, Job.channel, Job.target).where(
            or_(
                (Job.state == JobState.PENDING) & (Job.due_at <= now),
                (Job.state == JobState.SENDING) & (Job.lease_until < now),
            ),
            Job.channel.in_(channels),
        )
        if lane is not None and lane.target is not None:
            query = query.where(Job.target.in_(self.lane_targets.get(lane, [lane.target])))
        with self.sessions() as s:
            due = s.execute(query.order_by(Job.due_at, Job.id).limit(limit)).all()
        attempted = 0
        down: set[Lane] = set()
        up: set[Lane] = set()
        for job_id, channel, target in due:
            if self._lane_of(channel, target) in down:
                continue  # its endpoint just failed: tried again next round, after the jobs due before it
            job = self._claim(job_id, fixed or utcnow(), self.lease_s(channel))
            if job is not None:
                (up if self._attempt(job) else down).add(self._lane_of(channel, target))
                attempted += 1
        for went in up - down:
            self._wake(went, now)
        return attempted

    def _wake(self, lane: Lane, now: dt.datetime) -> None:
        """The endpoint of `lane` took a notice: its notices waiting out a retry delay (it was down) are due
        now. Otherwise a dispatch that failed while WeCom was away would reach its worker up to retry.cap_s
        (10 min) after the group took the next throw's notice. A notice that fails for a reason of its own is
        then tried once more per notice the endpoint takes: never more often than notices come."""
        query = update(Job).where(
            Job.state == JobState.PENDING, Job.attempts > 0, Job.due_at > now, Job.channel.in_(lane.channels)
        )
        if lane.target is not None:
            query = query.where(Job.target.in_(self.lane_targets.get(lane, [lane.target])))
        with self.sessions.begin() as s:
            s.execute(query.values(due_at=now))

    def _claim(self, job_id: int, now: dt.datetime, lease_s: float = LEASE_S) -> Job | None:
        lease = now + dt.timedelta(seconds=lease_s)
        with self.sessions.begin() as s:
            won = s.execute(
                update(Job)
                .where(Job.id == job_id, _claimable(now))
                .values(state=JobState.SENDING, lease_until=lease)
            ).rowcount
            job = s.get(Job, job_id) if won else None
            if job is not None and job.channel in HOLD_CHANNELS and _superseded(s, job):
                # An older hold or release (retried, or its instance died sending it) would undo the newer one.
                log.info("%s notice %d to %s dropped: a newer one replaced it", job.channel, job.id, job.target)
                s.delete(job)
                return None
            return job

    def _attempt(self, job: Job) -> bool:
        """Send one claimed job and record the outcome; True when it went."""
        try:
            self.notifiers[job.channel].send(job)
            error = None
        except Exception as exc:  # any failure of one send is retried: the error is kept, never swallowed
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = utcnow()
        with self.sessions.begin() as s:
            row = s.get(Job, job.id)
            row.attempts += 1
            row.lease_until = None
            if error is None:
                row.state, row.done_at, row.last_error = JobState.SENT, now, None
                return True
            row.last_error = error
            if row.attempts >= self.retry.max_attempts:
                row.state, row.done_at = JobState.FAILED, now
                log.error(
                    "gave up %s notice %d to %s after %d attempts: %s",
                    row.channel,
                    row.id,
                    row.target,
                    row.attempts,
                    error,
                )
            else:
                delay = min(self.retry.cap_s, self.retry.first_s * 2 ** (row.attempts - 1))
                row.state, row.due_at = JobState.PENDING, now + dt.timedelta(seconds=delay)
                log.warning(
                    "%s notice %d to %s failed (attempt %d, next in %.0f s): %s",
                    row.channel,
                    row.id,
                    row.target,
                    row.attempts,
                    delay,
                    error,
                )
        return False


def _superseded(s: Session, job: Job) -> bool:
    """True when a hold or release of the same event at the same node was queued after `job`."""
    newer = s.scalars(
        select(Job.payload).where(
            Job.case_id == job.case_id, Job.target == job.target, Job.channel.in_(HOLD_CHANNELS), Job.id > job.id
        )
    )
    return any(payload.get("id") == job.payload.get("id") for payload in newer)


def make_notifiers(
    cfg: CenterConfig, sessions: sessionmaker, files: EvidenceFiles, publish
) -> dict[str, Notifier]:
    http = httpx.Client(timeout=cfg.notify.timeout_s)
    out: dict[str, Notifier] = {
        "webhook": WebhookNotifier(cfg, http),
        "wecom": WecomNotifier(cfg, http, files),
        "feedback": FeedbackNotifier(cfg.mqtt.topic_prefix, publish),
        "hold": HoldNotifier(cfg.mqtt.topic_prefix, publish),
        "release": HoldNotifier(cfg.mqtt.topic_prefix, publish),
    }
    if cfg.notify.smtp:
        out["email"] = EmailNotifier(cfg, sessions, files)
    return out
