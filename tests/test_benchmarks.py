"""The quick benchmark runs end to end and leaves its JSON and its chart.

The long ones (encoder speed, pipeline vs pass-through) stay out of CI; they
share the same writer (``benchmarks/_results.py``), exercised here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT


def test_update_cost_writes_ratios_and_a_chart(tmp_path: Path) -> None:
    out = tmp_path / "update_cost.json"
    args = ["--users", "4", "--events", "20", "--items", "200", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "benchmarks/update_cost.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    costs = report["seconds_per_event"]
    assert set(costs) == {"core_step", "apply", "batched"}
    for cost in costs.values():
        assert cost["time_decay_s"] > 0 and cost["learned_s"] > 0
        assert abs(cost["ratio"] - cost["learned_s"] / cost["time_decay_s"]) < 1e-9
    assert report["workload"]["catalogue_items"] == 200
    chart = out.with_suffix(".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ratio" in run.stdout
