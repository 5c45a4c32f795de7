"""A bench's `--set` changes a camera setting as the config file would, or refuses clearly before any clip runs."""

from __future__ import annotations

import pytest
import yaml

from edge.config import SHIPPED_VERIFIER, CameraConfig, FacadeConfig, load_config
from edge.overrides import OverrideError, apply_overrides, check_overrides, with_overrides
from edge.realbench import scale_override_notes

from conftest import run_edge

CAMERA = CameraConfig(source="rtsp://cam")


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True), ("no", False)])
def test_a_switch_is_read_as_the_config_file_reads_it(text, value):
    assert with_overrides(CAMERA, [f"motion.stabilize={text}"]).motion.stabilize is value


def _facade() -> FacadeConfig:
    corners = [([100, 900], [0, 3]), ([900, 900], [30, 3]), ([900, 100], [30, 60]), ([100, 100], [0, 60])]
    points = [{"image": image, "facade": facade} for image, facade in corners]
    return FacadeConfig.model_validate({"floor_height_m": 3.0, "ground_floor": 1, "points": points})


def _rich_camera() -> CameraConfig:
    """A camera whose settings are far from the defaults: a copy that loses any of them shows it."""
    return CameraConfig.model_validate(
        {
            "source": "rtsp://cam",
            "fps": 20,
            "facade": _facade().model_dump(),
            "masks": {"shield": [[[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]]]},
            "motion": {"noise_k": 5.0, "stabilize": False},
            "fall": {"min_fall_floors": 3, "verifier": {"model": str(SHIPPED_VERIFIER), "veto_below": 0.3}},
            "health": {"covered_s": 90},
        }
    )


def test_a_number_is_set_and_nothing_else_changes():
    cam = _rich_camera()
    assert with_overrides(cam, []) == cam
    changed = with_overrides(cam, ["fall.min_fall_floors=2.5"])
    assert changed.fall.min_fall_floors == 2.5
    before, after = cam.model_dump(), changed.model_dump()
    before["fall"].pop("min_fall_floors"), after["fall"].pop("min_fall_floors")
    assert before == after


def test_null_and_lists_are_read_as_the_config_file_reads_them():
    cam = _rich_camera()
    assert with_overrides(cam, ["fall.verifier.model=null"]).fall.verifier.model is None
    shield = with_overrides(cam, ["masks.shield=[[[0, 0], [0.5, 0], [0.5, 0.5]]]"]).masks.shield
    assert [p.points for p in shield] == [[(0, 0), (0.5, 0), (0.5, 0.5)]]


def test_a_setting_in_a_nested_section_is_set():
    assert with_overrides(CAMERA, ["fall.verifier.veto_below=0.2"]).fall.verifier.veto_below == 0.2


def test_a_value_out_of_its_bounds_is_refused_with_the_bound():
    bound = r"fall\.min_fall_floors: Input should be greater than or equal to 0\.5"
    with pytest.raises(OverrideError, match=bound):
        with_overrides(CAMERA, ["fall.min_fall_floors=-5"])
    assert with_overrides(CAMERA, ["fall.min_fall_floors=0.5"]).fall.min_fall_floors == 0.5


def test_a_value_of_the_wrong_kind_is_refused():
    with pytest.raises(OverrideError, match="valid number"):
        with_overrides(CAMERA, ["fall.min_fall_floors=abc"])
    with pytest.raises(OverrideError, match="valid boolean"):
        with_overrides(CAMERA, ["motion.stabilize=maybe"])


def test_an_unknown_setting_is_refused_naming_what_the_section_has():
    with pytest.raises(OverrideError, match=r"fall has no setting 'min_fal_floors' \(it has: .*min_fall_floors"):
        with_overrides(CAMERA, ["fall.min_fal_floors=2"])
    with pytest.raises(OverrideError, match="falls: no such section"):
        with_overrides(CAMERA, ["falls.min_fall_floors=2"])


@pytest.mark.parametrize("text", ["fall", "fall=2", "=2", "fall.=2", "verifier=of"])
def test_a_malformed_override_is_refused(text):
    with pytest.raises(
        OverrideError, match="expected section.key=value .* or one of facade=none, verifier=off, verifier=on"
    ):
        check_overrides([text])


def test_a_value_yaml_cannot_read_is_refused_not_crashed_on():
    for text in ["fall.min_fall_floors=[1", "fall.min_fall_floors=\x01"]:
        with pytest.raises(OverrideError, match="not readable as YAML"):
            check_overrides([text])


def test_a_facade_setting_is_refused_as_each_clip_has_its_own():
    with pytest.raises(OverrideError, match="the facade is each clip's own calibration"):
        check_overrides(["facade.top_floor=40"])
    check_overrides(["facade=none"])


def test_the_named_settings_drop_the_facade_and_switch_the_verifier():
    cam = CAMERA.model_copy(update={"facade": _facade()})
    assert with_overrides(cam, ["facade=none"]).facade is None
    assert with_overrides(cam, []).facade is not None
    assert with_overrides(cam, ["verifier=on"]).fall.verifier.model == SHIPPED_VERIFIER
    assert with_overrides(cam, ["verifier=off"]).fall.verifier.model is None


def test_every_camera_of_a_loaded_config_gets_the_override(tmp_path):
    path = tmp_path / "node.yaml"
    cameras = {"east": {"source": "rtsp://east"}, "west": {"source": "rtsp://west", "tracker": {"max_missed": 3}}}
    path.write_text(yaml.safe_dump({"version": 1, "node": {"id": "n1"}, "cameras": cameras}))
    cfg = load_config(path)
    apply_overrides(cfg, ["tracker.search_tracks=3"])
    assert [cam.tracker.search_tracks for cam in cfg.cameras.values()] == [3, 3]
    assert cfg.cameras["west"].tracker.max_missed == 3  # its own settings kept


def test_the_bench_refuses_a_bad_override_before_running_a_clip(tmp_path):
    cache = tmp_path / "cache"
    args = ["--cache", str(cache), "--suite", "tuning", "--scenes", "throw", "--no-real", "--no-ablation"]
    proc = run_edge("bench", "accuracy", *args, "--set", "fall.min_fal_floors=2", timeout=60)
    assert proc.returncode == 64, proc.stderr
    assert "Traceback" not in proc.stderr and "fall has no setting 'min_fal_floors'" in proc.stderr
    assert not cache.exists()  # nothing rendered, nothing replayed


def test_the_bench_refuses_an_override_where_it_would_be_ignored(tmp_path):
    cache = tmp_path / "c"
    proc = run_edge("bench", "speed", "--cache", str(cache), "--set", "fall.min_fall_floors=2", timeout=60)
    assert proc.returncode == 64, proc.stderr
    assert "--set changes settings of `edge bench accuracy` only" in proc.stderr
    assert not cache.exists()


def test_a_valid_override_passes_the_check_the_bench_makes():
    check_overrides(["fall.min_fall_floors=2", "fall.verifier.veto_below=0.2", "verifier=on", "facade=none"])


def test_a_setting_a_real_clip_scales_to_its_size_is_named_when_replaced():
    entries = [
        {"file": "drop.mp4", "kind": "positive", "overrides": {"fall.min_fall_floors": 0.5}},
        {"file": "street.mp4", "kind": "negative"},
    ]
    assert scale_override_notes(["tracker.search_tracks=2", "verifier=on"], entries) == []
    notes = scale_override_notes(["fall.min_fall_floors = 2"], entries)
    assert (
        len(notes) == 1 and "replaces what 1 real positive clip(s) set for their own scale (drop.mp4)" in notes[0]
    )
