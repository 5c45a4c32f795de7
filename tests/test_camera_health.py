"""Camera problems as events: each one raised by footage made to show it, cleared when the picture is normal
again, and never raised by a normal picture (the positive and negative controls side by side)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import yaml

from edge.config import parse_config
from edge.events import problem_rows, read_rows
from edge.replay import replay
from edge.sim.render import Renderer
from edge.sim.scenes import build_scene
from edge.video import H264Writer

from conftest import REPO

FPS = 10.0
W, H = 640, 360
# Short persistence so a test clip is short; the defaults are minutes (config.py says why).
FAST = {
    "sample_s": 0.5,
    "covered_s": 4,
    "blinded_s": 4,
    "defocused_s": 4,
    "moved_s": 4,
    "learn_s": 4,
    "clear_s": 3,
    "moved_lost_s": 8,
}
Fault = Callable[[float, np.ndarray], np.ndarray]


def _schema() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "docs" / "schemas" / "camera-problem.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def render(
    path: Path,
    fault: Fault | None,
    duration_s: float = 30.0,
    scene: str = "calm",
    seed: int = 3,
    randomised: bool = False,
) -> Path:
    """A simulated facade clip with `fault(t, bgr)` applied to every frame (None: the clip as rendered)."""
    built = build_scene(scene, seed, randomised, width=W, height=H, duration_s=duration_s, fps=FPS)
    r = Renderer(built)
    with H264Writer(path, W, H, FPS, threads=1) as writer:
        for i in range(round(duration_s * FPS)):
            frame, _ = r.render(i)
            writer.write(fault(i / FPS, frame) if fault else frame)
    return path


def between(t0: float, t1: float, change: Callable[[np.ndarray], np.ndarray]) -> Fault:
    """A fault from t0 to t1 seconds; the picture is normal before and after."""
    return lambda t, bgr: change(bgr) if t0 <= t < t1 else bgr


def black(bgr: np.ndarray) -> np.ndarray:
    return np.zeros_like(bgr)


def white(bgr: np.ndarray) -> np.ndarray:
    return np.full_like(bgr, 255)


def blurred(bgr: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(bgr, (0, 0), 4.0)


def shifted(bgr: np.ndarray, dx: float = 0.06 * W, angle: float = 2.0) -> np.ndarray:
    m = cv2.getRotationMatrix2D((W / 2, H / 2), angle, 1.0)
    m[0, 2] += dx
    return cv2.warpAffine(bgr, m, (W, H), borderMode=cv2.BORDER_REFLECT)


_WALL = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 2.5)


def wall(bgr: np.ndarray) -> np.ndarray:
    """A steady textured view that is no facade: the camera turned to a wall."""
    return cv2.normalize(_WALL, None, 40, 220, cv2.NORM_MINMAX)


def health_replay(clip: Path, out: Path, **health) -> list[dict]:
    """Replay `clip` with camera health on; the camera_problem rows of its events.jsonl."""
    cfg = parse_config(
        yaml.safe_dump(
            {
                "version": 1,
                "node": {"id": "n1"},
                "storage": {"dir": str(out / "store")},
                "mqtt": {"enabled": False},
                "cameras": {"cam": {"source": str(clip), "health": {**FAST, **health}}},
            }
        )
    )
    replay(clip, cfg, "cam", out, media=False)
    rows = problem_rows(read_rows(out / "events.jsonl"))
    for row in rows:
        _schema().validate(row)
    return rows


def _kinds(rows: list[dict], state: str) -> list[str]:
    return [r["problem"] for r in rows if r["state"] == state]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Rendered once: a normal clip, and one per fault (normal 0-10 s, the fault 10-22 s, normal after)."""
    root = tmp_path_factory.mktemp("health")
    faults = {
        "normal": None,
        "black": between(10, 22, black),
        "white": between(10, 22, white),
        "blurred": between(10, 22, blurred),
        "shifted": between(10, 22, shifted),
        "wall": between(10, 22, wall),
        "hand": between(10, 12, black),  # a hand or a bird in front of the lens for 2 s
    }
    return {name: render(root / f"{name}.mp4", fault) for name, fault in faults.items()}


