"""Notices through real local servers: a webhook receiver (HMAC checked), a WeCom robot stand-in, an SMTP sink;
retries with backoff from the durable queue, and a failure that stays visible."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from center_fixtures import *  # noqa: F403 (the pytest fixtures broker, db_url, pg_cluster)
from parts import alert, make_parts, send
from sqlalchemy import select
from support.broker import make_ca
from support.servers import free_port, wait_for

from center.db import Case, Evidence, Job
from center.models import Action, JobState, Verdict
from center.notify import LEASE_S, WECOM_TEXT_MAX, JobRunner, describe_camera_problem, make_notifiers, wecom_text
from center.service import Center
from center.web.i18n import translator
from edge.detect.tamper import Problem

SECRET = "webhook-secret-for-tests"
JPEG = b"\xff\xd8\xff\xe0" + b"still" * 100


class Receiver:
    """A local HTTP server that records every POST and answers with the next of `statuses` (then 200); one that
    `hangs` records the request and never answers (until it is closed)."""

    def __init__(self, statuses=(), body=b'{"errcode": 0, "errmsg": "ok"}', hangs=False):
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses)
        self.released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), data))
                if hangs:
                    outer.released.wait(60)
                    return
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class Sink:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (envelope.rcpt_tos, email.message_from_bytes(envelope.content, policy=email.policy.default))
        )
        return "250 OK"

    def __init__(self):
        self.messages = []


@pytest.fixture
def hook():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def center(tmp_path, db_url):
    """make(**notify) -> the center's parts with those notifiers; their database connections are closed after
    the test (a PostgreSQL connection left to the garbage collector is a ResourceWarning in a later test)."""
    made = []

    def make(**notify):
        retry = {"first_s": 5, "cap_s": 60, "max_attempts": 3}
        made.append(make_parts(tmp_path, db_url, notify={"retry": retry, **notify}))
        return made[-1]

    yield make
    for p in made:
        p.engine.dispose()


def _runner(p, published=None):
    publish = (lambda topic, payload: published.append((topic, payload))) if published is not None else None
    return JobRunner(p.cfg, p.sessions, make_notifiers(p.cfg, p.sessions, p.files, publish), "test")


def _jobs(p):
    with p.sessions() as s:
        return s.scalars(select(Job).order_by(Job.id)).all()


def test_a_dispatch_reaches_the_webhook_signed_with_hmac(center, hook):
    p = center(webhooks=[{"url": hook.url, "secret": SECRET}])
    send(p, alert(floor=12))
    assert _runner(p).run_due() == 1
    ((headers, body),) = hook.requests
    expected = hmac.new(SECRET.encode(), headers["X-Edge-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Edge-Signature"], "sha256=" + expected.hexdigest())
    sent = json.loads(body)
    assert (sent["kind"], sent["building"], sent["floor"], sent["to"]) == ("dispatch", "b3", 12, "worker:zhang")
    assert "3号楼 12层" in sent["text"] and "张伟" in sent["text"]
    assert [j.state for j in _jobs(p)] == [JobState.SENT]


def test_a_notice_gives_the_throw_s_time_in_the_office_s_zone_and_its_payload_keeps_utc(center, hook):
    p = center(webhooks=[{"url": hook.url, "secret": SECRET}])
    at = dt.datetime(2026, 5, 10, 2, 30, tzinfo=dt.UTC)  # 10:30 in Shanghai
    send(p, alert(floor=12, at=at))
    assert _runner(p).run_due() == 1
    sent = json.loads(hook.requests[0][1])
    assert "时间 2026-05-10 10:30:00" in sent["text"]
    assert dt.datetime.fromisoformat(sent["alert_at"]) == at


def test_a_camera_problem_notice_gives_its_time_in_the_office_s_zone():
    at = "2026-05-10T23:59:00+00:00"
    p = {"problem": "covered", "state": "raised", "node": "n1", "camera": "cam1", "at": at}
    assert "时间 2026-05-11 07:59:00" in describe_camera_problem(p, "Asia/Shanghai")
    assert "时间 未知" in describe_camera_problem({**p, "at": "not a time"}, "Asia/Shanghai")


def test_a_failed_notice_is_retried_with_growing_delays_until_it_goes(center):
    hook = Receiver(statuses=[500, 502])
    p = center(webhooks=[{"url": hook.url, "secret": SECRET}])
    runner = _runner(p)
    send(p, alert())
    now = dt.datetime.now(dt.UTC)
    assert runner.run_due(now) == 1
    (job,) = _jobs(p)
    assert (job.state, job.attempts, job.last_error) == (JobState.PENDING, 1, "SendError: HTTP 500")
    first_wait = job.due_at - now
    assert runner.run_due(now) == 0  # not due yet
    assert runner.run_due(job.due_at + dt.timedelta(seconds=1)) == 1
    (job,) = _jobs(p)
    assert job.attempts == 2 and job.due_at - now > first_wait  # backoff grows
    assert runner.run_due(job.due_at + dt.timedelta(seconds=1)) == 1
    (job,) = _jobs(p)
    assert (job.state, job.attempts, job.last_error) == (JobState.SENT, 3, None)
    assert len(hook.requests) == 3
    hook.close()


def test_a_notice_waiting_to_be_retried_goes_as_soon_as_its_endpoint_takes_another(tmp_path, db_url):
    hook = Receiver(statuses=[500])  # down for the first call, then up
    retry = {"first_s": 600, "cap_s": 600, "max_attempts": 12}  # the second try would be 10 minutes later
    p = make_parts(tmp_path, db_url, notify={"retry": retry, "webhooks": [{"url": hook.url, "secret": SECRET}]})
    try:
        runner = _runner(p)
        send(p, alert(floor=5, event_id="ev-first"))
        assert runner.run_due() == 1
        assert [j.state for j in _jobs(p)] == [JobState.PENDING]  # the first throw's dispatch waits
        send(p, alert(floor=20, event_id="ev-second"))  # the webhook is back: the next throw's notice goes
        assert runner.run_due() == 1
        assert runner.run_due() == 1  # and the first's with it, not ten minutes later
        assert [j.state for j in _jobs(p)] == [JobState.SENT, JobState.SENT]
        assert [json.loads(body)["floor"] for _, body in hook.requests] == [5, 20, 5]
    finally:
        p.engine.dispose()
        hook.close()


def test_a_notice_waiting_for_another_endpoint_is_not_hurried(tmp_path, db_url):
    down, up = Receiver(statuses=[500, 500]), Receiver()
    retry = {"first_s": 600, "cap_s": 600, "max_attempts": 12}
    hooks = [{"url": down.url, "secret": SECRET}, {"url": up.url, "secret": SECRET}]
    p = make_parts(tmp_path, db_url, notify={"retry": retry, "webhooks": hooks})
    try:
        runner = _runner(p)
        send(p, alert(floor=5, event_id="ev-first"))
        assert runner.run_due() == 2  # one to each webhook: the first fails
        send(p, alert(floor=20, event_id="ev-second"))
        runner.run_due()  # the second webhook's successes say nothing of the first, still down
        runner.run_due()
        assert len(up.requests) == 2 and len(down.requests) == 2  # each throw's notice once, no early retry
        assert sorted(j.attempts for j in _jobs(p) if j.state == JobState.PENDING) == [1, 1]
    finally:
        p.engine.dispose()
        down.close()
        up.close()


def test_a_notice_that_never_goes_is_marked_failed_with_its_error(center):
    hook = Receiver(statuses=[500] * 10)
    p = center(webhooks=[{"url": hook.url, "secret": SECRET}])
    runner = _runner(p)
    send(p, alert())
    later = dt.datetime.now(dt.UTC)
    for _ in range(5):
        later += dt.timedelta(hours=1)
        runner.run_due(later)
    (job,) = _jobs(p)
    assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 3, "SendError: HTTP 500")
    hook.close()


def test_a_webhook_that_hangs_costs_one_timeout_a_round_not_one_per_notice(center, hook):
    hung = Receiver(hangs=True)
    p = center(webhooks=[{"url": hung.url, "secret": SECRET}], wecom=[{"url": hook.url}], timeout_s=1)
    for floor in (5, 10, 15, 20):  # four throws (floors apart): four webhook notices and four WeCom ones
        send(p, alert(floor=floor))
    assert _runner(p).run_due() == 5
    assert len(hung.requests) == 1, f"{len(hung.requests)} calls to the hung webhook in one round"
    assert len(hook.requests) == 4  # every WeCom notice went in the same round
    waiting = sorted(j.attempts for j in _jobs(p) if j.channel == "webhook")
    assert waiting == [0, 0, 0, 1]  # the others wait for the next round, not counted as failed
    hung.close()


def test_a_webhook_that_hangs_does_not_hold_up_the_next_alert_s_wecom_notice(center, hook):
    hung = Receiver(hangs=True)
    # The webhook hangs for the whole timeout, far longer than the wait for the WeCom notice below: one sender
    # for every endpoint would hold that notice until the timeout, whatever the machine's speed.
    p = center(webhooks=[{"url": hung.url, "secret": SECRET}], wecom=[{"url": hook.url}], timeout_s=60)
    running = Center(p.cfg, p.roster)
    notices = threading.Thread(target=running._notices, daemon=True)
    notices.start()
    try:
        send(p, alert(floor=5))
        assert wait_for(lambda: hung.requests, 10)  # the center is now waiting on the hung webhook
        send(p, alert(floor=20))
        assert wait_for(lambda: any("20层" in json.loads(b)["text"]["content"] for _, b in hook.requests), 30)
    finally:
        running.stopping.set()
        hung.close()
        notices.join(10)
        running.engine.dispose()


def test_wecom_gets_the_text_with_the_worker_mentioned_and_then_the_still(center, hook):
    p = center(wecom=[{"url": hook.url}])
    send(p, alert(event_id="ev-w"))
    _runner(p).run_due()
    p.ingest.handle("edge/garden3-east/events/ev-w/snapshot", JPEG)
    _runner(p).run_due()
    (_, text), (_, image) = hook.requests
    text, image = json.loads(text), json.loads(image)
    assert text["msgtype"] == "text"
    assert text["text"]["mentioned_mobile_list"] == ["13800000001"]
    assert text["text"]["mentioned_list"] == ["zhangwei"]
    assert image["msgtype"] == "image"
    assert image["image"]["md5"] == hashlib.md5(JPEG).hexdigest()


def test_the_wecom_robot_s_key_is_never_written_to_the_log(center, caplog):
    caplog.set_level(logging.INFO)  # `edge-center -v run`
    key = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
    robot = Receiver(statuses=[500])
    p = center(wecom=[{"url": f"{robot.url}?key={key}"}])
    send(p, alert())
    runner = _runner(p)
    runner.run_due()
    runner.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))  # failed, then sent
    assert [j.state for j in _jobs(p)] == [JobState.SENT] and len(robot.requests) == 2
    assert "127.0.0.1" in caplog.text  # the calls are logged, by their host
    assert key not in caplog.text and all(key not in (j.last_error or "") for j in _jobs(p))
    robot.close()


def test_a_wecom_error_code_is_a_failure_not_a_success(center):
    hook = Receiver(body=b'{"errcode": 93000, "errmsg": "invalid webhook url"}')
    p = center(wecom=[{"url": hook.url}])
    send(p, alert())
    _runner(p).run_due()
    (job,) = _jobs(p)
    assert job.state == JobState.PENDING and "93000" in job.last_error
    hook.close()


def _signed_with(secret: str, headers: dict, body: bytes) -> bool:
    expected = hmac.new(secret.encode(), headers["X-Edge-Timestamp"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers["X-Edge-Signature"], "sha256=" + expected.hexdigest())


def test_a_queued_notice_reaches_its_webhook_after_center_yaml_is_reordered(center):
    a, b = Receiver(), Receiver(statuses=[500])  # b is down: its notice waits for a retry
    first = center(webhooks=[{"url": a.url, "secret": "secret-a"}, {"url": b.url, "secret": "secret-b"}])
    send(first, alert(floor=12))
    _runner(first).run_due()
    assert (len(a.requests), len(b.requests)) == (1, 1)
    # The office puts b first and restarts while b's notice still waits.
    again = center(webhooks=[{"url": b.url, "secret": "secret-b"}, {"url": a.url, "secret": "secret-a"}])
    assert _runner(again).run_due(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)) == 1
    assert len(a.requests) == 1, "b's notice went to a"
    headers, body = b.requests[-1]
    assert len(b.requests) == 2 and _signed_with("secret-b", headers, body)
    assert "3号楼 12层" in json.loads(body)["text"]
    assert {j.state for j in _jobs(again)} == {JobState.SENT}
    assert all(b.url not in j.target and "secret" not in j.target for j in _jobs(again))  # a key, not the URL
    a.close()
    b.close()


def test_a_notice_for_a_wecom_group_removed_from_center_yaml_ends_failed_and_goes_nowhere(center, caplog):
    a, b = Receiver(), Receiver(statuses=[500])
    key = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
    first = center(wecom=[{"url": a.url, "send_still": False}, {"url": f"{b.url}?key={key}", "send_still": False}])
    send(first, alert())
    _runner(first).run_due()
    assert (len(a.requests), len(b.requests)) == (1, 1)
    gone = next(j.id for j in _jobs(first) if j.state == JobState.PENDING)
    again = center(wecom=[{"url": a.url, "send_still": False}])  # the office removed b, the last entry
    running = Center(again.cfg, again.roster)
    notices = threading.Thread(target=running._notices, daemon=True)
    try:
        notices.start()
        failed = wait_for(lambda: [j for j in _jobs(again) if j.id == gone and j.state == JobState.FAILED], 10)
        assert failed, [(j.id, j.target, j.state) for j in _jobs(again)]
        time.sleep(1.5)  # a round of every lane: nothing more is sent
    finally:
        running.stopping.set()
        notices.join(10)
        running.engine.dispose()
    assert not notices.is_alive()
    assert (len(a.requests), len(b.requests)) == (1, 1)
    assert "no longer in center.yaml" in failed[0].last_error
    assert f"wecom notice {gone}" in caplog.text and key not in caplog.text and b.url not in caplog.text
    a.close()
    b.close()


def test_an_email_queued_before_smtp_was_removed_from_center_yaml_ends_failed(center, hook):
    first = center(smtp={"host": "127.0.0.1", "port": 9, "sender": "c@x.org", "starttls": False})
    send(first, alert(level="suspected"))  # the office's email waits (its server is away)
    (mail,) = [j.id for j in _jobs(first) if j.channel == "email"]
    again = center(webhooks=[{"url": hook.url, "secret": SECRET}])  # the office gave up email for a webhook
    assert _runner(again).fail_unconfigured() == 1
    (job,) = [j for j in _jobs(again) if j.id == mail]
    assert job.state == JobState.FAILED and "smtp is no longer in center.yaml" in job.last_error
    send(again, alert(level="suspected", floor=20))  # control: the webhook's notice is not touched
    assert _runner(again).fail_unconfigured() == 0
    assert _runner(again).run_due() == 1 and len(hook.requests) == 1


def test_a_notice_an_older_center_queued_by_position_still_goes_to_that_webhook(center):
    a, b = Receiver(), Receiver()
    p = center(webhooks=[{"url": a.url, "secret": "secret-a"}, {"url": b.url, "secret": "secret-b"}])
    now = dt.datetime.now(dt.UTC)
    with p.sessions.begin() as s:  # as an older center queued it: the endpoint's index in center.yaml
        p.loop.queue(s, None, "webhook", "1", {"kind": "dispatch", "case": 1, "to": "office"}, now)
        p.loop.queue(s, None, "webhook", "2", {"kind": "dispatch", "case": 2, "to": "office"}, now)  # out of range
    runner = _runner(p)
    runner.fail_unconfigured()  # at start-up
    assert runner.run_due() == 1
    assert len(a.requests) == 0 and len(b.requests) == 1
    assert _signed_with("secret-b", *b.requests[0])
    assert [(j.target, j.state) for j in _jobs(p)] == [("1", JobState.SENT), ("2", JobState.FAILED)]
    a.close()
    b.close()


def test_the_same_url_listed_twice_stays_two_endpoints_each_with_its_own_secret(center, hook):
    # A center.yaml that listed one receiver twice (two secrets) loaded before notices were keyed by URL: it
    # still does, and each entry still gets every notice, signed with its own secret.
    p = center(webhooks=[{"url": hook.url, "secret": "one"}, {"url": hook.url, "secret": "two"}])
    send(p, alert())
    assert _runner(p).run_due() == 2
    assert sorted(_signed_with(secret, h, b) for secret in ("one", "two") for h, b in hook.requests) == [
        False,
        False,
        True,
        True,
    ]
    targets = {j.target for j in _jobs(p)}
    assert len(targets) == 2 and all(hook.url not in t for t in targets)


@pytest.fixture
def mail():
    """A local SMTP sink: (its messages, the smtp: settings that reach it)."""
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    yield sink.messages, {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "sender": "c@x.org"}
    smtp.stop()


@pytest.fixture
def tls_mail(tmp_path):
    """tls_mail(implicit) -> (messages, smtp: settings) of a local SMTP sink whose certificate a CA made now signs:
    TLS from the first byte when `implicit`, else STARTTLS, which the sink then requires before any mail."""
    ca, cert, key = make_ca(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    started = []

    def make(implicit: bool):
        sink = Sink()
        if implicit:
            smtp = Controller(sink, hostname="127.0.0.1", port=free_port(), ssl_context=server_tls)
        else:
            smtp = Controller(
                sink, hostname="127.0.0.1", port=free_port(), tls_context=server_tls, require_starttls=True
            )
        smtp.start()
        started.append(smtp)
        settings = {"host": "127.0.0.1", "port": smtp.port, "sender": "c@x.org", "ca_file": str(ca)}
        return sink.messages, settings | ({"implicit_tls": True} if implicit else {"starttls": True})

    yield make
    for smtp in started:
        smtp.stop()


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-tls", "starttls"])
def test_email_goes_over_tls_checked_against_the_configured_ca(center, tls_mail, implicit):
    messages, smtp = tls_mail(implicit)
    p = center(smtp=smtp)
    send(p, alert(level="suspected", event_id="ev-tls"))
    _runner(p).run_due()
    assert [j.state for j in _jobs(p)] == [JobState.SENT]
    ((to, msg),) = messages
    assert to == ["office@example.org"] and "疑似（待审核）" in msg["Subject"]


def test_a_server_certificate_no_trusted_ca_signed_gets_no_mail(center, tls_mail):
    messages, smtp = tls_mail(implicit=True)
    del smtp["ca_file"]  # the system's CAs: they did not sign the test's certificate
    p = center(smtp=smtp)
    send(p, alert(level="suspected"))
    _runner(p).run_due()
    assert messages == []
    (job,) = _jobs(p)
    assert job.state == JobState.PENDING and "CERTIFICATE_VERIFY_FAILED" in job.last_error


def test_email_goes_to_the_worker_with_the_still_attached(center, mail):
    messages, smtp = mail
    p = center(smtp=smtp)
    send(p, alert(level="suspected", event_id="ev-mail"))
    p.ingest.handle("edge/garden3-east/events/ev-mail/snapshot", JPEG)  # before the case is dispatched
    with p.sessions.begin() as s:
        p.loop.act(s, s.scalars(select(Case)).one(), Action.CONFIRM, "disp")
    _runner(p).run_due()
    by_to = {tuple(to): msg for to, msg in messages}
    assert set(by_to) == {("office@example.org",), ("zhang@example.org",)}  # the review, then the dispatch
    msg = by_to[("zhang@example.org",)]
    assert "确认 3号楼" in msg["Subject"]
    (attachment,) = [part for part in msg.walk() if part.get_content_type() == "image/jpeg"]
    assert attachment.get_payload(decode=True) == JPEG


def test_a_dispatch_email_goes_without_its_still_when_the_still_is_no_longer_on_the_disk(center, mail):
    messages, smtp = mail
    p = center(smtp=smtp)
    send(p, alert(level="suspected", event_id="ev-gone"))
    p.ingest.handle("edge/garden3-east/events/ev-gone/snapshot", JPEG)
    with p.sessions() as s:
        (still,) = s.scalars(select(Evidence).where(Evidence.kind == "snapshot")).all()
    p.files.path(still.path).unlink()  # retention swept it (an event whose alert came late), or the disk lost it
    with p.sessions.begin() as s:
        p.loop.act(s, s.scalars(select(Case)).one(), Action.CONFIRM, "disp")
    _runner(p).run_due()
    by_to = {tuple(to): msg for to, msg in messages}
    msg = by_to[("zhang@example.org",)]  # the grid worker is told all the same, at the first attempt
    assert "确认 3号楼" in msg["Subject"]
    assert not [part for part in msg.walk() if part.get_content_type() == "image/jpeg"]
    assert {j.state for j in _jobs(p) if j.channel == "email"} == {JobState.SENT}


def test_a_suspected_alert_reaches_the_office_s_dispatchers_with_its_level_shown(center, hook, mail):
    messages, smtp = mail
    p = center(webhooks=[{"url": hook.url, "secret": SECRET}], smtp=smtp)
    send(p, alert(level="suspected", floor=12))
    _runner(p).run_due()
    ((_, body),) = hook.requests
    sent = json.loads(body)
    assert (sent["kind"], sent["level"], sent["to"]) == ("review", "suspected", "office")
    assert "疑似（待审核） 3号楼 12层" in sent["text"] and "社区办公室" in sent["text"]
    ((to, msg),) = messages
    assert to == ["office@example.org"] and "疑似（待审核）" in msg["Subject"]
    send(p, alert(level="confirmed", floor=20))  # the control: a confirmed alert goes to the worker
    _runner(p).run_due()
    sent = json.loads(hook.requests[-1][1])
    assert (sent["kind"], sent["level"], sent["to"]) == ("dispatch", "confirmed", "worker:zhang")
    assert "确认 3号楼 20层" in sent["text"] and "待审核" not in sent["text"]


def test_an_unreviewed_suspected_alert_is_escalated_to_the_grid_leader_saying_so(center, mail):
    messages, smtp = mail
    p = center(smtp=smtp)
    send(p, alert(level="suspected"))
    with p.sessions.begin() as s:
        case = s.scalars(select(Case)).one()
        later = case.escalate_at + dt.timedelta(seconds=1)
        assert p.loop.escalate_due(s, later) == 1
    _runner(p).run_due(later)
    by_to = {tuple(to): msg for to, msg in messages}
    assert set(by_to) == {("office@example.org",), ("leader@example.org",)}
    assert by_to[("leader@example.org",)]["Subject"].startswith("【高空抛物·升级】疑似（待审核） 3号楼")


def test_wecom_gets_the_still_of_a_suspected_alert_for_review(center, hook):
    p = center(wecom=[{"url": hook.url}])
    send(p, alert(level="suspected", event_id="ev-review-still"))
    p.ingest.handle("edge/garden3-east/events/ev-review-still/snapshot", JPEG)
    _runner(p).run_due()
    kinds = [json.loads(body)["msgtype"] for _, body in hook.requests]
    assert kinds == ["text", "image"]  # the dispatcher judges the alert by its trajectory still


def test_a_verdict_is_published_to_its_node(center):
    p = center()
    published: list = []
    send(p, alert(event_id="ev-fb"))
    with p.sessions.begin() as s:
        case = s.scalars(select(Case)).one()
        p.loop.act(s, case, Action.CHECK, "zhang", Verdict.FELL)
    _runner(p, published).run_due()
    ((topic, payload),) = published
    assert topic == "edge/garden3-east/feedback"
    assert json.loads(payload)["verdict"] == "fell"


def test_a_thrown_object_s_evidence_is_held_at_its_node_once(center):
    p = center()
    published: list = []
    send(p, alert(event_id="ev-thrown"))
    with p.sessions.begin() as s:
        case = s.scalars(select(Case)).one()
        p.loop.act(s, case, Action.CHECK, "zhang", Verdict.THROWN)
        p.loop.act(s, case, Action.RESOLVE, "zhang", Verdict.THROWN)  # said again: no second hold
    _runner(p, published).run_due()
    holds = [(t, payload) for t, payload in published if t.endswith("/hold")]
    assert holds == [("edge/garden3-east/events/ev-thrown/hold", b"ON")]
    with p.sessions() as s:
        assert [h.action for h in s.scalars(select(Case)).one().history].count(Action.HOLD) == 1


def test_a_false_alarm_s_evidence_is_left_to_retention(center):
    p = center()
    published: list = []
    send(p, alert(event_id="ev-bird"))
    with p.sessions.begin() as s:
        p.loop.act(s, s.scalars(select(Case)).one(), Action.CHECK, "zhang", Verdict.FALSE_ALARM)
    _runner(p, published).run_due()
    assert [t for t, _ in published] == ["edge/garden3-east/feedback"]  # the verdict, and no hold


def test_a_released_hold_tells_the_node_off_and_a_new_hold_tells_it_on_again(center):
    p = center()
    published: list = []
    send(p, alert(event_id="ev-rel"))
    with p.sessions.begin() as s:
        case = s.scalars(select(Case)).one()
        p.loop.act(s, case, Action.CHECK, "zhang", Verdict.THROWN)
    _runner(p, published).run_due()
    with p.sessions.begin() as s:
        case = s.scalars(select(Case)).one()
        assert p.loop.held(s, case)  # control: the thrown verdict held it
        assert p.loop.set_hold(s, case, False, "disp", "the thrower confessed; the police need no more")
        assert not p.loop.held(s, case) and not p.loop.set_hold(s, case, False, "disp", "again")
    _runner(p, published).run_due()
    with p.sessions.begin() as s:
        assert p.loop.set_hold(s, s.scalars(select(Case)).one(), True, "disp", "the court asked")
    _runner(p, published).run_due()
    holds = [payload for t, payload in published if t == "edge/garden3-east/events/ev-rel/hold"]
    assert holds == [b"ON", b"OFF", b"ON"]


def test_a_hold_command_not_yet_sent_is_replaced_by_a_later_release(center):
    p = center()
    published: list = []
    send(p, alert(event_id="ev-quick"))
    with p.sessions.begin() as s:
        case = s.scalars(select(Case)).one()
        p.loop.act(s, case, Action.CHECK, "zhang", Verdict.THROWN)  # ON queued, not sent
        p.loop.set_hold(s, case, False, "disp", "entered by mistake")
    _runner(p, published).run_due()
    holds = [payload for t, payload in published if t.endswith("/hold")]
    assert holds == [b"OFF"]  # never ON after OFF, whatever order retries would have taken
    with p.sessions() as s:
        actions = [h.action for h in s.scalars(select(Case)).one().history]
        assert actions[-2:] == [Action.HOLD, Action.RELEASE]  # the history keeps both


def test_a_hold_that_failed_while_a_release_was_queued_is_not_sent_after_it(center):
    p = center()
    published: list = []
    released: list = []

    def publish(topic, payload):
        if topic.endswith("/hold") and payload == b"ON" and not released:  # a dispatcher releases mid-send
            with p.sessions.begin() as s:
                released.append(p.loop.set_hold(s, s.scalars(select(Case)).one(), False, "disp", "by mistake"))
            raise OSError("the broker went away")
        published.append((topic, payload))

    runner = JobRunner(p.cfg, p.sessions, make_notifiers(p.cfg, p.sessions, p.files, publish), "test")
    send(p, alert(event_id="ev-race"))
    with p.sessions.begin() as s:
        p.loop.act(s, s.scalars(select(Case)).one(), Action.CHECK, "zhang", Verdict.THROWN)
    runner.run_due()  # the ON fails after the OFF was queued: it was in flight, so not replaced
    assert released == [True]
    runner.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))  # the ON's retry is due too
    holds = [payload for t, payload in published if t.endswith("/hold")]
    assert holds == [b"OFF"]  # control: the release went; the older ON did not follow it
    assert [j.channel for j in _jobs(p) if j.channel in ("hold", "release")] == ["release"]


def test_an_alert_that_joins_a_held_case_has_its_evidence_held_too(center):
    p = center()
    published: list = []
    t = dt.datetime.now(dt.UTC)
    send(p, alert("garden3-east", "east", "ev-early", floor=12, at=t))
    with p.sessions.begin() as s:
        p.loop.act(s, s.scalars(select(Case)).one(), Action.CHECK, "zhang", Verdict.THROWN)
    # Another camera's alert of the same throw, delivered late (its node's outbox waited): the same case.
    send(p, alert("garden3-west", "west", "ev-late", floor=13, at=t + dt.timedelta(milliseconds=300)))
    _runner(p, published).run_due()
    holds = sorted(topic for topic, payload in published if topic.endswith("/hold") and payload == b"ON")
    assert holds == ["edge/garden3-east/events/ev-early/hold", "edge/garden3-west/events/ev-late/hold"]


def _notice(problem: str, state: str) -> str:
    return describe_camera_problem(
        {"problem": problem, "state": state, "node": "n1", "camera": "cam1", "at": "T"}, "Asia/Shanghai"
    )


@pytest.mark.parametrize("problem", list(Problem))
def test_a_camera_problem_notice_names_the_problem_as_the_pages_do(problem):
    words = translator("zh")(f"problem.{problem.value}")
    assert words != f"problem.{problem.value}"  # the pages have words for every problem a node can raise
    assert _notice(problem.value, "raised").startswith(f"【{words}】")
    assert f"此前{words}" in _notice(problem.value, "cleared")


def test_a_problem_the_pages_have_no_words_for_is_named_by_its_own_name():
    assert _notice("fogged", "raised").startswith("【摄像机fogged】")


def test_a_camera_problem_with_a_long_chinese_reason_fits_a_wecom_text_and_says_it_was_cut():
    # WeCom refuses a text over 2,048 bytes, and the notice is lost: a node's reason may be 500 characters, of
    # up to 4 bytes each.
    problem = {"kind": "camera_problem", "state": "raised", "problem": "covered", "node": "n1", "camera": "c1"}
    long = wecom_text({**problem, "reason": "𠀀" * 500}, "Asia/Shanghai")["content"]
    assert len(long.encode()) <= WECOM_TEXT_MAX and "…" in long and "n1/c1" in long
    assert long.endswith("请派人到现场检查")  # the reason is what is shortened: the ask to go there stays
    short = wecom_text({**problem, "reason": "镜头被遮挡"}, "Asia/Shanghai")["content"]
    assert short.endswith("请派人到现场检查") and "镜头被遮挡" in short  # the control: a short one is whole


@pytest.mark.parametrize(
    "phone", ["13800000001", "138 0000 0001", "138-0000-0001", "+86 138-0000-0001", "0086 13800000001"]
)
def test_a_worker_s_phone_is_mentioned_on_wecom_as_the_digits_wecom_matches(phone):
    payload = {"kind": "dispatch", "person": {"name": "张伟", "phone": phone}}
    assert wecom_text(payload, "Asia/Shanghai")["mentioned_mobile_list"] == ["13800000001"]


@pytest.mark.parametrize("timeout_s", [20.0, 100.0])
def test_an_email_s_claim_outlasts_its_server_s_slowest_answers_so_no_other_instance_sends_it(center, timeout_s):
    smtp = {"host": "127.0.0.1", "port": 9, "sender": "c@x.org", "starttls": False, "timeout_s": timeout_s}
    hook = {"url": "https://127.0.0.1:9/hook", "secret": SECRET}
    p = center(smtp=smtp, webhooks=[hook])
    send(p, alert(level="suspected"))  # the office's email and the webhook's notice are due
    runner = _runner(p)
    jobs = {j.channel: j.id for j in _jobs(p)}
    now = dt.datetime.now(dt.UTC)
    held = {c: (runner._claim(jobs[c], now, runner.lease_s(c)).lease_until - now).total_seconds() for c in jobs}
    # Greeting, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA, end of data and QUIT may each wait that long.
    assert held["email"] >= max(LEASE_S, 10 * timeout_s)
    assert held["webhook"] <= LEASE_S  # a crashed instance's webhook notice is not held longer for it


def test_a_phone_of_no_digits_mentions_nobody_on_wecom():
    payload = {"kind": "dispatch", "person": {"name": "张伟", "phone": "-----"}}  # the roster's pattern takes it
    assert "mentioned_mobile_list" not in wecom_text(payload, "Asia/Shanghai")
