"""The unit file installers copy is valid for systemd."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_unit_file_passes_systemd_analyze(tmp_path):
    # Point the unit at this checkout's `edge` so systemd can check the command it would run.
    edge = Path(sys.executable).parent / "edge"
    unit = (REPO / "systemd" / "edge.service").read_text().replace("/opt/edge/.venv/bin/edge", str(edge))
    (tmp_path / "edge.service").write_text(unit)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "edge.service")], capture_output=True, text=True
    )
    problems = [line for line in proc.stderr.splitlines() if "edge.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr
