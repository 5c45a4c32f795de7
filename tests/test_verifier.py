"""The learned verifier: what it sees, how its score moves a level, the shipped model, and bad model files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.config import SHIPPED_VERIFIER, VerifierConfig, load_config
from edge.detect.pipeline import Detector
from edge.detect.sample import SAMPLE_FRAMES, SAMPLE_PX, TrackCrops, crop_at
from edge.detect.types import AlertLevel
from edge.detect.verify import second_look
from edge.geometry import CameraGeometry
from edge.train.dataset import Label, simulated_clip
from edge.verifier import ModelError, OnnxVerifier, check_model
from edge.video import luma_frames

from conftest import run_edge

CFG = VerifierConfig(veto_below=0.1, confirm_above=0.9)


# -- the rule -------------------------------------------------------------------------------------------


def test_a_suspected_fall_the_model_does_not_believe_is_not_reported():
    assert second_look(AlertLevel.SUSPECTED, 0.05, CFG) is None
    assert second_look(AlertLevel.SUSPECTED, 0.5, CFG) == AlertLevel.SUSPECTED


def test_a_confirmed_fall_the_model_does_not_believe_is_only_suspected():
    assert second_look(AlertLevel.CONFIRMED, 0.05, CFG) == AlertLevel.SUSPECTED
    assert second_look(AlertLevel.CONFIRMED, 0.5, CFG) == AlertLevel.CONFIRMED


def test_a_suspected_fall_the_model_is_sure_of_is_confirmed():
    assert second_look(AlertLevel.SUSPECTED, 0.95, CFG) == AlertLevel.CONFIRMED
    assert second_look(AlertLevel.SUSPECTED, 0.85, CFG) == AlertLevel.SUSPECTED


def test_the_model_never_raises_a_track_physics_does_not_report():
    assert second_look(None, 1.0, CFG) is None


# -- what it sees ---------------------------------------------------------------------------------------


def _scene(value: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey 200x300 frame with a 4x4 object of `value` at (150, 100), its background and thresholds."""
    bg = np.full((200, 300), 100.0, np.float32)
    img = bg.astype(np.uint8).copy()
    img[98:102, 148:152] = value
    return img, bg, np.full((200, 300), 10, np.uint8)


def test_a_sample_shows_a_bright_object_as_positive_contrast_at_its_centre_and_nothing_around_it():
    img, bg, thr = _scene(160)
    crops = TrackCrops()
    crops.add(1, img, 150.0, 100.0)
    sample = crops.sample(1, bg, thr)
    assert sample.shape == (SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX)
    c = SAMPLE_PX // 2
    assert sample[-1, c, c] == pytest.approx(np.log1p(6.0) / np.log1p(16.0), rel=1e-4)
    assert sample[-1, 0, 0] == 0.0


def test_a_dark_object_shows_as_negative_contrast():
    img, bg, thr = _scene(40)
    crops = TrackCrops()
    crops.add(1, img, 150.0, 100.0)
    assert crops.sample(1, bg, thr)[-1, SAMPLE_PX // 2, SAMPLE_PX // 2] < -0.5


def test_frames_before_a_track_s_first_crop_are_empty_and_the_newest_is_last():
    img, bg, thr = _scene(160)
    crops = TrackCrops()
    crops.add(7, img, 150.0, 100.0)
    crops.add(7, np.full_like(img, 100), 150.0, 100.0)  # the object gone in the newer frame
    sample = crops.sample(7, bg, thr)
    c = SAMPLE_PX // 2
    assert not sample[: SAMPLE_FRAMES - 2].any()
    assert sample[-2, c, c] > 0.5 and sample[-1, c, c] == 0.0


def test_a_crop_at_the_frame_edge_moves_inside_the_frame():
    img = np.arange(200 * 300, dtype=np.uint32).reshape(200, 300).astype(np.uint8)
    crop = crop_at(img, 2.0, 199.0)
    assert (crop.x0, crop.y0) == (0, 200 - SAMPLE_PX)
    assert np.array_equal(crop.pixels, img[200 - SAMPLE_PX :, :SAMPLE_PX])


def test_an_ended_track_s_crops_are_forgotten():
    img, bg, thr = _scene(160)
    crops = TrackCrops()
    crops.add(3, img, 150.0, 100.0)
    crops.drop(3)
    assert len(crops) == 0 and not crops.sample(3, bg, thr).any()


# -- in the detector ------------------------------------------------------------------------------------


class _Constant:
    def __init__(self, p: float):
        self.p, self.calls = p, 0

    def score(self, sample: np.ndarray) -> float:
        assert sample.shape == (SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX)
        self.calls += 1
        return self.p


def _events(folder: Path, verifier, brighten: set[int] = frozenset()) -> dict[str, object]:
    """The final state of each event of a simulated clip replayed through a Detector with `verifier`.

    Frames in `brighten` are made 80 luma levels brighter (an exposure step)."""
    _, cam = load_config(folder / "config.yaml").camera(None)
    detector, events = None, {}
    for i, luma in enumerate(luma_frames(folder / "scene.mp4")):
        if i in brighten:
            luma = np.clip(luma.astype(np.int16) + 80, 0, 255).astype(np.uint8)
        if detector is None:
            geometry = CameraGeometry.build(cam, (luma.shape[1], luma.shape[0]))
            detector = Detector("sim", cam, 25.0, geometry, verifier)
        for update in detector.process(i, luma):
            events[update.event.id] = update.event
    for update in detector.finish():
        events[update.event.id] = update.event
    return events


def test_the_verifier_s_score_moves_the_level_of_a_real_fall(sim_clip):
    folder = sim_clip("throw", 1)
    physics = _events(folder, None)
    assert physics and all(e.verifier_score is None for e in physics.values())
    believed = _events(folder, _Constant(1.0))
    assert believed and all(e.level == AlertLevel.CONFIRMED for e in believed.values())
    assert all(e.verifier_score == 1.0 for e in believed.values())
    doubted = _events(folder, _Constant(0.0))
    assert len(doubted) == len(physics)  # physics confirmed them all: lowered, not dropped
    assert all(e.level == AlertLevel.SUSPECTED for e in doubted.values())


def test_an_exposure_step_as_a_reported_track_ends_leaves_physics_level_standing(sim_clip):
    folder = sim_clip("throw", 1)
    first = min(_events(folder, None).values(), key=lambda e: e.end_frame)
    # The frame after the event's last detection jumps in brightness: the background is re-learned then,
    # and the track ends on it with no background to show its contrast against.
    step = {first.end_frame + 1}
    events = _events(folder, _Constant(1.0), brighten=step)
    assert events, "the events of the clip are still reported"
    assert any(e.level == AlertLevel.CONFIRMED for e in events.values())


# -- the shipped model ----------------------------------------------------------------------------------

needs_model = pytest.mark.skipif(not SHIPPED_VERIFIER.exists(), reason=f"no shipped model at {SHIPPED_VERIFIER}")


@needs_model
def test_the_shipped_model_matches_its_published_sha256():
    published = (SHIPPED_VERIFIER.parent / "model.onnx.sha256").read_text().split()[0]
    assert hashlib.sha256(SHIPPED_VERIFIER.read_bytes()).hexdigest() == published


@needs_model
def test_the_shipped_model_scores_candidates_cut_from_a_replay_deterministically(sim_clip):
    found = simulated_clip(sim_clip("throw", 1))
    assert (found.labels == Label.FALL).any()
    model = OnnxVerifier(SHIPPED_VERIFIER)
    first = [model.score(s.astype(np.float32)) for s in found.samples]
    again = [model.score(s.astype(np.float32)) for s in found.samples]
    assert first == again
    assert all(0.0 <= p <= 1.0 for p in first)
    falls = [p for p, label in zip(first, found.labels, strict=True) if label == Label.FALL]
    assert np.median(falls) >= 0.5  # a plain day throw, the kind it was trained on most, is believed


@needs_model
def test_a_replayed_event_carries_the_verifier_s_score(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["storage"] = {"dir": str(tmp_path / "storage")}
    cfg["cameras"]["sim"]["fall"] = {"verifier": {"model": str(SHIPPED_VERIFIER)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    r = run_edge(
        "replay", str(folder / "scene.mp4"), "--config", str(tmp_path / "c.yaml"), "--out", str(out), "--no-media"
    )
    assert r.returncode == 0, r.stderr
    rows = [yaml.safe_load(line) for line in (out / "events.jsonl").read_text().splitlines()]
    scores = [row.get("verifier_score") for row in rows if "level" in row]
    assert scores and all(s is not None and 0.0 <= s <= 1.0 for s in scores)


# -- bad model files ------------------------------------------------------------------------------------


def _config_with_model(tmp_path: Path, model: Path) -> Path:
    cfg = {
        "version": 1,
        "node": {"id": "n1", "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "storage")},
        "cameras": {"cam1": {"source": "rtsp://127.0.0.1:1/x", "fall": {"verifier": {"model": str(model)}}}},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _junk(path: Path) -> Path:
    path.write_bytes(b"\x00not a model" * 50)
    return path


def _wrong_shape_model(path: Path) -> Path:
    onnx = pytest.importorskip("onnx", reason="building a model file needs the onnx package (test extra)")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, 64, 64])
    y = helper.make_tensor_value_info("fall", TensorProto.FLOAT, ["batch", 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["crops"], ["fall"])], "wrong", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda d: d / "absent.onnx", "cannot read it"),
        (
            lambda d: (d / "junk.onnx").write_bytes(b"\x00not a model" * 50) and d / "junk.onnx",
            "not a model ONNX Runtime can load",
        ),
        (lambda d: _wrong_shape_model(d / "wrong.onnx"), "expects"),
    ],
    ids=["missing", "corrupt", "wrong-shape"],
)
def test_a_bad_model_file_is_a_config_error_with_its_path_and_reason(tmp_path, make, why):
    model = make(tmp_path)
    r = run_edge("check-config", str(_config_with_model(tmp_path, model)))
    assert r.returncode == 78, r.stdout + r.stderr
    assert str(model) in r.stderr and why in r.stderr
    assert "fall.verifier.model" in r.stderr


@needs_model
def test_the_shipped_model_passes_the_same_check(tmp_path):
    check_model(SHIPPED_VERIFIER)
    r = run_edge("check-config", str(_config_with_model(tmp_path, SHIPPED_VERIFIER)))
    assert r.returncode == 0, r.stderr


def test_thresholds_that_would_veto_what_they_confirm_are_a_config_error(tmp_path):
    path = _config_with_model(tmp_path, Path("unused.onnx"))
    cfg = yaml.safe_load(path.read_text())
    cfg["cameras"]["cam1"]["fall"]["verifier"] = {"model": None, "veto_below": 0.95, "confirm_above": 0.9}
    path.write_text(yaml.safe_dump(cfg))
    r = run_edge("check-config", str(path))
    assert r.returncode == 78 and "must be below confirm_above" in r.stderr
    cfg["cameras"]["cam1"]["fall"]["verifier"]["veto_below"] = 0.05
    path.write_text(yaml.safe_dump(cfg))
    assert run_edge("check-config", str(path)).returncode == 0


def test_a_model_that_is_not_a_probability_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx", reason="building a model file needs the onnx package (test extra)")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX])
    y = helper.make_tensor_value_info("fall", TensorProto.FLOAT, ["batch", 1])
    minus = helper.make_tensor("minus", TensorProto.FLOAT, [1], [-3.0])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    nodes = [
        helper.make_node("ReduceSum", ["crops"], ["s"], keepdims=0, axes=[1, 2, 3]),
        helper.make_node("Add", ["s", "minus"], ["t"]),
        helper.make_node("Reshape", ["t", "shape"], ["fall"]),
    ]
    graph = helper.make_graph(nodes, "logit", [x], [y], initializer=[minus, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "logit.onnx"))
    with pytest.raises(ModelError, match="not a probability"):
        check_model(tmp_path / "logit.onnx")


# -- training and the ablation --------------------------------------------------------------------------


def test_training_runs_a_few_steps_and_exports_a_model_the_node_accepts(tmp_path):
    pytest.importorskip("torch", reason="training needs the optional 'train' extra (PyTorch)")
    from edge.train.dataset import Candidates
    from edge.train.verifier import export, train

    rng = np.random.default_rng(0)
    n = 64
    labels = (np.arange(n) % 2).astype(np.int8)
    samples = rng.normal(0, 0.1, (n, SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX)).astype(np.float16)
    samples[labels == 1, :, 20:28, 20:28] += 0.8  # the "falls" carry a bright centre
    data = Candidates(samples, labels, np.arange(n, dtype=np.int32), np.ones(n, bool), "tiny")
    model, history = train(data, epochs=2, threads=1)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    export(model, tmp_path / "model.onnx")
    check_model(tmp_path / "model.onnx")


@needs_model
def test_the_ablation_runs_physics_alone_beside_physics_with_the_model(tmp_path):
    from edge.bench import RENDER_VERSION
    from edge.sim.scenes import build_scene
    from edge.sim.simulate import simulate

    cache = tmp_path / "cache"
    scene = build_scene("throw", 101, randomised=True, width=640, height=360, duration_s=6.0)
    simulate(scene, cache / f"throw-101-r{RENDER_VERSION}")
    r = run_edge(
        "bench", "accuracy", "--cache", str(cache), "--suite", "tuning", "--scenes", "throw-101", "--no-real",
        "--no-plot",
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stderr  # 1: a target missed on one tiny clip, which is not the point here
    section = r.stdout.split("## Ablation: the learned verifier", 1)[1]
    assert "| physics alone | physics + verifier |" in section
    assert "| tuning | recall |" in section
