"""The quick benchmarks run end to end and leave their JSON and their charts.

The long ones (encoder speed, pipeline vs pass-through, the 30-minute soak)
stay out of CI; update_cost shares their writer (``benchmarks/_results.py``),
and the soak runs its ``--quick`` form here.
"""

from __future__ import annotations

import array
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT, run_benchmark


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


def test_soak_quick_writes_samples_summary_and_a_plot(
    tmp_path: Path, encoder_artifact: Path
) -> None:
    """The whole soak (max-rate phase, open-loop soak) in ~30 s on the embedded defaults."""
    out = tmp_path / "soak.json"
    args = ["--quick", "--no-check", "--out", str(out), "--encoder-cache",
            str(encoder_artifact.parent)]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "benchmarks/soak.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["max_rate"]["events_per_s"] > 0
    assert report["settings"]["rate_per_s"] == round(report["max_rate"]["events_per_s"] / 2, 1)
    assert "shared" in report["machine"]["note"]
    samples = report["samples"]
    assert len(samples) >= 10  # 30 s at one sample per 2 s
    for s in samples:
        assert s["rss_mib"] > 50 and s["lag"] >= 0 and s["produced"] > 0
        for key in ("rss_mib", "worker_cpu_pct", "produced_per_s", "processed_per_s"):
            assert math.isfinite(s[key])
    timed = [s for s in samples if s["deltas"]]
    assert len(timed) >= len(samples) // 2
    for s in timed:
        assert 0 < s["latency_ms_p50"] <= s["latency_ms_p99"] <= s["latency_ms_max"]
        assert 0 < s["published_latency_ms_p50"] <= s["published_latency_ms_p99"]
        assert s["published_latency_ms_p50"] <= s["latency_ms_p50"]  # sent before received
        assert s["tail_lag"] >= 0 and sum(s["lag_by_partition"]) == s["lag"]
    summary = report["summary"]
    assert summary["events_produced"] == samples[-1]["produced"] > 1000
    assert summary["deltas_received"] > 0 and summary["dead_letters_received"] == 0
    assert summary["drain"]["drained"]
    assert summary["rss_mib_warmup_end"] > 0 and math.isfinite(summary["rss_growth_pct"])
    assert summary["lag_max"] >= summary["lag_end"] >= 0
    latency = summary["latency_ms_after_warmup"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    assert summary["latency_ms_first_interval"]["p99"] > 0
    assert summary["latency_ms_last_interval"]["p99"] > 0
    assert summary["check"]["passed"] == (summary["rss_growth_pct"] <= 10.0)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "RSS growth" in run.stdout


def test_soak_check_fails_on_rss_growth_after_warm_up(monkeypatch) -> None:
    """Growth is measured from the end of the warm-up (first 20%), not from the start."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    soak = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "soak", soak)  # its dataclasses look their module up
    spec.loader.exec_module(soak)

    def run(rss: list[float]) -> dict:
        samples = [
            {"t_s": 10.0 * (i + 1), "rss_mib": r, "lag": 5, "deltas": 1, "processed_per_s": 9.0,
             "latency_ms_p50": 10.0, "latency_ms_p99": 20.0, "broker_rss_mib": 1.0,
             "load_1m": 1.0, "tail_lag": 0, "published_latency_ms_p50": 5.0,
             "published_latency_ms_p99": 9.0}
            for i, r in enumerate(rss)
        ]  # fmt: skip
        latencies = (array.array("d", [10.0, 20.0]), array.array("d", [10.0, 90.0]), 0.0)
        result = {"samples": samples, "events_produced": 90, "produce_errors": 0,
                  "deltas_received": 9, "dead_letters_received": 0, "rss_mib_before_load": 50.0,
                  "drain": {"drained": True}, "latencies": latencies, "store_mib": 1.0,
                  "published_latencies": array.array("d", [4.0, 8.0])}  # fmt: skip
        return soak.summarise(result, rate=9.0, duration=100.0)

    # Warm-up ends at 20 s: the climb to 100 MiB before it does not count.
    flat = run([50.0, 100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0, 108.0])
    assert flat["rss_mib_warmup_end"] == 100.0 and flat["rss_growth_pct"] == 8.0
    assert flat["check"]["passed"]
    assert flat["latency_ms_after_warmup"]["p50"] == 20.0  # only the latency at 90 s counts
    assert flat["published_latency_ms_after_warmup"]["p50"] == 8.0
    leak = run([50.0, 100.0, 102.0, 104.0, 106.0, 108.0, 110.0, 112.0, 114.0, 116.0])
    assert leak["rss_growth_pct"] == 16.0 and not leak["check"]["passed"]
    assert leak["rss_slope_mib_per_hour_after_warmup"] == 720.0


def test_fuzz_counts_every_topic_and_draws_a_chart(tmp_path: Path) -> None:
    """benchmarks/fuzz.py on a small budget: counts per topic, properties held, a chart."""
    out = tmp_path / "fuzz.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/fuzz.py", "--records", "60", "--seed", "3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert run.returncode == 0 and report["properties_held"], report["failures"][:2]
    topics = report["topics"]
    assert set(topics) == {"behaviours", "items", "wakeups"}
    for counts in topics.values():
        assert counts["generated"] + counts["in_failed_streams"] >= 60
        assert counts["generated"] == counts["applied"] + counts["dead_lettered"]
        assert counts["dead_lettered"] == sum(counts["dead_lettered_by_reason"].values())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run_quick(script: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_benchmark(script, "--quick", "--out", str(out), *extra)


def test_topic_quality_quick_compares_online_topics_with_batch(
    tmp_path: Path, encoder_artifact: Path
) -> None:
    out = tmp_path / "topic_quality.json"
    _run_quick("topic_quality.py", out, "--encoder-cache", str(encoder_artifact.parent))
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "nmi" in text.lower() and "batch" in text.lower()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cold_start_quick_reports_query_against_most_popular(
    tmp_path: Path, encoder_artifact: Path
) -> None:
    from tests.paths import require_ml100k

    data = require_ml100k()
    out = tmp_path / "cold_start.json"
    _run_quick("cold_start.py", out, "--data", str(data), "--encoder-cache",
               str(encoder_artifact.parent))  # fmt: skip
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "most-popular" in text and "query" in text


def test_structure_cost_compares_every_configuration_with_the_single_vector(
    tmp_path: Path,
) -> None:
    out = tmp_path / "structure_cost.json"
    args = ["--items", "200", "--users", "3", "--events", "12", "--rounds", "1"]
    run = subprocess.run(
        [sys.executable, "benchmarks/structure_cost.py", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    costs = json.loads(out.read_text())["seconds_per_event"]
    assert set(costs) == {"single-vector", "+interests", "+long-term", "full"}
    assert costs["single-vector"]["ratio"] == 1.0
    assert all(c["median_s"] > 0 for c in costs.values())


def test_new_items_quick_scores_text_alone_against_the_online_parts(tmp_path: Path) -> None:
    from tests.paths import require_ml100k

    out = tmp_path / "new_items.json"
    _run_quick("new_items.py", out, "--data", str(require_ml100k()), "--max-users", "120",
               "--epochs", "3", "--work", str(tmp_path / "work"))  # fmt: skip
    report = json.loads(out.read_text())
    assert report["targets"] > 0 and report["new_items"] > 0
    assert report["train_events"] + report["stream_events"] > report["train_events"] > 0
    assert set(report["results"]) == {"text", "cooc", "online"}
    for variant in report["results"].values():
        assert 0 <= variant["hr10"] <= 1 and variant["median_rank"] >= 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_encoder_speed_quick_compares_every_variant_with_pytorch(
    tmp_path: Path, encoder_artifact: Path
) -> None:
    """ONNX Runtime fp32 (as exported, and fused) and int8 against PyTorch eager, one run."""
    from tests.paths import require_ml100k

    out = tmp_path / "encoder_speed.json"
    _run_quick("encoder_speed.py", out, "--data", str(require_ml100k()), "--encoder-cache",
               str(encoder_artifact.parent))  # fmt: skip
    report = json.loads(out.read_text())
    variants = {"pytorch-eager", "ort-fp32", "ort-fp32-optimised", "ort-int8"}
    assert report["device"] == "cpu" and set(report["summary"]) >= variants
    assert {(c["texts"], c["batch_size"]) for c in report["cells"]} == {
        ("titles", 1), ("titles", 16), ("128 tokens", 1), ("128 tokens", 16)
    }  # fmt: skip
    for cell in report["cells"]:
        assert set(cell["items_per_s"]) == variants and min(cell["items_per_s"].values()) > 0
        assert cell["speedup_vs_eager"]["pytorch-eager"] == 1.0
        cosine = cell["cosine_vs_eager"]
        assert cosine["ort-fp32"]["min"] >= 0.9999 and cosine["ort-fp32-optimised"]["min"] >= 0.9999
        assert cosine["ort-int8"]["mean"] >= 0.98
    assert report["cells"][-1]["mean_tokens"] == 128.0  # cut at exactly 128 tokens
    assert set(report["targets"]) == {"fp32", "int8"}
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert report["items_agent"]["items_per_s"]["16"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ann_index_core_part_writes_recall_and_latency(tmp_path: Path) -> None:
    out = tmp_path / "ann_index.json"
    args = ["--part", "core", "--items", "3000", "--sizes", "1500", "--users", "6",
            "--sweep", "20", "--out", str(out)]  # fmt: skip
    run_benchmark("ann_index.py", *args)
    report = json.loads(out.read_text())
    rows = report["core"]["by_size"]
    assert [r["items"] for r in rows] == [1500, 3000]
    for row in rows:
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert row["exact"]["p99_ms"] > 0 and row["index"]["p99_ms"] > 0
    assert report["core"]["candidate_sweep"][0]["candidates"] == 20
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
