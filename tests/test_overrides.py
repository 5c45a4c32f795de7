"""A bench's `--set` changes a camera setting as the config file would, or refuses clearly before any clip runs."""

from __future__ import annotations

import pytest

from edge.config import SHIPPED_VERIFIER, CameraConfig, FacadeConfig, load_config
from edge.overrides import OverrideError, apply_overrides, check_overrides, with_overrides

from conftest import run_edge

CAMERA = CameraConfig(source="rtsp://cam")


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True), ("no", False)])
def test_a_switch_is_read_as_the_config_file_reads_it(text, value):
    assert with_overrides(CAMERA, [f"motion.stabilize={text}"]).motion.stabilize is value


def test_a_number_is_set_and_nothing_else_changes():
    changed = with_overrides(CAMERA, ["fall.min_fall_floors=2.5"])
    assert changed.fall.min_fall_floors == 2.5
    before, after = CAMERA.model_dump(), changed.model_dump()
    before["fall"].pop("min_fall_floors"), after["fall"].pop("min_fall_floors")
    assert before == after


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


@pytest.mark.parametrize("text", ["fall", "fall=2", "=2", "fall.=2"])
def test_a_malformed_override_is_refused(text):
    with pytest.raises(OverrideError, match="expected section.key=value"):
        check_overrides([text])


def test_the_named_settings_drop_the_facade_and_switch_the_verifier():
    facade = FacadeConfig.model_validate(
        {
            "floor_height_m": 3.0,
            "ground_floor": 1,
            "points": [
                {"image": [100, 900], "facade": [0, 3]},
                {"image": [900, 900], "facade": [30, 3]},
                {"image": [900, 100], "facade": [30, 60]},
                {"image": [100, 100], "facade": [0, 60]},
            ],
        }
    )
    cam = CAMERA.model_copy(update={"facade": facade})
    assert with_overrides(cam, ["facade=none"]).facade is None
    assert with_overrides(cam, []).facade is not None
    assert with_overrides(cam, ["verifier=on"]).fall.verifier.model == SHIPPED_VERIFIER
    assert with_overrides(cam, ["verifier=off"]).fall.verifier.model is None


def test_every_camera_of_a_loaded_config_gets_the_override(sim_clip):
    cfg = load_config(sim_clip("throw", 1) / "config.yaml")
    apply_overrides(cfg, ["tracker.search_tracks=3"])
    assert cfg.cameras and all(cam.tracker.search_tracks == 3 for cam in cfg.cameras.values())


def test_the_bench_refuses_a_bad_override_before_running_a_clip(tmp_path):
    cache = tmp_path / "cache"
    proc = run_edge("bench", "accuracy", "--cache", str(cache), "--no-real", "--set", "fall.min_fal_floors=2")
    assert proc.returncode == 64, proc.stderr
    assert "Traceback" not in proc.stderr and "fall has no setting 'min_fal_floors'" in proc.stderr
    assert not cache.exists()  # nothing rendered, nothing replayed


def test_the_bench_refuses_an_override_where_it_would_be_ignored(tmp_path):
    proc = run_edge("bench", "speed", "--cache", str(tmp_path / "c"), "--set", "fall.min_fall_floors=2")
    assert proc.returncode == 64, proc.stderr
    assert "--set changes settings of `edge bench accuracy` only" in proc.stderr


def test_a_valid_override_passes_the_check_the_bench_makes():
    check_overrides(["fall.min_fall_floors=2", "fall.verifier.veto_below=0.2", "verifier=on", "facade=none"])


def test_a_setting_a_real_clip_scales_to_its_size_is_named_when_replaced(capsys):
    from edge.realbench import _warn_scale_overrides

    entries = [
        {"file": "drop.mp4", "kind": "positive", "overrides": {"fall.min_fall_floors": 0.5}},
        {"file": "street.mp4", "kind": "negative"},
    ]
    _warn_scale_overrides(entries, ["tracker.search_tracks=2"])
    assert capsys.readouterr().err == ""
    _warn_scale_overrides(entries, ["fall.min_fall_floors=2"])
    err = capsys.readouterr().err
    assert "--set fall.min_fall_floors=2 replaces the value 1 real positive clips" in err and "drop.mp4" in err
