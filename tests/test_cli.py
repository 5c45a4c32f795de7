"""Bad input gets a clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import shutil

from conftest import read_events, run_edge


def _assert_clean_failure(proc, code, words):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and words in proc.stderr


def test_replay_of_a_missing_video_exits_66(sim_clip, tmp_path):
    cfg = sim_clip("throw", 1) / "config.yaml"
    proc = run_edge("replay", str(tmp_path / "nope.mp4"), "--config", str(cfg), "--out", str(tmp_path / "o"))
    _assert_clean_failure(proc, 66, "not found")


def test_replay_of_a_directory_exits_66(sim_clip, tmp_path):
    cfg = sim_clip("throw", 1) / "config.yaml"
    proc = run_edge("replay", str(tmp_path), "--config", str(cfg), "--out", str(tmp_path / "o"))
    _assert_clean_failure(proc, 66, "directory")


def test_replay_of_a_file_that_is_not_video_exits_65(sim_clip, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 100)
    cfg = sim_clip("throw", 1) / "config.yaml"
    proc = run_edge("replay", str(bad), "--config", str(cfg), "--out", str(tmp_path / "o"))
    _assert_clean_failure(proc, 65, "cannot open")


def test_a_truncated_video_fails_but_keeps_the_events_found_before_the_cut(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    data = (folder / "scene.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.85)])
    proc = run_edge("replay", str(cut), "--config", str(folder / "config.yaml"), "--out", str(tmp_path / "o"))
    _assert_clean_failure(proc, 65, "truncated")
    assert (tmp_path / "o" / "events.jsonl").exists()
    assert len(read_events(tmp_path / "o")) >= 1


def test_replay_with_an_empty_config_exits_78(sim_clip, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    proc = run_edge(
        "replay", str(sim_clip("throw", 1) / "scene.mp4"), "--config", str(empty), "--out", str(tmp_path)
    )
    _assert_clean_failure(proc, 78, "empty")


def test_replay_needs_a_camera_name_when_the_config_has_several(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    text = (folder / "config.yaml").read_text()
    twice = text + text[text.index("  sim:") :].replace("  sim:", "  other:", 1)
    cfg = tmp_path / "two.yaml"
    cfg.write_text(twice)
    proc = run_edge("replay", str(folder / "scene.mp4"), "--config", str(cfg), "--out", str(tmp_path / "o"))
    _assert_clean_failure(proc, 78, "several cameras")


def test_sim_with_an_unknown_scene_is_a_usage_error(tmp_path):
    proc = run_edge("sim", "--scene", "volcano", "--out", str(tmp_path))
    _assert_clean_failure(proc, 64, "unknown scene")


def test_sim_is_deterministic_per_seed(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    proc = run_edge(
        "sim",
        "--scene",
        "throw",
        "--seed",
        "1",
        "--width",
        "640",
        "--height",
        "360",
        "--duration",
        "8",
        "--out",
        str(tmp_path / "again"),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / "truth.json").read_text() == (folder / "truth.json").read_text()
    shutil.rmtree(tmp_path / "again")


def test_the_demo_renders_a_throw_and_alerts_from_its_floor(tmp_path):
    import json

    proc = run_edge("demo", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "ALERT" in proc.stdout
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text())
    events = read_events(tmp_path / "replay")
    assert [e["origin"]["floor"] for e in events] == [t["origin"]["floor"] for t in truth["throws"]]


def test_replay_into_the_nodes_storage_dir_keeps_the_nodes_event_log(sim_clip, tmp_path):
    folder = sim_clip("throw", 1)
    storage = tmp_path / "var-lib-edge"
    storage.mkdir()
    log = storage / "events.jsonl"  # the live node's record of every alert since it was installed
    log.write_text('{"type": "new", "id": "20260101T000000-east-0000001-1"}\n')
    cfg = tmp_path / "site.yaml"
    cfg.write_text((folder / "config.yaml").read_text().replace("dir: storage", f"dir: {storage}"))
    for out in (storage, tmp_path / "var-lib-edge" / "."):
        proc = run_edge("replay", str(folder / "scene.mp4"), "--config", str(cfg), "--out", str(out))
        _assert_clean_failure(proc, 73, "storage.dir")
        assert log.read_text() == '{"type": "new", "id": "20260101T000000-east-0000001-1"}\n'


def test_run_with_an_unknown_camera_names_it_and_exits_78(tmp_path):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"version: 1\nnode: {{id: n1}}\nstorage: {{dir: {tmp_path / 's'}}}\ncameras: {{east: {{source: x.mp4}}}}\n"
    )
    proc = run_edge("run", "--config", str(cfg), "--camera", "east", "--camera", "west")
    _assert_clean_failure(proc, 78, "no camera named west; the config has east")


def test_bench_calibration_refuses_a_suite_it_does_not_have_instead_of_running_all(monkeypatch):
    import edge.calibrate.bench
    from edge.cli import main

    ran = []
    monkeypatch.setattr(edge.calibrate.bench, "run_bench", lambda args: ran.append(args) or 0)
    assert main(["bench", "calibration", "--suite", "classic", "--no-real"]) == 64
    assert not ran


def test_replay_help_names_what_it_writes(capsys):
    import pytest

    from edge.cli import main

    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = capsys.readouterr().out
    assert "events/<id>/" in out and "clips/" not in out