# -- each problem, raised and cleared ----------------------------------------------------------------------


def test_a_normal_stream_raises_no_camera_problem(clips, tmp_path):
    assert health_replay(clips["normal"], tmp_path) == []


def test_a_black_stream_raises_covered_then_clears_when_the_picture_returns(clips, tmp_path):
    rows = health_replay(clips["black"], tmp_path)
    assert _kinds(rows, "raised") == ["covered"] and _kinds(rows, "cleared") == ["covered"]
    raised, cleared = rows
    assert raised["id"] == cleared["id"] and raised["active"] == ["covered"] and cleared["active"] == []
    assert 10 + FAST["covered_s"] <= raised["at_s"] < 22 and raised["since_s"] == pytest.approx(10, abs=1)
    assert 22 + FAST["clear_s"] <= cleared["at_s"] < 22 + FAST["clear_s"] + 2
    assert raised["score"] < raised["threshold"]


def test_a_hand_in_front_of_the_lens_for_two_seconds_raises_nothing(clips, tmp_path):
    assert health_replay(clips["hand"], tmp_path) == []
    # the same picture for longer than covered_s does raise it (the black clip above is 12 s of it)
    assert _kinds(health_replay(clips["hand"], tmp_path / "strict", covered_s=1.5), "raised") == ["covered"]


def test_a_saturated_stream_raises_blinded_not_covered(clips, tmp_path):
    rows = health_replay(clips["white"], tmp_path)
    assert _kinds(rows, "raised") == ["blinded"] and _kinds(rows, "cleared") == ["blinded"]
    assert rows[0]["score"] == pytest.approx(1.0)


def test_a_blurred_stream_raises_defocused_against_the_camera_s_own_normal(clips, tmp_path):
    rows = health_replay(clips["blurred"], tmp_path)
    assert _kinds(rows, "raised") == ["defocused"] and _kinds(rows, "cleared") == ["defocused"]
    assert rows[0]["score"] < FAST.get("defocused_ratio", 0.5)


def test_a_shifted_and_rotated_view_raises_moved_against_the_reference_learned_at_start(clips, tmp_path):
    rows = health_replay(clips["shifted"], tmp_path)
    assert _kinds(rows, "raised") == ["moved"] and _kinds(rows, "cleared") == ["moved"]
    raised = rows[0]
    assert raised["detail"]["reference"] == "learned"  # no reference still was given: it says so
    assert raised["detail"]["shift_px"] > 0.03 * W and abs(abs(raised["detail"]["rotation_deg"]) - 2.0) < 0.5


def test_a_camera_turned_to_a_wall_raises_moved_once_the_facade_is_lost_for_moved_lost_s(clips, tmp_path):
    rows = health_replay(clips["wall"], tmp_path)
    assert _kinds(rows, "raised") == ["moved"] and _kinds(rows, "cleared") == ["moved"]
    raised = rows[0]
    assert raised["detail"]["matched"] == "none" and raised["at_s"] - 10 >= FAST["moved_lost_s"]
    # control: the same wall for less than moved_lost_s is no event
    assert health_replay(clips["wall"], tmp_path / "patient", moved_lost_s=15) == []


def test_moved_is_judged_against_the_calibration_still_when_there_is_one(clips, tmp_path):
    """A camera already turned when the node starts: only the still from calibration can tell."""
    first = render(tmp_path / "turned.mp4", lambda t, bgr: shifted(bgr), duration_s=12)
    still = tmp_path / "site.cam.reference.jpg"
    frame, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    cv2.imwrite(str(still), frame)
    rows = health_replay(first, tmp_path / "with", reference=str(still))
    assert _kinds(rows, "raised") == ["moved"] and rows[0]["detail"]["reference"] == "calibration"
    # control: without the still, the turned view is all the node has ever seen, and is taken as normal
    assert health_replay(first, tmp_path / "without") == []


