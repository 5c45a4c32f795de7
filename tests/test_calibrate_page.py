"""The calibration page in Debian's Chromium through Playwright, against `edge calibrate` on a free port."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml
from support.servers import RtspServer

from edge.calibrate.bench import oracle_lowest_floor
from edge.calibrate.propose import detect_grid
from edge.calibrate.still import take_still
from edge.calibrate.synth import KnownStill, sim_still
from edge.calibrate.web import cookie_name
from edge.sim.render import WINDOW_PITCH_M
from edge.video import H264Writer

from conftest import REPO, loop_clip, run_edge

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONFIG = """\
# 花园小区 3 号楼: the node beside the east facade
version: 1
node:
  id: garden3            # appears in every topic
storage:
  dir: {storage}

cameras:
  east:
    source: {clip}       # the camera (a file here)
    record: {{pre_s: 4}}  # seconds before the object
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A short clip of a simulated facade seen at a yaw: the page takes its still from a video file."""
    still = sim_still("throw", 5, 12.0).image
    path = tmp_path_factory.mktemp("clip") / "east.mp4"
    h, w = still.shape[:2]
    with H264Writer(path, w, h, 25.0, threads=1) as writer:
        for _ in range(5):
            writer.write(still)
    return path


@pytest.fixture
def site(tmp_path, clip) -> Path:
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(storage=tmp_path / "storage", clip=clip), encoding="utf-8")
    return config


@contextlib.contextmanager
def serving(config: Path, still: Path | None):
    """`edge calibrate` serving the page on a free loopback port; yields the link it prints.

    Without `still` the page takes its still from the camera, and keeps a live camera's last minute."""
    args = ["calibrate", "--config", str(config), "--camera", "east", "--listen", "127.0.0.1:0"]
    args += ["--still", str(still)] if still is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/\?key=\S+)", line)
    assert match, f"no link printed: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
    try:
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def page_url(site, clip):
    with serving(site, clip) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/install-system-deps.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def opened(browser, url: str, viewport=(412, 915)):
    """The page in a fresh browser context (a phone's screen by default); no script error may occur."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, has_touch=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url)
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()
    assert errors == []


@pytest.fixture
def page(browser, page_url):
    with opened(browser, page_url) as pg:
        yield pg


def _drag(pg, index: int, dx_css: float, dy_css: float) -> None:
    pg.locator("#view").scroll_into_view_if_needed()  # a control clicked below may have scrolled the still away
    x, y = pg.evaluate(f"window.calib.facade.points[{index}].image")
    box = pg.locator("#view").bounding_box()
    k = box["width"] / pg.evaluate("window.calib.size[0]")
    sx, sy = box["x"] + x * k, box["y"] + y * k
    pg.mouse.move(sx, sy)
    pg.mouse.down()
    pg.mouse.move(sx + dx_css, sy + dy_css, steps=6)
    pg.mouse.up()


def test_load_accept_the_proposal_drag_a_point_save_and_check_config_passes(page, site):
    assert "Found" in page.inner_text("#proposal-note")
    page.fill("#lowest-floor", "3")
    page.click("#btn-propose")
    page.wait_for_function("window.calib.proposal.floors[0].floor === 3")
    page.click("#btn-accept")
    page.wait_for_function("window.calib.overlay !== null")
    assert "places the camera" in page.inner_text("#status")  # where, to compare with where it stands
    before = page.evaluate("window.calib.facade.points[2].image")
    _drag(page, 2, 6, 4)
    page.wait_for_function(f"window.calib.facade.points[2].image[0] !== {before[0]} && !window.calib.refitting")
    moved = page.evaluate("window.calib.facade.points[2].image")
    page.click("#btn-save")
    page.wait_for_function("document.querySelector('#status').textContent.includes('check-config OK')")
    assert page.get_attribute("#status", "class") == "good"
    saved = yaml.safe_load(site.read_text())["cameras"]["east"]["facade"]
    assert saved["points"][2]["image"] == pytest.approx(moved, abs=0.11)
    assert saved["points"][0]["facade"][1] == pytest.approx(6.0)  # the bottom of floor 3: two storeys up
    assert "# 花园小区 3 号楼" in site.read_text() and "# the camera (a file here)" in site.read_text()
    done = run_edge("check-config", str(site))
    assert done.returncode == 0, done.stderr
    ref = json.loads(site.with_name("site.east.reference.json").read_text())
    assert site.with_name("site.east.reference.jpg").stat().st_size > 10_000
    assert ref["image_size"] == [1920, 1080] and ref["facade"]["points"][2]["image"] == saved["points"][2]["image"]


def _accept_and_drag_a_top_point(page, dy_css: float):
    page.click("#btn-accept")
    page.wait_for_function("window.calib.overlay !== null")
    before = page.evaluate("window.calib.facade.points.map((p) => p.image)")
    _drag(page, 2, 0, dy_css)  # points 3 and 4 are on the highest line drawn
    page.wait_for_function(f"window.calib.facade.points[2].image[1] !== {before[2][1]} && !window.calib.refitting")
    page.wait_for_function("window.calib.overlay !== null")
    return before, page.evaluate("window.calib.facade.points.map((p) => p.image)")


def test_a_dragged_proposal_point_takes_the_other_point_of_its_line_with_it(page):
    before, after = _accept_and_drag_a_top_point(page, -12)
    assert after[3][1] < before[3][1] - 2  # the storey re-fitted: the whole top line rose
    # The lowest line stays where it was: its points are re-placed from facade metres kept to the centimetre,
    # a fraction of a pixel.
    assert after[0] == pytest.approx(before[0], abs=0.5)
    assert page.evaluate("window.calib.placed.length") == 1


def test_with_re_fitting_unticked_a_drag_moves_that_point_alone(page):
    page.uncheck("#refit")
    before, after = _accept_and_drag_a_top_point(page, -12)
    assert after[3] == before[3] and after[2][1] < before[2][1] - 2
    assert page.evaluate("window.calib.placed.length") == 0


def test_a_shield_polygon_drawn_on_the_still_is_saved_in_frame_coordinates(page, site):
    page.click("#btn-accept")
    page.wait_for_function("window.calib.overlay !== null")
    page.click("button[data-mode='shield']")
    page.locator("#view").scroll_into_view_if_needed()  # the mode buttons sit below the still on a phone
    box = page.locator("#view").bounding_box()
    for fx, fy in ((0.1, 0.8), (0.3, 0.8), (0.3, 0.95)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.click("#btn-poly-done")
    page.click("#btn-save")
    page.wait_for_function("document.querySelector('#status').textContent.includes('check-config OK')")
    shield = yaml.safe_load(site.read_text())["cameras"]["east"]["masks"]["shield"]
    assert len(shield) == 1 and shield[0][0] == pytest.approx([0.1, 0.8], abs=0.01)


def test_a_layout_with_too_few_points_is_refused_and_the_config_is_not_touched(page, site):
    before = site.read_text()
    page.click("#btn-accept")
    page.wait_for_function("window.calib.overlay !== null")
    page.click("#points button[data-del='0']")
    page.wait_for_function("document.querySelector('#status').className === 'bad'")
    assert "needs at least 4 points, got 3" in page.inner_text("#status")
    page.click("#btn-save")
    page.wait_for_function("document.querySelector('#status').textContent.includes('Not saved')")
    assert site.read_text() == before


def test_the_page_and_its_still_need_the_key_from_the_printed_link(page_url):
    base = page_url.split("/?")[0]
    with httpx.Client(base_url=base) as c:
        assert c.get("/").status_code == 403
        assert c.get("/still.jpg").status_code == 403
        assert c.post("/api/save", json={"facade": {}}).status_code == 403
        assert c.get("/?key=wrong").status_code == 403
        assert c.get(page_url.removeprefix(base)).status_code == 303  # the right key: a cookie, then the page
        assert c.get("/still.jpg").headers["content-type"] == "image/jpeg"


def _raw_post(base: str, head: str, body: bytes = b"", wait_s: float = 10.0) -> str:
    """POST with these extra headers and this much of the body; the first line of the answer ('' if none came)."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(f"POST /api/save HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode() + body)
        try:
            return sock.recv(4096).decode("latin-1").split("\r\n")[0]
        except TimeoutError:
            return ""


