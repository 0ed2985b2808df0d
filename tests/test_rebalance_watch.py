"""The stuck-rebalance watch (`streams.rebalance_watch`): timing, the broker rule, the exit."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import faust
import pytest

from streams.health import Health, worker_prober
from streams.rebalance_watch import (
    EXIT_REBALANCE_STUCK,
    RebalanceStuck,
    RebalanceWatch,
    rebalance_check,
)
from streams.settings import Settings
from streams.stores.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _check(watch: RebalanceWatch, health: Health, clock: Clock, exits: list[int]):
    return rebalance_check(
        watch,
        lambda: health.ok_since("broker", "store"),
        30.0,
        clock=clock,
        exit_process=exits.append,
    )


def test_a_rebalance_past_the_limit_with_the_broker_up_exits_with_75(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, exits = Clock(), []
    health = Health(clock=clock)
    health.ok("broker")
    health.ok("store")
    watch = RebalanceWatch(clock=clock)
    check = _check(watch, health, clock, exits)
    check()  # no rebalance running
    watch.on_rebalance_start(None)
    clock.now += 30.0
    check()  # at the limit: still fine
    assert exits == []
    clock.now += 1.0
    with (
        caplog.at_level(logging.ERROR, "interest_stream.rebalance"),
        pytest.raises(RebalanceStuck, match="not completed in 31s"),
    ):
        check()
    assert exits == [EXIT_REBALANCE_STUCK]
    assert "rebalance_stuck_seconds=30" in caplog.text


def test_time_without_a_broker_or_store_does_not_count_and_an_end_resets() -> None:
    clock, exits = Clock(), []
    health = Health(clock=clock)
    health.ok("store")
    watch = RebalanceWatch(clock=clock)
    check = _check(watch, health, clock, exits)
    watch.on_rebalance_start(None)
    health.fail("broker", "BrokerUnreachable: gone")
    clock.now += 300.0  # a long outage: the rebalance waits it out
    check()
    health.ok("broker")
    clock.now += 20.0
    watch.on_rebalance_start(None)  # restarted: the first start stays
    assert watch.running_since() == 1000.0
    check()  # 20 s of broker
    health.fail("store", "NoHostAvailable")  # a revocation waits for batches retrying the store
    clock.now += 100.0
    check()
    health.ok("store")
    clock.now += 20.0
    check()
    watch.on_rebalance_end(None, {})
    clock.now += 100.0
    check()
    assert exits == [] and watch.rebalances == 1 and watch.running_since() is None


def test_faust_drives_the_watch_through_its_sensors() -> None:
    clock = Clock()
    watch = RebalanceWatch(clock=clock)
    app = faust.App("rebalance-watch-test", broker="memory://", autodiscover=False)
    app.sensors.add(watch)
    app.on_rebalance_start()  # what Faust's consumer calls when partitions are revoked
    assert watch.running_since() == 1000.0
    clock.now += 2.5
    app.on_rebalance_end()  # what Faust's recovery calls once the worker is ready
    assert watch.running_since() is None and watch.rebalances == 1


def test_the_worker_prober_has_the_check_unless_it_is_off(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    try:
        for stuck, expected in ((60.0, True), (0.0, False)):
            settings = Settings(rebalance_stuck_seconds=stuck)
            prober = worker_prober(settings, "127.0.0.1:1", store, Health(), RebalanceWatch())
            assert ("rebalance" in prober.checks) is expected
        assert "rebalance" not in worker_prober(Settings(), "127.0.0.1:1", store, Health()).checks
    finally:
        store.close()


def test_ok_since_is_the_start_of_the_current_spell_with_all_of_them_ok() -> None:
    clock = Clock()
    health = Health(clock=clock)
    assert health.ok_since("broker") is None
    health.ok("broker")
    clock.now += 5.0
    health.ok("broker")  # still ok: the spell goes on
    assert health.ok_since("broker") == 1000.0
    assert health.ok_since("broker", "store") is None  # the store has not reported
    health.ok("store")
    assert health.ok_since("broker", "store") == 1005.0
    health.fail("broker", "gone")
    assert health.ok_since("broker") is None and health.ok_since("store") == 1005.0
    clock.now += 5.0
    health.ok("broker")
    assert health.ok_since("broker", "store") == 1010.0


def test_the_exit_from_the_prober_s_thread_ends_the_process_with_75_and_keeps_the_log() -> None:
    """The real exit: from a thread, as the prober runs it, with the log line flushed first."""
    script = textwrap.dedent(
        """
        import logging, sys, threading, time
        from streams.rebalance_watch import RebalanceWatch, rebalance_check
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        watch = RebalanceWatch(clock=lambda: 0.0)
        watch.on_rebalance_start(None)
        check = rebalance_check(watch, lambda: 0.0, 30.0, clock=lambda: 100.0)
        threading.Thread(target=check, daemon=True).start()
        time.sleep(30)  # the main thread is busy elsewhere, as Faust's loop would be
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == EXIT_REBALANCE_STUCK, run.stderr
    assert "has not completed in 100s" in run.stderr
