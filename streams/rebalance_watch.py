"""A consumer-group rebalance that never completes: detect it, report it, exit.

faust-streaming can leave a worker in a rebalance that never ends after a
broker outage. aiokafka logs "Setting newly assigned partitions", and Faust's
side of the assignment never runs (no "Executing _on_partitions_assigned"
follows). The worker answers its probes but consumes nothing, and only a
restart helps. It happened once in a CI run of
``tests/test_health.py::test_worker_readiness_follows_a_broker_outage`` (the
embedded tansu restarted under a running worker); faust-streaming issue #523
reports the same after an outage of Apache Kafka.

`RebalanceWatch` is a Faust sensor: it stamps when a rebalance starts and
clears the stamp when Faust ends it (after the assignment and the seek to the
committed offsets), logging how long it took. The health prober runs
`rebalance_check`: a rebalance still going after ``rebalance_stuck_seconds``
of the broker and the store answering makes the worker not ready, logs why,
and exits the process with `EXIT_REBALANCE_STUCK` (75, EX_TEMPFAIL) for its
supervisor to restart it (Kubernetes, compose's ``restart: unless-stopped``,
systemd). Time while either is unreachable does not count: a rebalance that
waits out an outage is not stuck (Faust's revocation waits for the batches in
flight, and those wait for the store). The exit is as safe as a kill -9,
which the worker is built for: nothing is committed past what is applied, and
restarted workers skip replayed events by the stored versions.

>>> clock = iter([0.0, 100.0]).__next__
>>> watch = RebalanceWatch(clock=clock)
>>> _ = watch.on_rebalance_start(None)
>>> watch.running_since()
0.0
>>> watch.on_rebalance_end(None, {})
>>> watch.running_since() is None, watch.rebalances
(True, 1)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import faust

log = logging.getLogger("interest_stream.rebalance")

#: The exit status of a worker that gave up on a stuck rebalance (EX_TEMPFAIL:
#: try again, i.e. restart it).
EXIT_REBALANCE_STUCK = 75


class RebalanceStuck(RuntimeError):
    """A rebalance has not completed for too long while the broker and the store answer."""


class RebalanceWatch(faust.Sensor):
    """When the current rebalance started (none running: None), for the health prober.

    Faust calls the hooks from its consumer thread (start) and its event
    loop (end); the prober reads from its own thread, hence the lock. A
    rebalance restarted before the last one ended keeps the first start.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        #: Rebalances completed since start.
        self.rebalances = 0

    def on_rebalance_start(self, app: Any) -> dict:
        now = self._clock()
        with self._lock:
            if self._since is None:
                self._since = now
        return {"time_start": now}

    def on_rebalance_end(self, app: Any, state: dict) -> None:
        now = self._clock()
        with self._lock:
            since, self._since = self._since, None
            self.rebalances += 1
            n = self.rebalances
        if since is not None:
            log.info("consumer group rebalance %d completed in %.1fs", n, now - since)

    def running_since(self) -> float | None:
        """The clock's time the unfinished rebalance started; None when none runs."""
        with self._lock:
            return self._since


def stuck_seconds(rebalance_since: float | None, healthy_since: float | None, now: float) -> float:
    """How long a rebalance has run with its dependencies answering (0: none running, or down).

    >>> stuck_seconds(10.0, 40.0, 100.0)  # the broker came back at 40
    60.0
    >>> stuck_seconds(10.0, None, 100.0), stuck_seconds(None, 0.0, 100.0)
    (0.0, 0.0)
    """
    if rebalance_since is None or healthy_since is None:
        return 0.0
    return max(0.0, now - max(rebalance_since, healthy_since))


def _exit_process(code: int) -> None:
    """Leave at once: Faust's shutdown waits on the very consumer that is stuck."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rebalance_check(
    watch: RebalanceWatch,
    healthy_since: Callable[[], float | None],
    limit: float,
    clock: Callable[[], float] = time.monotonic,
    exit_process: Callable[[int], None] = _exit_process,
) -> Callable[[], None]:
    """A health check: raises `RebalanceStuck` (and exits the process) past ``limit`` seconds.

    ``healthy_since`` gives the monotonic time since which the broker and
    store checks have passed (`streams.health.Health.ok_since`), None while
    one fails.
    """

    def check() -> None:
        stuck = stuck_seconds(watch.running_since(), healthy_since(), clock())
        if stuck <= limit:
            return
        reason = (
            f"the consumer group rebalance has not completed in {stuck:.0f}s while the "
            f"broker and the store answer (rebalance_stuck_seconds={limit:g}); exiting with "
            f"{EXIT_REBALANCE_STUCK} for the supervisor to restart the worker"
        )
        log.error("%s", reason)
        exit_process(EXIT_REBALANCE_STUCK)
        raise RebalanceStuck(reason)

    return check
