"""The center's pages in a real browser (Debian's Chromium driven by Playwright), fed by a real node replaying
a clip through a real Mosquitto into a real `edge-center run`: the list updates by itself, the clip plays, the
loop is walked by a dispatcher and a grid worker, and the node receives the verdict.

One center and one node serve the whole module (the tests run in order and build on each other's case), to keep
the browser tests to about a minute. Screenshots of the pages are taken into the run's temporary folder; with
EDGE_SCREENSHOTS=docs/screenshots they renew the README's (a run of the suite leaves the repository as it was)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request

import cv2
import numpy as np
import pytest
import yaml
from centerkit import REPO, USERS, CenterProcess, node_client, run_cli, write_center
from parts import alert
from support.broker import Broker
from support.servers import free_port, wait_for
from web_fixtures import PEOPLE, password_of

from edge.config import parse_config
from edge.node import Node
from edge.publish.manifest import load_or_create_key

from conftest import loop_clip, sim_facade

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
SHOTS_ENV = "EDGE_SCREENSHOTS"  # where screenshots go when asked for (relative to the repository)
NODE, CAMERA = "garden3-east", "east"  # building b3's east facade in the test roster (grid g1: zhang)
WAIT_S = 90  # a throw in the replayed clip, its clip and manifest reaching the center


class Site:
    """The running pieces: broker, center (with its address), the node (started by a test), its storage."""

    def __init__(self, tmp, clip_folder):
        self.tmp = tmp
        self.broker = Broker(tmp / "broker", USERS).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = write_center(tmp / "center", None, self.broker, api={"host": "127.0.0.1", "port": self.port})
        self.storage = tmp / "node"
        self.shots = REPO / os.environ[SHOTS_ENV] if os.environ.get(SHOTS_ENV) else tmp / "screenshots"
        load_or_create_key(self.storage / "keys")
        for args in (
            ("db", "upgrade"),
            ("node", "add", NODE, "--key", str(self.storage / "keys/node_ed25519.pub")),
        ):
            r = run_cli(*args, "--config", str(self.config))
            assert r.returncode == 0, r.stderr
        for name, (role, worker) in PEOPLE.items():
            pw = tmp / f"{name}.pw"
            pw.write_text(password_of(name) + "\n")
            extra = ("--worker", worker) if worker else ()
            r = run_cli(
                "user",
                "add",
                name,
                "--role",
                role,
                *extra,
                "--password-file",
                str(pw),
                "--config",
                str(self.config),
            )
            assert r.returncode == 0, r.stderr
        self.center = CenterProcess(self.config).start()
        # Subscribed is not serving: the web server starts beside the receiver, later on a loaded machine.
        assert wait_for(lambda: _serving(f"{self.url}/login"), 60), self.center.output()[-2000:]
        clip = loop_clip(clip_folder / "scene.mp4", 4, tmp / "long.mp4")
        self.node = Node(parse_config(yaml.safe_dump(self._node_config(clip, sim_facade(clip_folder)))))
        self.node_started = False

    def _node_config(self, clip, facade) -> dict:
        return {
            "version": 1,
            "node": {"id": NODE, "status_interval_s": 2, "metrics": {"listen": None}},
            "storage": {"dir": str(self.storage)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": self.broker.port,
                "username": NODE,
                "password": USERS[NODE],
                "tls": {"ca_file": str(self.broker.ca)},
            },
            "cameras": {
                CAMERA: {
                    "source": str(clip),
                    "facade": facade,
                    "record": {"pre_s": 2, "post_s": 1, "buffer_s": 10},
                }
            },
        }

    def start_node(self) -> None:
        self.node.start()
        self.node_started = True

    def stop(self) -> None:
        if self.node_started:
            self.node.stop()
        code = self.center.stop()
        self.broker.stop()
        assert code == 0, self.center.output()[-2000:]  # open event streams do not hold up a clean stop


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory, sim_clip):
    s = Site(tmp_path_factory.mktemp("web"), sim_clip("throw", 1))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run scripts/install-system-deps.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def person(browser, site, name: str, viewport=(1280, 860)):
    """A browser of its own for `name`, logged in through the login page; no script error may occur."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, base_url=site.url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on(
        "console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security" in m.text else None
    )
    pg.goto("/alerts")
    assert "/login" in pg.url  # not logged in yet: sent to log in
    pg.fill("input[name=name]", name)
    pg.fill("input[name=password]", password_of(name))
    pg.click("button[type=submit].primary")
    pg.wait_for_url("**/alerts")
    yield pg
    context.close()
    assert errors == []


