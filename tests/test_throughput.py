"""The throughput bench measures what it says: each phase in its own process, throws counted from the truth."""

from __future__ import annotations

import json

from edge.throughput import LIVE_CLIP_S, Cost, LiveRun, Sample, _throws_in, live_report, measure


def test_decoding_alone_is_measured_in_its_own_process(sim_clip):
    folder = sim_clip("throw", 1)
    decode = measure(folder, "decode")
    detect = measure(folder, "detect")
    assert decode.frames == detect.frames == 200
    assert 0 < decode.cpu_s < detect.cpu_s  # detection costs more than decoding what it detects in
    assert detect.events >= 1 and decode.events == 0


def test_throws_shown_during_a_live_run_are_counted_per_loop(sim_clip):
    truth = json.loads((sim_clip("throw", 1) / "truth.json").read_text())
    per_loop = sum(t["must_detect"] for t in truth["throws"])
    assert _throws_in(truth, 3 * LIVE_CLIP_S) == 3 * per_loop
    assert _throws_in(truth, 0.5) == 0  # nothing has fallen yet half a second in


def test_the_live_report_names_drops_and_memory_per_camera():
    run = LiveRun(60.0, [Sample(2, 150.0, 400.0), Sample(4, 160.0, 420.0)])
    run.cameras = {
        "cam0": {
            "frames": 1500,
            "dropped": 3,
            "alerts": 6,
            "throws": 6,
            "latency_median_s": 1.2,
            "latency_max_s": 2.0,
        }
    }
    text = live_report(run)
    assert "| cam0 | 1500 | 3 | 6 / 6 | 1.20 / 2.00 |" in text and "420 MB per camera" in text
    assert Cost(100, 1.0, 0.5, 10.0).cpu_ms_per_frame == 5.0