def test_a_request_without_the_key_is_refused_before_its_body_is_read(page_url):
    """Whoever reaches the port (the LAN with --listen 0.0.0.0, any web page through the browser) must not make
    the node hold a body of gigabytes in memory: without the key the answer comes before the body is read."""
    base, key = page_url.split("/?key=")
    json_head = "Content-Type: application/json\r\nContent-Length: 4000000000\r\n"
    assert _raw_post(base, json_head, b'{"facade": {"points": [').startswith("HTTP/1.1 403")
    # With the key, a body larger than any config is refused by its announced length, or as it arrives.
    cookie = f"Cookie: {cookie_name(key)}={key}\r\n"
    assert _raw_post(base, json_head + cookie, b"{").startswith("HTTP/1.1 413")
    chunked = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" + cookie
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b" " * 256 * 1024)
    assert _raw_post(base, chunked, chunk * 8).startswith("HTTP/1.1 413")
    # The control: the same request of an ordinary size reaches the page's check.
    small = b'{"facade": {}}'
    head = f"Content-Type: application/json\r\nContent-Length: {len(small)}\r\n" + cookie
    assert _raw_post(base, head, small) == "HTTP/1.1 422 Unprocessable Entity"


def test_two_pages_open_in_one_browser_each_keep_their_own_key(browser, site, clip, tmp_path):
    """Two cameras calibrated at once (two terminals, --listen on two ports): a browser keeps cookies per host,
    not per port, so the second link opened must not take the first page's key away."""
    other = tmp_path / "west" / "site.yaml"
    other.parent.mkdir()
    other.write_text(site.read_text(), encoding="utf-8")
    with serving(site, clip) as first, serving(other, clip) as second:
        context = browser.new_context()
        try:
            tab1, tab2 = context.new_page(), context.new_page()
            for tab, url in ((tab1, first), (tab2, second)):
                tab.goto(url)
                tab.wait_for_selector("body[data-ready='1']")
            for tab in (tab2, tab1):  # the first page, back to it after opening the second
                assert tab.evaluate("fetch('/api/state').then(r => r.status)") == 200
        finally:
            context.close()


