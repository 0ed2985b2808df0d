"""The reliability rig plays supervisor: a worker that gave up on a stuck rebalance comes back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.rebalance_watch import EXIT_REBALANCE_STUCK
from streams.settings import Settings
from tests import reliability_fixtures
from tests.reliability_fixtures import Rig


def test_a_worker_exiting_with_75_is_restarted_in_place_and_others_are_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[tuple[str, int]] = []
    # The first of each name exits at once: "stuck" with 75, "crashed" with 1.
    # A restart sleeps, as a worker that got going would.
    codes = {"stuck": EXIT_REBALANCE_STUCK, "crashed": 1}

    def fake_spawn(settings: Settings, bootstrap: str, log: Path) -> subprocess.Popen:
        name = log.stem
        first = all(n != name for n, _ in started)
        started.append((name, settings.health_port))
        body = f"raise SystemExit({codes[name]})" if first else "import time; time.sleep(30)"
        return subprocess.Popen([sys.executable, "-c", body])

    monkeypatch.setattr(reliability_fixtures, "spawn_worker", fake_spawn)
    rig = Rig(Settings(), "127.0.0.1:1", tmp_path)
    try:
        stuck, crashed = rig.spawn("stuck"), rig.spawn("crashed")
        deadline = time.monotonic() + 10
        while stuck.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # two more supervisor rounds: nothing else is restarted
        assert stuck.restarts == 1 and stuck.alive
        assert crashed.restarts == 0 and crashed.proc.poll() == 1
        # In place: same log, same health port (what a ReadinessLog polls).
        assert [p for n, p in started if n == "stuck"] == [stuck.health_port] * 2
    finally:
        rig.close()
    assert not stuck.alive