def shot(pg, site: Site, name: str) -> None:
    site.shots.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(site.shots / f"{name}.png"), full_page=True)


def _first_case(pg, site: Site) -> int:
    """The oldest case on the list; the node is started for it when this test runs alone (or first)."""
    if not site.node_started:
        site.start_node()
    pg.wait_for_selector("#rows tr[data-case]", timeout=WAIT_S * 1000)
    return int(pg.locator("#rows tr[data-case]").last.get_attribute("data-case"))


def test_an_alert_from_a_node_appears_in_the_open_list_without_a_reload(browser, site):
    with person(browser, site, "disp") as pg:
        pg.wait_for_selector("body[data-live='1']")  # the stream is open
        pg.evaluate("window.notReloaded = true")
        assert pg.locator("#rows tr[data-case]").count() == 0
        site.start_node()
        pg.wait_for_selector("#rows tr[data-case]", timeout=WAIT_S * 1000)
        assert pg.evaluate("window.notReloaded") is True
        assert pg.locator("#badge").inner_text() != "0"
        row = pg.locator("#rows tr[data-case]").last
        assert "3号楼" in row.inner_text() and f"{NODE}/{CAMERA}" in row.inner_text()
        shot(pg, site, "alerts")


def test_the_alert_page_plays_the_clip_and_shows_the_verified_evidence(browser, site):
    with person(browser, site, "disp") as pg:
        case = _first_case(pg, site)
        pg.goto(f"/alerts/{case}")
        assert wait_for(lambda: _reloaded_has(pg, "video.clip") and _reloaded_has(pg, ".tag.verified"), WAIT_S)
        pg.eval_on_selector("video.clip", "v => v.play()")
        # Polled with evaluate: wait_for_function re-evaluates a string in the page, which its CSP forbids
        # (no 'unsafe-eval'); it only passed while the first check was already true.
        assert wait_for(lambda: pg.evaluate("document.querySelector('video.clip').currentTime > 0"), 20)
        assert pg.eval_on_selector("img.elevation", "i => i.complete && i.naturalWidth > 0")
        assert pg.eval_on_selector("img.still", "i => i.complete && i.naturalWidth > 0")
        shot(pg, site, "alert")


