"""The shift-detection benchmark's quick form runs end to end and leaves its JSON and chart.

``--quick --embedding tags`` needs no encoder export: 40 synthetic users
(a deterministic tag embedding) and the first 10 MovieLens-100K users (a
deterministic genre embedding). The benchmark's own docstring examples
run here too (``benchmarks/`` is not a package the doctest collector walks).
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
from pathlib import Path

from tests.paths import ROOT, require_ml100k, run_benchmark

SCRIPT = ROOT / "benchmarks" / "shift_detection.py"


def test_quick_run_writes_figures_for_the_detector_and_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "shift_detection.json"
    args = ["--quick", "--embedding", "tags", "--data", str(require_ml100k()), "--out", str(out)]
    run = run_benchmark("shift_detection.py", *args)
    report = json.loads(out.read_text())
    syn = report["synthetic"]
    assert syn["users_by_kind"]["never"] > 0
    assert set(syn["users_by_kind"]) == {"sudden", "gradual", "recurring", "never"}
    chosen, baseline = syn["chosen"], syn["baseline"]
    for s in (chosen, baseline):
        assert s["shifts"] == sum(k["shifts"] for k in s["per_kind"].values()) > 0
        assert 0.0 <= s["detected"] <= 1.0
        assert s["events"] == 40 * 60
        assert s["strict_false_alarms_per_1000"] >= s["false_alarms_per_1000"] >= 0
    assert set(chosen["per_kind"]) == {"sudden", "gradual", "recurring", "return"}
    # Seeded and deterministic: the block distance beats the raw consecutive-item signal.
    assert chosen["detected"] >= 0.75 > baseline["detected"]
    assert chosen["false_alarms_per_1000"] < baseline["false_alarms_per_1000"]
    assert chosen["delay_median"] <= 8
    assert syn["port_equals_river_page_hinkley"] is True
    assert set(syn["comparison"]) == {
        "river.PageHinkley",
        "river.ADWIN",
        "river.KSWIN",
        "shift.observe (port)",
    }
    assert (
        syn["comparison"]["river.PageHinkley"]["block"]
        == syn["comparison"]["shift.observe (port)"]["block"]
    )
    assert report["spec"]["recent"] >= 1
    ml = report["movielens"]
    assert ml["users"] == 10 and ml["events"] > 0
    for name in ("chosen", "baseline"):
        assert ml[name]["flags_per_1000_events"] >= 0
        assert 0.0 <= ml[name]["users_with_a_flag"] <= 1.0
    for example in ml["examples"]:
        assert example["before"] and example["after"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets met" in run.stdout


def test_benchmark_docstring_examples_run() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("shift_detection", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0