def test_the_unshifted_stream_matches_the_calibration_still(clips, tmp_path):
    still = tmp_path / "ref.jpg"
    frame, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    cv2.imwrite(str(still), cv2.resize(frame, (2 * W, 2 * H)))  # a still from the main stream, twice the size
    assert health_replay(clips["normal"], tmp_path, reference=str(still)) == []


# -- what real cameras do normally -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scene", "seed", "randomised"),
    [
        ("night", 5, False),
        ("night", 101, True),  # randomised: IR grain and an IR-cut switch (a brightness and noise step)
        ("exposure", 5, False),
        ("rain", 5, False),
        ("shake", 5, False),
        ("insects", 5, False),
        ("clouds", 5, False),
    ],
)
def test_normal_camera_behaviour_raises_nothing(scene, seed, randomised, tmp_path):
    """Night IR grain and switches, exposure steps, rain, shake, insects at the lens, cloud shadows: no problem."""
    clip = render(tmp_path / f"{scene}.mp4", None, duration_s=24, scene=scene, seed=seed, randomised=randomised)
    if randomised:
        assert build_scene(scene, seed, True, width=W, height=H, duration_s=24, fps=FPS).ir_switches == 1
    assert health_replay(clip, tmp_path) == []


# -- configuration -----------------------------------------------------------------------------------------


def _check_config(tmp_path, health: dict, where: str = "cameras") -> tuple[int, str]:
    from conftest import run_edge

    cam = {"source": "/dev/null"}
    body = {"version": 1, "node": {"id": "n1"}, "mqtt": {"enabled": False}, "cameras": {"cam": cam}}
    if where == "defaults":
        body["defaults"] = {"health": health}
    else:
        cam["health"] = health
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    proc = run_edge("check-config", str(path))
    return proc.returncode, proc.stdout + proc.stderr


def test_health_settings_are_checked_like_every_other_section(tmp_path):
    assert _check_config(tmp_path, {"covered_s": 20, "offline_alert_s": 60})[0] == 0  # control
    code, out = _check_config(tmp_path, {"covered_s": -1})
    assert code == 78 and "cameras.cam.health.covered_s" in out and "site.yaml:" in out
    code, out = _check_config(tmp_path, {"covered_for": 20})
    assert code == 78 and "unknown key 'covered_for'" in out
    code, out = _check_config(tmp_path, {"sample_s": 5, "moved_s": 10}, where="defaults")
    assert code == 78 and "sample_s (5.0) must be at most a third" in out and "site.yaml:" in out


def test_a_reference_still_of_another_shape_is_not_used_and_the_node_says_so(clips, tmp_path, caplog):
    still = tmp_path / "square.jpg"
    frame, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    cv2.imwrite(str(still), cv2.resize(frame, (480, 480)))  # 1:1, the stream is 16:9
    rows = health_replay(clips["shifted"], tmp_path, reference=str(still))
    assert _kinds(rows, "raised") == ["moved"] and rows[0]["detail"]["reference"] == "learned"
    assert "another shape" in caplog.text


def test_a_reference_still_that_is_no_image_is_reported_and_a_reference_learned(clips, tmp_path, caplog):
    still = tmp_path / "site.cam.reference.jpg"
    still.write_bytes(b"\xff\xd8 not a jpeg at all")
    rows = health_replay(clips["shifted"], tmp_path, reference=str(still))
    assert _kinds(rows, "raised") == ["moved"] and rows[0]["detail"]["reference"] == "learned"
    assert "cannot be read as an image" in caplog.text


# -- persistence and hysteresis, on pictures made to sit at the bar ------------------------------------------

_TEXTURE = cv2.GaussianBlur(np.random.default_rng(2).standard_normal((H, W)).astype(np.float32), (0, 0), 3.0)