def _alert_from_b5(site, event_id: str, level: str = "confirmed") -> None:
    """An alert from the node of building b5 (chen's grid), through the real broker."""
    other = node_client(site.broker, "garden5")
    try:
        body = alert("garden5", "south", event_id, level=level)
        other.publish("edge/garden5/events", json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        other.loop_stop()


def _reloaded_has(pg, selector: str) -> bool:
    pg.reload()
    return pg.locator(selector).count() > 0


def test_a_dispatcher_dispatches_and_the_grid_worker_acknowledges_and_marks_a_false_alarm(browser, site):
    with person(browser, site, "disp") as pg:
        case = _first_case(pg, site)
        pg.goto(f"/alerts/{case}")
        if pg.locator("form.act-confirm").count():  # a suspected alert: confirming dispatches it
            pg.click("form.act-confirm button")
        else:  # confirmed by the node, dispatched already: the dispatcher gives it to zhang by name
            pg.select_option("form.act-reassign select", "worker:zhang")
            pg.click("form.act-reassign button")
        pg.wait_for_selector("#case[data-state='dispatched']")
        assert "张伟" in pg.inner_text("#assignee")
    with person(browser, site, "zhang", viewport=(412, 915)) as pg:  # a phone
        pg.goto(f"/alerts/{case}")
        pg.click("form.act-acknowledge button")
        pg.wait_for_selector("#case[data-state='acknowledged']")
        pg.select_option("form.act-check select[name=verdict]", "false_alarm")
        pg.fill("form.act-check input[name=note]", "一只风筝")
        pg.set_input_files("form.act-check input[name=photo]", str(_photo(site.tmp)))
        pg.click("form.act-check button")
        pg.wait_for_selector("#case[data-state='checked']")
        assert pg.locator("#history li[data-action='check']").count() == 1
        photo_loaded = "i => i.complete && i.naturalWidth == 64"
        photo = f"() => {{ const i = document.querySelector('img.photo'); return !!i && ({photo_loaded})(i); }}"
        assert wait_for(lambda: pg.evaluate(photo), 30)  # the photo, kept (it may still be loading when shown)
        shot(pg, site, "alert-phone")
    feedback = site.storage / "feedback"
    assert wait_for(lambda: list(feedback.glob("*.jsonl")), 30), site.center.output()[-2000:]
    got = [json.loads(line) for f in feedback.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert any(g["verdict"] == "false_alarm" and g["note"] == "一只风筝" and g["by"] == "zhang" for g in got)


def _photo(folder):
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))
    path = folder / "site-photo.jpg"
    path.write_bytes(data.tobytes())
    return path


# The elements reaching past a screen `w` pixels wide, to name them when a page does not fit.
_PAST_THE_EDGE = """w => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > w).map(e => e.tagName + '.' + e.className).slice(0, 12)"""


@pytest.mark.parametrize("width", [320, 360])
def test_a_grid_worker_s_alert_page_fits_a_narrow_phone_without_scrolling_sideways(browser, site, width):
    _alert_from_b5(site, f"ev-narrow-{width}")  # dispatched to chen, who has yet to acknowledge it
    with person(browser, site, "chen", viewport=(width, 700)) as pg:
        assert wait_for(lambda: _reloaded_has(pg, "#rows tr[data-case]"), 30)
        case = max(int(r.get_attribute("data-case")) for r in pg.locator("#rows tr[data-case]").all())
        assert pg.goto(f"/alerts/{case}").status == 200
        assert pg.locator("form.act-acknowledge, form.act-check").count() > 0  # the actions are on it
        assert pg.evaluate("document.documentElement.scrollWidth") <= width, pg.evaluate(_PAST_THE_EDGE, width)


def test_a_grid_worker_gets_403_for_another_micro_grids_alert(browser, site):
    _alert_from_b5(site, "ev-b5")  # building b5, grid g2
    with person(browser, site, "disp") as pg:
        assert wait_for(lambda: _reloaded_has(pg, "#rows tr[data-case] td:has-text('5号楼')"), 30)
        b5 = int(pg.locator("#rows tr[data-case]:has(td:has-text('5号楼'))").first.get_attribute("data-case"))
        b3 = int(pg.locator("#rows tr[data-case]:has(td:has-text('3号楼'))").first.get_attribute("data-case"))
    with person(browser, site, "zhang") as pg:
        assert pg.locator("#rows td:has-text('5号楼')").count() == 0
        assert pg.locator("#rows td:has-text('3号楼')").count() > 0
        assert pg.goto(f"/alerts/{b5}").status == 403
        assert pg.goto(f"/alerts/{b3}").status == 200  # control: their own building's alert opens


def test_a_form_without_its_csrf_token_is_refused(browser, site):
    with person(browser, site, "disp") as pg:
        case = _first_case(pg, site)  # the case the grid worker checked: resolving it is next
        pg.goto(f"/alerts/{case}")
        pg.evaluate("document.querySelectorAll('form.act-resolve input[name=csrf]').forEach(e => e.remove())")
        with pg.expect_navigation() as nav:
            pg.click("form.act-resolve button")
        assert nav.value.status == 403
        assert pg.locator("#error").count() == 1
        pg.goto(f"/alerts/{case}")
        assert pg.get_attribute("#case", "data-state") == "checked"  # nothing changed
        pg.click("form.act-resolve button")  # control: the same form with its token goes through
        pg.wait_for_selector("#case[data-state='resolved']")