@pytest.mark.parametrize("bay_typed", [True, False])
def test_a_replayed_minute_draws_each_throw_with_the_floor_it_came_from(browser, sim_clip, tmp_path, bay_typed):
    """With the bay width typed, and left blank (the proposal's along scale a guess, right here)."""
    folder = sim_clip("throw", 1)
    clip = folder / "scene.mp4"
    truth = json.loads((folder / "truth.json").read_text())
    exact = yaml.safe_load((folder / "config.yaml").read_text())["cameras"]["sim"]["facade"]["points"]
    image = take_still(str(clip)).image
    to_image = cv2.findHomography(
        np.array([p["facade"] for p in exact], float), np.array([p["image"] for p in exact], float), 0
    )[0]
    lowest = oracle_lowest_floor(
        KnownStill(image, to_image, 3.0), detect_grid(image)
    )  # what the installer answers
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(storage=tmp_path / "storage", clip=clip), encoding="utf-8")
    with serving(config, clip) as url, opened(browser, url, (1280, 900)) as pg:
        pg.fill("#lowest-floor", str(lowest))
        if bay_typed:
            pg.fill("#bay-width", str(WINDOW_PITCH_M))
        pg.click("#btn-propose")
        pg.wait_for_function(f"window.calib.proposal.floors[0].floor === {lowest}")
        pg.click("#btn-accept")
        pg.wait_for_function("window.calib.overlay !== null")
        pg.click("#btn-replay")
        pg.wait_for_selector("body[data-replayed='1']")
        drawn = pg.evaluate("window.calib.tracks")
        note = pg.inner_text("#replay-note")
    falls = sorted(t["floor"] for t in drawn if t["fall"])
    assert falls == sorted(t["origin"]["floor"] for t in truth["throws"])
    assert "200 frames" in note


