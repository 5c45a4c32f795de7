"""`edge-center bench` at toy size: the scale script's own count of "stored exactly once" must hold."""

from __future__ import annotations

import argparse

from center_fixtures import *  # noqa: F403 (the pytest fixture pg_cluster)

from center.bench import markdown, run


def test_a_small_fleet_is_stored_exactly_once_by_two_instances(tmp_path, pg_cluster):
    args = argparse.Namespace(
        nodes=4,
        instances=2,
        seconds=3.0,
        alert_every_s=1.0,
        burst=40,
        database_url=pg_cluster.new_database(),
        workdir=str(tmp_path / "bench"),
    )
    result = run(args)
    assert result["messages_published"] > args.burst  # the steady phase sent alerts too
    assert result["messages_stored"] == result["messages_published"]
    assert result["events_stored"] == result["alerts_published"]
    assert result["exactly_once"] is True
    assert set(result["by_instance"]) == {"center-1", "center-2"}
    assert "**yes**" in markdown(result, "edge-center bench")