def _picture(detail: float) -> np.ndarray:
    """A grey picture whose strongest edges (as the covered check measures them) are about `detail` levels."""
    from edge.detect.tamper import look, work_image

    unit = look(work_image(np.clip(128 + 40 * _TEXTURE, 0, 255).astype(np.uint8))).detail / 40
    return np.clip(128 + (detail / unit) * _TEXTURE, 0, 255).astype(np.uint8)


def _covered_states(details: list[float], **cfg) -> list[tuple[float, str]]:
    from edge.config import CameraHealthConfig
    from edge.detect.tamper import CameraHealth

    health = CameraHealth(CameraHealthConfig(**{**FAST, **cfg}))
    out = []
    for i, d in enumerate(details):
        out += [(tr.t, str(tr.state)) for tr in health.update(i * 0.5, _picture(d)) if tr.problem == "covered"]
    return out


def test_covered_is_raised_only_after_covered_s_without_a_normal_picture():
    flicker = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 30.0] * 6  # 3 s featureless, then a normal picture, over and over
    assert _covered_states(flicker) == []
    assert _covered_states([1.0] * 12) == [(4.0, "raised")]  # control: 4 s on end is covered_s


def test_a_picture_just_above_the_bar_does_not_clear_covered_but_a_normal_one_does():
    bar = FAST.get("covered_max_detail", 4.0)
    near = [1.0] * 10 + [bar * 1.2] * 20  # better than the bar, but not by the clearing margin (1.5x)
    assert _covered_states(near) == [(4.0, "raised")]
    normal = [1.0] * 10 + [30.0] * 20
    assert _covered_states(normal) == [(4.0, "raised"), (8.0, "cleared")]


def _offline_states(
    online: Callable[[float], bool], seconds: float, clock: Callable[[float], float] = float, **cfg
) -> list[tuple[float, str]]:
    """The offline check told the state once a second; `clock` turns real seconds into the node's clock."""
    from edge.config import CameraHealthConfig
    from edge.detect.tamper import OfflineWatch

    watch = OfflineWatch(CameraHealthConfig(**{"offline_alert_s": 20, "clear_s": 5, **cfg}))
    changes = (watch.update(clock(float(t)), online(float(t)), "refused") for t in range(int(seconds)))
    return [(c.t, str(c.state)) for c in changes if c is not None]


def test_a_camera_that_keeps_dropping_within_seconds_is_offline_and_clears_once_steady():
    flapping = lambda t: t >= 60 or t % 10 < 2  # noqa: E731 - online 2 s in every 10, then steadily from 60 s
    assert _offline_states(flapping, 90) == [(22.0, "raised"), (65.0, "cleared")]  # off since 2 s
    assert _offline_states(lambda t: True, 90) == []  # control: steadily online
    assert _offline_states(lambda t: t < 30 or t >= 45, 90) == []  # control: off for less than offline_alert_s


# -- real footage ------------------------------------------------------------------------------------------


def _real_tuning_clips() -> list[Path]:
    from edge.realbench import footage_dir, load_manifest

    try:
        folder = footage_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return [
        folder / e["file"] for e in load_manifest() if e["split"] == "tuning" and (folder / e["file"]).exists()
    ]


def test_real_camera_footage_raises_no_camera_problem_even_with_short_persistence(tmp_path):
    """Real clips (tuning split only): a bird, people, swaying trees, a hand near the lens, webcam exposure."""
    clips = _real_tuning_clips()
    assert len(clips) >= 6
    found = {c.name: health_replay(c, tmp_path / c.stem) for c in clips}
    assert found == {c.name: [] for c in clips}


def test_a_real_clip_covered_halfway_raises_covered(tmp_path):
    """The positive control of the test above, on the longest real clip: its second half black."""
    import av

    clip = next(c for c in _real_tuning_clips() if c.name == "neg_pedestrians_plaza_elevated.mp4")
    out = tmp_path / "covered.mp4"
    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        rate, w, h = float(stream.average_rate), stream.codec_context.width, stream.codec_context.height
        with H264Writer(out, w, h, rate, threads=1) as writer:
            for i, frame in enumerate(src.decode(stream)):
                bgr = frame.to_ndarray(format="bgr24")
                writer.write(black(bgr) if i >= 300 else bgr)
    rows = health_replay(out, tmp_path / "out")
    assert _kinds(rows, "raised") == ["covered"] and rows[0]["since_s"] == pytest.approx(30, abs=1)