@pytest.fixture(scope="module")
def live_camera(sim_clip, tmp_path_factory):
    """An RTSP camera (GStreamer's server on a free port) showing a throw every 8 s for 32 s, and its truth."""
    folder = sim_clip("throw", 1)
    clip = loop_clip(folder / "scene.mp4", 4, tmp_path_factory.mktemp("live") / "loop.mp4")
    srv = RtspServer(clip).start()
    yield srv.url, folder
    srv.kill()


def _accept_with_the_right_lowest_floor(pg, image, folder) -> None:
    exact = yaml.safe_load((folder / "config.yaml").read_text())["cameras"]["sim"]["facade"]["points"]
    to_image = cv2.findHomography(
        np.array([p["facade"] for p in exact], float), np.array([p["image"] for p in exact], float), 0
    )[0]
    lowest = oracle_lowest_floor(KnownStill(image, to_image, 3.0), detect_grid(image))  # the installer's answer
    pg.fill("#lowest-floor", str(lowest))
    pg.fill("#bay-width", str(WINDOW_PITCH_M))  # the installer knows it: without, the along scale is a guess
    pg.click("#btn-propose")
    pg.wait_for_function(f"window.calib.proposal.floors[0].floor === {lowest}")
    pg.click("#btn-accept")
    pg.wait_for_function("window.calib.overlay !== null")


def test_a_live_cameras_replay_draws_the_throws_of_the_seconds_before_the_click(browser, live_camera, tmp_path):
    url, folder = live_camera
    truth = json.loads((folder / "truth.json").read_text())
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(storage=tmp_path / "storage", clip=url), encoding="utf-8")
    with serving(config, None) as link, opened(browser, link, (1280, 900)) as pg:
        _accept_with_the_right_lowest_floor(pg, take_still(url).image, folder)
        # A throw every 8 s: once 10 s are kept, one has happened before the click.
        kept = "Number(document.querySelector('#buffer-note').dataset.seconds) >= 10"
        pg.wait_for_function(kept, timeout=60_000)
        pg.click("#btn-replay")
        pg.wait_for_selector("body[data-replayed='1']", timeout=120_000)
        drawn = pg.evaluate("window.calib.tracks")
        note = pg.inner_text("#replay-note")
    falls = {t["floor"] for t in drawn if t["fall"]}
    assert falls and falls <= {t["origin"]["floor"] for t in truth["throws"]}
    assert "before the click" in note


def test_a_file_has_no_last_minute_and_replays_its_first(page):
    assert page.evaluate("fetch('/api/buffer').then((r) => r.json())")["live"] is False
    assert page.locator("#buffer-note").is_hidden()


def test_lines_too_dense_keeps_every_other_floor_line_and_too_sparse_brings_them_back(page):
    found = page.evaluate("window.calib.proposal.floors.length")
    page.click("#btn-sparser")
    page.wait_for_function("window.calib.proposal.period_factor === 2")
    halved = page.evaluate("window.calib.proposal.floors.map((f) => f.floor)")
    assert abs(len(halved) - found / 2) <= 1
    assert halved == list(range(1, len(halved) + 1))  # still numbered floor by floor: now one per two
    page.click("#btn-denser")
    page.wait_for_function("window.calib.proposal.period_factor === 1")
    assert page.evaluate("window.calib.proposal.floors.length") == found