def _retained(site, topic: str) -> dict:
    """The latest payload of `topic` as a subscriber logged in as `monitor` sees it (retained ones included)."""
    import paho.mqtt.client as mqtt

    got: dict = {}
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"web-probe-{id(got)}")
    probe.tls_set(ca_certs=str(site.broker.ca))
    probe.username_pw_set("monitor", USERS["monitor"])
    probe.on_message = lambda c, u, m: got.__setitem__("value", m.payload.decode())
    probe.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
    probe.connect("127.0.0.1", site.broker.port)
    probe.loop_start()
    got["client"] = probe
    return got


def test_the_nodes_page_shows_the_camera_and_switches_its_detection_at_the_node(browser, site):
    topic = f"edge/{NODE}/{CAMERA}/detect/state"
    state = _retained(site, topic)
    try:
        with person(browser, site, "disp") as pg:
            pg.goto("/nodes")
            row = pg.locator(f"tr[data-camera='{NODE}/{CAMERA}']")
            assert row.count() == 1 and pg.locator(f"#node-{NODE} .tag.verified").count() == 2  # online, key
            assert pg.eval_on_selector(
                f"tr[data-camera='{NODE}/{CAMERA}'] img.camstill", "i => i.naturalWidth > 0"
            )
            assert state.get("value") != "OFF"  # control: not off before the switch
            shot(pg, site, "nodes")
            row.locator("form button").click()
            pg.wait_for_selector("#sent")
        assert wait_for(lambda: state.get("value") == "OFF", 20)  # the node switched and said so
    finally:
        state["client"].loop_stop()


def test_the_month_report_draws_its_charts_and_prints(browser, site):
    with person(browser, site, "disp") as pg:
        pg.goto("/report")
        assert pg.locator("#kpis b").first.inner_text() != "0"
        assert pg.locator("svg").count() >= 2  # a facade's heat map and the hours
        shot(pg, site, "report")
        with pg.expect_download() as download:
            pg.click("#csv")
        rows = download.value.path().read_text(encoding="utf-8-sig").splitlines()
        assert rows[0].startswith("case,building,facade,floor") and len(rows) >= 2


def test_the_police_archive_holds_the_signed_evidence_and_its_verification(browser, site):
    import zipfile

    with person(browser, site, "disp") as pg:
        case_id = _first_case(pg, site)
        pg.goto(f"/alerts/{case_id}")
        pg.click("form.act-original button")  # the original clip is sent only when asked for
        pg.wait_for_selector("#asked")
        assert wait_for(lambda: _reloaded_has(pg, "tr.trust-verified[data-kind='original']"), 60)
        with pg.expect_download() as download:
            pg.click("#export")
        with zipfile.ZipFile(download.value.path()) as z:
            names = z.namelist()
            (check,) = [c for c in json.loads(z.read("verification.json")) if c["node"] == NODE]
            case = json.loads(z.read("case.json"))
    assert check["signature"] == "verified", check
    assert {check["files"][f] for f in ("original.ts", "annotated.mp4", "still.jpg")} == {"ok"}
    assert any(n.endswith("/manifest.json") for n in names) and any(n.endswith("/node_ed25519.pub") for n in names)
    actions = [h["action"] for h in case["history"]]
    assert actions[0] == "created" and "dispatch" in actions  # a suspected alert is reviewed before it
    # Evidence given to the police is held at the node, past its retention, through the real broker.
    (event_id,) = [e.split("/", 1)[1] for e in case["events"] if e.startswith(f"{NODE}/")]
    assert wait_for(lambda: site.node.holds.is_held(event_id), 30)