def test_a_night_picture_is_in_place_against_a_still_taken_by_day(tmp_path):
    """At night no feature of a day still matches (IR, lit windows); the facade's edges still do."""
    still = tmp_path / "day.jpg"
    day, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    cv2.imwrite(str(still), day)
    night = render(tmp_path / "night.mp4", None, duration_s=24, scene="night", seed=3)
    assert health_replay(night, tmp_path / "in", reference=str(still)) == []
    # control: the same night turned (its edges elsewhere) is moved
    turned = render(tmp_path / "turned.mp4", lambda t, bgr: shifted(bgr), duration_s=24, scene="night", seed=3)
    assert _kinds(health_replay(turned, tmp_path / "out", reference=str(still)), "raised") == ["moved"]


def test_a_stream_that_changes_shape_is_not_compared_with_a_still_of_the_old_shape():
    from edge.config import CameraHealthConfig
    from edge.detect.tamper import CameraHealth

    wide, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    square, _ = Renderer(build_scene("calm", 3, width=480, height=480, duration_s=1, fps=FPS)).render(0)
    health = CameraHealth(CameraHealthConfig(**FAST), cv2.cvtColor(wide, cv2.COLOR_BGR2GRAY))
    changes = [health.update(i * 0.5, cv2.cvtColor(wide, cv2.COLOR_BGR2GRAY)) for i in range(20)]
    assert health.reference_source == "calibration"
    changes += [health.update(10 + i * 0.5, cv2.cvtColor(square, cv2.COLOR_BGR2GRAY)) for i in range(40)]
    assert [c for batch in changes for c in batch] == [] and health.reference_source == "learned"


# -- reloaded health settings --------------------------------------------------------------------------------