def test_a_calibrated_camera_opens_with_the_calibration_in_its_config(browser, site, clip):
    from edge.calibrate.yamlio import save

    still = take_still(str(clip)).image
    block = detect_grid(still).calibration(3.0, 2).facade_block()
    save(site, "east", block, None)
    with serving(site, clip) as url, opened(browser, url) as pg:
        pg.wait_for_function("window.calib.errors !== null")
        assert "calibration in the config" in pg.inner_text("#status")
        assert pg.evaluate("window.calib.facade.points") == block["points"]
        assert pg.evaluate("window.calib.overlay.floors.some((f) => f.floor === 2)")


def test_a_still_without_a_facade_says_so_on_the_page(browser, tmp_path, clip):
    from test_calibrate import non_facade

    park = tmp_path / "park.png"
    cv2.imwrite(str(park), non_facade(0))
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(storage=tmp_path / "storage", clip=clip), encoding="utf-8")
    with serving(config, park) as url, opened(browser, url) as pg:
        assert "not a facade" in pg.inner_text("#proposal-note")
        assert pg.is_disabled("#btn-accept")


def _tap(pg, x: float, y: float) -> None:
    pg.locator("#view").scroll_into_view_if_needed()
    box = pg.locator("#view").bounding_box()
    k = box["width"] / pg.evaluate("window.calib.size[0]")
    pg.mouse.click(box["x"] + x * k, box["y"] + y * k)


def test_without_storeys_found_two_marked_floor_lines_give_the_proposal(browser, tmp_path, clip):
    from edge.calibrate.bench import floor_line_marks, make_still

    still, _ = make_still(5116)  # a far block of faint small windows: no storeys found, its plane is
    far = tmp_path / "far.png"
    cv2.imwrite(str(far), still.image)
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(storage=tmp_path / "storage", clip=clip), encoding="utf-8")
    marks = floor_line_marks(still)
    with serving(config, far) as url, opened(browser, url, (1280, 900)) as pg:
        assert "No storeys found" in pg.inner_text("#proposal-note") and pg.is_disabled("#btn-accept")
        pg.click("button[data-mode='mark']")
        for (x, y), floor in marks:
            _tap(pg, x, y)
            pg.fill("#mark-floor", str(floor))
            pg.click("#btn-mark-ok")
        pg.wait_for_function("window.calib.proposal.ok === true")
        assert pg.input_value("#lowest-floor") == str(pg.evaluate("window.calib.proposal.floors[0].floor"))
        pg.click("#btn-accept")
        pg.wait_for_function("window.calib.overlay !== null")
        facade = pg.evaluate("window.calib.facade")
    img = np.array([p["image"] for p in facade["points"]], float)
    h = cv2.findHomography(img, np.array([p["facade"] for p in facade["points"]], float))[0]
    pts = np.array([[x, y] for _, x, y in still.windows], float).reshape(-1, 1, 2)
    floors = facade["ground_floor"] + np.floor(cv2.perspectiveTransform(pts, h)[:, 0, 1] / 3.0).astype(int)
    assert (floors == np.array([f for f, _, _ in still.windows])).mean() == 1.0


def _overlay(pg) -> str:
    return pg.evaluate("JSON.stringify(window.calib.overlay)")


def _drag_and_see_the_check_update(pg) -> None:
    before = _overlay(pg)
    _drag(pg, 1, 12, 8)
    pg.wait_for_function(f"JSON.stringify(window.calib.overlay) !== {json.dumps(before)}", timeout=5000)


def test_after_a_replay_drawing_tracks_a_dragged_point_still_updates_the_check(browser, sim_clip, tmp_path):
    clip = sim_clip("throw", 1, duration_s=4.0) / "scene.mp4"  # short: the replay needs only some track
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(storage=tmp_path / "storage", clip=clip), encoding="utf-8")
    with serving(config, clip) as url, opened(browser, url, (1280, 900)) as pg:
        pg.click("#btn-accept")
        pg.wait_for_function("window.calib.overlay !== null")
        _drag_and_see_the_check_update(pg)  # the control: no tracks yet
        pg.click("#btn-replay")
        pg.wait_for_selector("body[data-replayed='1']")
        assert pg.evaluate("window.calib.tracks.length") > 0
        _drag_and_see_the_check_update(pg)  # with tracks drawn: the tables must not stop the check


