"""The command group's wiring (no broker): every command is there, ``--data`` has no default.

The demo and worker commands run end to end in `test_cli.py` and
`test_pipeline_e2e.py`; here only what needs no broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main
from tests.paths import require_ml100k

COMMANDS = {
    "bench",
    "demo",
    "eval",
    "init",
    "models",
    "query",
    "redrive",
    "settings",
    "snapshot",
    "train",
    "worker",
}


def test_python_m_streams_cli_has_every_command() -> None:
    """Workers are spawned as ``python -m streams.cli worker``: the package must run."""
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == COMMANDS
    worker = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 0 and "--bootstrap" in worker.stdout


def test_the_cli_imports_no_transport() -> None:
    """``interest-stream --help``, ``eval`` and ``train`` load no Kafka client, Faust or driver."""
    code = (
        "import sys, streams.cli\n"
        "heavy = {'kafka', 'aiokafka', 'faust', 'cassandra', 'torch'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["eval", "train"])
def test_data_is_required(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INTEREST_STREAM_DATA"}
    result = CliRunner().invoke(main, [command, "--out", str(tmp_path)], env=env)
    assert result.exit_code == 2
    assert "--data is required" in result.output and "INTEREST_STREAM_DATA" in result.output


def test_a_missing_data_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_eval_reads_data_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["eval", "--models", "most-popular", "--seeds", "1", "--max-users", "30",
         "--out", str(tmp_path)],
        env={"INTEREST_STREAM_DATA": str(require_ml100k())},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["dataset"]["n_users"] == 30 and report["dataset"]["name"] == "ml-100k"


def test_a_worker_whose_broker_does_not_answer_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streams import worker
    from streams.admin import BrokerUnreachable

    def unreachable(settings, address: str) -> None:
        raise BrokerUnreachable(f"no Kafka broker answered at {address}")

    monkeypatch.setattr(worker, "run_worker", unreachable)
    args = ["worker", "--bootstrap", "127.0.0.1:1", "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no Kafka broker answered at 127.0.0.1:1" in result.output
    assert "leave out --bootstrap" in result.output


def test_a_worker_whose_cassandra_is_not_there_says_so_in_one_line(tmp_path: Path) -> None:
    """No driver traceback: where it looked, why it failed, what to do."""
    from streams.ports import free_port

    port = free_port()  # nothing listens there
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--cassandra", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("Error:")]
    assert f"could not connect to Cassandra at 127.0.0.1:{port}" in line
    assert "Connection refused" in line and "deploy.engines cassandra start" in line