class _Problems:
    """A sink that keeps the camera problem records (the rest of a pipeline's output is not looked at here)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_update(self, kind, record):
        pass

    def on_evidence(self, record, files):
        pass

    def on_status(self, camera, status):
        pass

    def on_problem(self, record):
        self.rows.append(record)


def _camera(**over):
    from edge.config import parse_config as parse

    text = yaml.safe_dump({"version": 1, "node": {"id": "n1"}, "cameras": {"cam": {"source": "x.mp4", **over}}})
    return parse(text).cameras["cam"]


def _pipeline_covered(sink):
    from edge.pipeline import CameraPipeline

    p = CameraPipeline("n1", "cam", _camera(), sink, None)
    p.problems.ids, p.problems.count = {"covered": "cam-covered-1"}, 1  # covered was raised before the reload
    return p


def test_reloaded_health_settings_take_over_and_the_old_checks_clear_what_they_raised():
    sink = _Problems()
    p = _pipeline_covered(sink)
    p.reconfigure(_camera(health={"covered_s": 99}))
    assert p.problems.cfg.covered_s == 99 and p.problems.count == 1
    ((cleared,),) = [sink.rows]
    assert (cleared["id"], cleared["state"], cleared["active"]) == ("cam-covered-1", "cleared", [])
    assert "reloaded" in cleared["reason"]


def test_reloaded_settings_outside_health_leave_the_camera_checks_running():
    sink = _Problems()
    p = _pipeline_covered(sink)
    checks = p.problems
    p.reconfigure(_camera(fall={"min_fall_floors": 1.5}))
    assert p.problems is checks and sink.rows == []


def test_health_checks_switched_off_by_a_reload_stop():
    sink = _Problems()
    p = _pipeline_covered(sink)
    p.reconfigure(_camera(health={"enabled": False}))
    assert p.problems is None and [r["state"] for r in sink.rows] == ["cleared"]


def test_a_clock_stepped_at_boot_is_not_counted_as_time_offline():
    """A node without a real-time clock boots with the time it last saved, and NTP then steps it forward by
    the hours the power was off: the camera, booting beside it, was not offline for those hours."""
    step = 3 * 3600.0
    forward = lambda t: t >= 35  # noqa: E731 - the camera comes up 35 s after the node
    clock = lambda t: t + (step if t >= 20 else 0.0)  # noqa: E731 - NTP steps the clock 20 s after boot
    assert _offline_states(forward, 90, clock=clock) == []
    # control: a camera that stays away is raised offline_alert_s (20 s) after the step, the step not counted
    assert _offline_states(lambda t: False, 90, clock=clock) == [(step + 40.0, "raised")]
    # and a clock stepped back does not put off an offline camera's alarm by the hours it went back
    assert _offline_states(lambda t: False, 90, clock=lambda t: t - (step if t >= 20 else 0.0)) == [
        (40.0 - step, "raised")
    ]


@pytest.mark.parametrize("defocused_ratio", [0.95])  # the default 0.5 follows too (the night test's control)
def test_the_normal_sharpness_follows_a_somewhat_sharper_picture_whatever_the_defocus_bar(defocused_ratio):
    from edge.config import CameraHealthConfig
    from edge.detect.tamper import CameraHealth, look

    frame, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    day = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    crisper = cv2.addWeighted(day, 1.4, cv2.GaussianBlur(day, (0, 0), 1.0), -0.4, 0)  # a cleaned lens
    assert 1.0 < look(crisper).sharpness / look(day).sharpness < 4 / 3
    cfg = CameraHealthConfig(
        sample_s=20, covered_s=60, blinded_s=60, defocused_s=60, moved_s=60, learn_s=60
    ).model_copy(update={"defocused_ratio": defocused_ratio})
    health = CameraHealth(cfg)
    for t in range(0, 120, 20):
        health.update(float(t), day)
    learned = health.normal_sharpness
    for t in range(120, 120 + 3 * 3600, 20):  # half NORMAL_RISE_TAU_S: 39% of the way
        health.update(float(t), crisper)
    assert health.normal_sharpness > learned + 0.3 * (look(crisper).sharpness - learned)


def test_a_grainy_night_does_not_teach_the_normal_sharpness_that_the_morning_is_out_of_focus():
    """Grain adds fine detail: a dim night picture with a sensor's noise is sharper, by the measure, than the
    day's. Hours of it must not raise the learned normal so far that the next morning reads as defocused (and
    stays so: the normal learns nothing while defocused is raised)."""
    from edge.config import CameraHealthConfig
    from edge.detect.tamper import CameraHealth, look

    frame, _ = Renderer(build_scene("calm", 3, width=W, height=H, duration_s=1, fps=FPS)).render(0)
    day = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng(0)

    def night() -> np.ndarray:  # an eighth of the day's light, and the noise of the gain a camera adds for it
        return np.clip(day * 0.12 + rng.normal(0, 4, day.shape), 0, 255).astype(np.uint8)

    assert look(night()).sharpness > 2 * look(day).sharpness  # what grain does to the measure
    cfg = CameraHealthConfig(sample_s=20, covered_s=60, blinded_s=60, defocused_s=60, moved_s=60, learn_s=60)
    health = CameraHealth(cfg)
    seen: list[tuple[float, str, str]] = []
    clock = 0.0

    def show(picture, seconds: float) -> None:
        nonlocal clock
        for t in np.arange(clock, clock + seconds, cfg.sample_s):
            seen.extend((t, str(tr.problem), str(tr.state)) for tr in health.update(float(t), picture()))
        clock += seconds

    show(lambda: day, 600)
    show(night, 5 * 3600)
    show(lambda: day, 1800)
    assert seen == []  # the morning is as sharp as the day before
    show(lambda: cv2.GaussianBlur(day, (0, 0), 4.0), 300)  # control: the lens blurred is still noticed
    assert [(p, s) for _, p, s in seen] == [("defocused", "raised")]