# -- the page's server in-process (FastAPI's test client): what it keeps between requests --------------------


@contextlib.contextmanager
def in_process(config: Path, still: Path):
    """The calibration app on `config`'s camera east with a still from `still`, with the key's cookie set."""
    with warnings.catch_warnings():  # starlette's notice that its client will move to httpx2
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    from edge.calibrate.web import Session, create_app
    from edge.calibrate.yamlio import check_text

    cfg, _ = check_text(config.read_text(), str(config))
    s = Session(config, "east", cfg.cameras["east"], take_still(str(still)), source=str(still))
    with TestClient(create_app(s)) as client:
        client.cookies.set(cookie_name(s.key), s.key)
        yield s, client


SHIELD = [[0.1, 0.8], [0.3, 0.8], [0.3, 0.95]]


def test_after_a_save_the_page_and_replays_see_the_saved_calibration_and_masks(site, clip):
    with in_process(site, clip) as (s, c):
        first = c.get("/api/state").json()
        assert (first["current"], first["masks"]) == (None, {"shield": [], "privacy": []})  # nothing saved yet
        facade = first["proposal"]["facade"]
        saved = c.post("/api/save", json={"facade": facade, "masks": {"shield": [SHIELD], "privacy": []}})
        assert saved.status_code == 200, saved.text
        after = c.get("/api/state").json()  # what a reloaded page starts from
        assert after["current"]["points"] == facade["points"]
        assert after["masks"] == {"shield": [SHIELD], "privacy": []}
        assert s.cam.facade is not None and len(s.cam.masks.shield) == 1  # what a replay now runs with
        # A second save from the reloaded page keeps the masks the first one wrote.
        again = c.post("/api/save", json={"facade": after["current"], "masks": after["masks"]})
        assert again.status_code == 200, again.text
    assert yaml.safe_load(site.read_text())["cameras"]["east"]["masks"]["shield"] == [SHIELD]


def test_the_check_says_where_the_calibration_puts_the_camera_so_an_installer_can_compare(site, clip):
    from edge.sim.scenes import build_scene

    with in_process(site, clip) as (_, c):
        proposed = c.get("/api/state").json()["proposal"]["facade"]
        checked = c.post("/api/check", json={"facade": proposed, "masks": {"shield": [], "privacy": []}}).json()
        stands_m = build_scene("throw", 5, randomised=True).distance_m  # where the clip's camera was put
        assert checked["camera"]["distance_m"] == pytest.approx(stands_m, rel=0.05)
        # Control: a facade seen straight on (an affine map) places no camera, and the page says so.
        flat = {
            **proposed,
            "points": [
                {"image": [100 + 50 * x, 1000 - 35 * y], "facade": [x, y]}
                for x, y in ((0, 0), (30, 0), (30, 24), (0, 24))
            ],
        }
        checked = c.post("/api/check", json={"facade": flat, "masks": {"shield": [], "privacy": []}}).json()
        assert checked["ok"] and checked["camera"] is None


def test_the_lowest_floor_line_can_be_floor_zero(page):
    page.fill("#lowest-floor", "2")  # the control: any other floor is taken as typed
    page.click("#btn-propose")
    page.wait_for_function("window.calib.proposal.floors[0].floor === 2")
    page.fill("#lowest-floor", "0")  # a ground floor numbered 0, as in much of Europe
    page.click("#btn-propose")
    page.wait_for_function("window.calib.proposal.floors[0].floor === 0", timeout=5000)