def test_the_pages_switch_to_english(browser, site):
    with person(browser, site, "disp", viewport=(412, 915)) as pg:
        pg.click("#lang")
        pg.wait_for_selector("html[lang='en']", state="attached")
        assert pg.locator("#rows td[data-label='Building']").count() > 0  # the phone's card labels too
        shot(pg, site, "alerts-phone-en")
        pg.click("#lang")
        pg.wait_for_selector("html[lang='zh-CN']", state="attached")
        assert pg.locator("#rows td[data-label='楼栋']").count() > 0


def test_the_live_list_comes_back_by_itself_after_the_center_restarted_behind_its_proxy(browser, site):
    # While the center restarts (an upgrade), nginx answers 502 for it: the browser gives up on an event stream
    # answered so, and the list must neither stop being live nor turn into nginx's error page. What came while
    # it was away is shown, and beeps, when it is back.
    def gateway_down(route):
        route.fulfill(status=502, content_type="text/html", body="<h1>502 Bad Gateway</h1>")

    with person(browser, site, "disp") as pg:
        pg.wait_for_selector("body[data-live='1']")
        pg.evaluate("window.notReloaded = true")
        pg.route("**/alerts/stream", gateway_down)
        pg.route("**/alerts/rows*", gateway_down)
        assert site.center.stop() == 0
        pg.wait_for_selector("#live.off")  # said: not live
        site.center = CenterProcess(site.config).start()
        assert wait_for(lambda: site.center.output().count("center.receiver: subscribed to") >= 2, 60)
        assert wait_for(lambda: _serving(f"{site.url}/login"), 60)
        _alert_from_b5(site, "ev-b5-restart")
        with person(browser, site, "disp") as second:  # the alert is in: another dispatcher's list shows it
            assert wait_for(lambda: _reloaded_has(second, "#rows tr[data-case]:has(td:has-text('5号楼'))"), 30)
            newest = second.locator("#rows tr[data-case]").first.get_attribute("data-case")
        pg.unroute_all()  # the center is back behind the proxy
        pg.wait_for_selector(f"#rows tr[data-case='{newest}']", timeout=WAIT_S * 1000)
        pg.wait_for_selector("body[data-live='1']")
        assert pg.evaluate("window.notReloaded") is True
        assert pg.locator("#badge").inner_text() != "0"


def test_a_row_fetch_that_failed_once_does_not_leave_a_live_list_saying_reconnecting(browser, site):
    def server_error(route):
        route.fulfill(status=500, content_type="text/plain", body="Internal Server Error")

    with person(browser, site, "disp") as pg:
        pg.wait_for_selector("body[data-live='1']")
        pg.route("**/alerts/rows*", server_error)
        _alert_from_b5(site, "ev-b5-rows-500")  # the stream says so; fetching the rows fails
        pg.wait_for_selector("body[data-live='0']")
        pg.unroute_all()
        _alert_from_b5(site, "ev-b5-rows-ok")  # the next fetch comes: the stream was up all along
        pg.wait_for_selector("#rows tr[data-case]:has(td:has-text('5号楼'))", timeout=WAIT_S * 1000)
        pg.wait_for_selector("body[data-live='1']", timeout=WAIT_S * 1000)