def _refuse(exc: OSError):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_a_config_that_cannot_be_written_is_reported_with_its_path_and_why(site, clip, monkeypatch):
    from edge.calibrate import yamlio

    before = site.read_text()
    bak = site.with_name(site.name + ".bak")
    with in_process(site, clip) as (_, c):
        body = {"facade": c.get("/api/state").json()["proposal"]["facade"]}
        monkeypatch.setattr(yamlio, "write_like", _refuse(PermissionError(13, "Permission denied", str(bak))))
        r = c.post("/api/save", json=body)
        assert r.json()["ok"] is False and r.status_code == 500
        assert r.json()["message"] == f"cannot write {bak}: Permission denied"
        assert site.read_text() == before
        monkeypatch.undo()  # the control: the same save once the file can be written
        assert c.post("/api/save", json=body).json()["ok"] is True
    assert site.read_text() != before


def test_a_saved_calibration_says_a_running_node_takes_it_on_reload(site, clip):
    with in_process(site, clip) as (_, c):
        body = {"facade": c.get("/api/state").json()["proposal"]["facade"]}
        r = c.post("/api/save", json=body).json()
    assert r["ok"] is True and "reference still site.east.reference.jpg" in r["message"]
    assert "systemctl reload edge" in r["message"]  # otherwise the node goes on with the old calibration


def test_a_reference_still_that_cannot_be_stored_says_the_config_was_saved(site, clip, monkeypatch):
    from edge.calibrate import web

    jpg = site.with_name("site.east.reference.jpg")
    monkeypatch.setattr(web, "store_reference", _refuse(OSError(28, "No space left on device", str(jpg))))
    with in_process(site, clip) as (s, c):
        body = {"facade": c.get("/api/state").json()["proposal"]["facade"]}
        r = c.post("/api/save", json=body).json()
        assert r["ok"] is True and r["saved"] == str(site)
        assert r["message"].startswith(f"已保存 Saved {site}")
        assert r["reference_error"] == f"cannot write {jpg}: No space left on device"
        assert "reference still NOT stored" in r["message"]
        assert s.cam.facade is not None  # the config was saved: the session follows it
    assert yaml.safe_load(site.read_text())["cameras"]["east"]["facade"]["points"] == body["facade"]["points"]


def test_masks_are_saved_as_validated_numbers_not_as_the_request_wrote_them(site, clip):
    typed = [["0.1", "0.8"], ["0.3", 0.8], [0.3, "0.95"]]  # numbers a client sent as text: accepted, coerced
    with in_process(site, clip) as (_, c):
        facade = c.get("/api/state").json()["proposal"]["facade"]
        r = c.post("/api/save", json={"facade": facade, "masks": {"shield": [typed], "privacy": [SHIELD]}})
        assert r.json()["ok"] is True, r.text
    masks = yaml.safe_load(site.read_text())["cameras"]["east"]["masks"]
    assert masks["privacy"] == [SHIELD]  # the control: numbers sent as numbers
    assert masks["shield"] == [SHIELD] and all(type(v) is float for p in masks["shield"][0] for v in p)


def test_two_saves_at_once_take_turns(site, clip, monkeypatch):
    import threading
    import time

    from edge.calibrate import yamlio

    real, inside, most, count = yamlio.save, [0], [0], threading.Lock()

    def slow_save(*args, **kwargs):
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)  # long enough for the other request to arrive while this one writes
        try:
            return real(*args, **kwargs)
        finally:
            with count:
                inside[0] -= 1

    monkeypatch.setattr(yamlio, "save", slow_save)
    with in_process(site, clip) as (_, c):
        body = {"facade": c.get("/api/state").json()["proposal"]["facade"]}
        answers: list[int] = []

        def post() -> None:
            answers.append(c.post("/api/save", json=body).status_code)

        both = [threading.Thread(target=post) for _ in range(2)]
        for t in both:
            t.start()
        for t in both:
            t.join()
    assert answers == [200, 200]  # the control: both saved
    assert most[0] == 1  # one at a time