def test_a_photo_too_large_is_refused_on_the_phone_before_it_is_sent(browser, site):
    _alert_from_b5(site, "ev-b5-photo")
    with person(browser, site, "chen", viewport=(360, 740)) as pg:
        assert wait_for(lambda: _reloaded_has(pg, "#rows tr.state-dispatched[data-case]"), 30)
        case = pg.locator("#rows tr.state-dispatched[data-case]").first.get_attribute("data-case")
        pg.goto(f"/alerts/{case}")
        pg.select_option("form.act-check select[name=verdict]", "not_found")
        huge = b"\xff\xd8\xff\xe0" + bytes(12 << 20)  # a 48-megapixel shot: more than the center or nginx takes
        pg.set_input_files(
            "form.act-check input[name=photo]", {"name": "big.jpg", "mimeType": "image/jpeg", "buffer": huge}
        )
        assert pg.inner_text("#photo-refused") == "照片不能超过 10 MB。"
        pg.click("form.act-check button")
        assert pg.get_attribute("#case", "data-state") == "dispatched" and pg.url.endswith(f"/alerts/{case}")
        heic = {
            "name": "IMG_0001.HEIC",
            "mimeType": "image/heic",
            "buffer": b"\x00\x00\x00\x18ftypheic" + bytes(100),
        }
        pg.set_input_files("form.act-check input[name=photo]", heic)
        assert pg.inner_text("#photo-refused") == "照片须为 JPEG 格式。"
        pg.set_input_files("form.act-check input[name=photo]", str(_photo(site.tmp)))  # control: a phone's JPEG
        assert not pg.is_visible("#photo-refused")
        pg.click("form.act-check button")
        pg.wait_for_selector("#case[data-state='checked']")
        assert pg.locator("img.photo").count() == 1


def test_a_second_tap_while_the_first_is_on_its_way_sends_nothing_more(browser, site):
    # On a slow phone network a second tap would cancel the first submission (a photo half uploaded) and start
    # it again from nothing, as often as the worker taps.
    _alert_from_b5(site, "ev-b5-taps")
    with person(browser, site, "chen", viewport=(360, 740)) as pg:
        assert wait_for(lambda: _reloaded_has(pg, "#rows tr.state-dispatched[data-case]"), 30)
        case = pg.locator("#rows tr.state-dispatched[data-case]").first.get_attribute("data-case")
        pg.goto(f"/alerts/{case}")
        pg.select_option("form.act-check select[name=verdict]", "fell")
        pg.set_input_files("form.act-check input[name=photo]", str(_photo(site.tmp)))
        taps = pg.evaluate(TWO_TAPS)  # before the first has left: what a slow network gives a second tap
        assert taps == {"sent": [True, False], "label": "提交中…"}
        pg.wait_for_selector("#case[data-state='checked']")
        assert pg.locator("#history li[data-action='check']").count() == 1
        assert pg.locator("#history li[data-action='photo']").count() == 1


# Two taps on the check button, in one go: whether the browser was let to send each (its default not prevented),
# and what the button says after them.
TWO_TAPS = """() => {
  const form = document.querySelector('form.act-check');
  const sent = [];
  document.addEventListener('submit', ev => sent.push(!ev.defaultPrevented));
  form.requestSubmit();
  form.requestSubmit();
  return {sent: sent, label: form.querySelector('button').textContent};
}"""


def test_an_open_case_page_says_when_the_case_moved_without_reloading_itself(browser, site):
    with person(browser, site, "disp") as pg:
        b5 = "#rows tr[data-case]:has(td:has-text('5号楼'))"
        before = pg.locator(b5).count()
        _alert_from_b5(
            site, "ev-moved", "suspected"
        )  # a case of its own: the other tests' cases keep their states
        assert wait_for(lambda: pg.reload() and pg.locator(b5).count() > before, 30)
        case = max(int(r.get_attribute("data-case")) for r in pg.locator(b5).all())
        pg.goto(f"/alerts/{case}")
        pg.evaluate("window.notReloaded = true")
        ask = "document.dispatchEvent(new Event('visibilitychange'))"  # the page asks now, not in 10 s
        pg.evaluate(ask)
        pg.wait_for_selector("#case-updated[data-asked]", state="attached")
        assert pg.locator("#case-updated").is_hidden()  # the control: nothing moved yet
        other = pg.context.new_page()  # the same case, acted on from another screen
        other.goto(f"/alerts/{case}")
        other.click("form.act-confirm button")
        other.wait_for_selector("#case[data-state='dispatched']")
        pg.evaluate(ask)
        pg.wait_for_selector("#case-updated", state="visible", timeout=10_000)
        assert pg.evaluate("window.notReloaded") is True  # told, not reloaded: nothing typed is lost
        other.close()
